"""The paired bootstrap of an F1 difference (em_spark.bench.paired)."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from em_spark.bench.paired import paired_f1_difference


def _labels_and_noisy(seed: int, n: int = 600, flip: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.15).astype(int)
    noisy = np.where(rng.random(n) < flip, 1 - labels, labels)
    return labels, noisy


def test_identical_verdicts_differ_by_zero_with_a_zero_width_interval():
    labels, verdicts = _labels_and_noisy(1)
    out = paired_f1_difference(labels, [verdicts], [verdicts.copy()], resamples=300)
    assert (out["difference"], out["low"], out["high"]) == (0.0, 0.0, 0.0)
    assert out["share_a_at_or_above"] == 1.0


def test_observed_difference_is_the_mean_over_runs_of_sklearn_f1_differences():
    labels, a1 = _labels_and_noisy(2, flip=0.05)
    _, a2 = _labels_and_noisy(3, flip=0.05)
    _, b1 = _labels_and_noisy(4, flip=0.2)
    _, b2 = _labels_and_noisy(5, flip=0.2)
    expected = 100 * np.mean([f1_score(labels, a1) - f1_score(labels, b1), f1_score(labels, a2) - f1_score(labels, b2)])
    out = paired_f1_difference(labels, [a1, a2], [b1, b2], resamples=500)
    assert out["difference"] == pytest.approx(expected)
    assert out["runs"] == 2


def test_a_clearly_better_model_gets_an_interval_above_zero():
    labels, worse = _labels_and_noisy(6, flip=0.25)
    out = paired_f1_difference(labels, [labels.copy()], [worse], resamples=500, seed=1)
    assert 0 < out["low"] < out["difference"] < out["high"] <= 100
    assert out["share_a_at_or_above"] == 1.0


def test_mismatched_runs_or_lengths_are_refused():
    labels, verdicts = _labels_and_noisy(7)
    with pytest.raises(ValueError, match="same number"):
        paired_f1_difference(labels, [verdicts], [])
    with pytest.raises(ValueError, match="labels"):
        paired_f1_difference(labels, [verdicts[:-1]], [verdicts[:-1]])
