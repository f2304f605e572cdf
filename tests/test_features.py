"""Similarity features and the feature model (its prefilter and ``features`` verdicts), no Spark."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from em_spark.features import (
    FeatureModel,
    fit_prefilter,
    random_cross_pairs,
    threshold_for_f1,
    threshold_for_recall,
)
from em_spark.saved_model import prefilter_folder
from em_spark.similarity import MAX_CHARS, MISSING, feature_names, pair_features
from tests.conftest import DEMO_DATA


def _table(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {r.pop("id"): r for r in rows}


def demo_pairs(split: str) -> list[tuple[dict, dict, int]]:
    a, b = _table(DEMO_DATA / "tableA.csv"), _table(DEMO_DATA / "tableB.csv")
    with (DEMO_DATA / f"{split}.csv").open() as fh:
        return [(a[r["ltable_id"]], b[r["rtable_id"]], int(r["label"])) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def feature_model() -> FeatureModel:
    return fit_prefilter(demo_pairs("train"), demo_pairs("valid"))


def test_thresholds_on_hand_made_scores():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.3, 0.1, 0.05])
    # recall 0.75 keeps the three best positives: the weakest kept scores 0.7
    assert threshold_for_recall(labels, scores, 0.75) == pytest.approx(0.7)
    assert threshold_for_recall(labels, scores, 0.99) == pytest.approx(0.2)
    # F1 cutting below 0.7: tp 3, fp 0, fn 1 -> 6/7, better than any other cut; the
    # threshold sits halfway to the next score down (0.6)
    assert threshold_for_f1(labels, scores) == pytest.approx(0.65)
    assert threshold_for_f1(np.array([1, 0]), np.array([0.9, 0.1])) == pytest.approx(0.5)


def test_feature_matrix_shape_and_missing_values():
    left = {"name": "arnie morton's of chicago", "phone": "310-246-1501", "city": ""}
    right = {"name": "arnie morton's", "phone": "310/246-1501"}
    x = pair_features([left], [right], ["name", "phone", "city"])
    assert x.shape == (1, len(feature_names(["name", "phone", "city"])))
    names = feature_names(["name", "phone", "city"])
    assert x[0, names.index("city.ratio")] == MISSING  # empty on one side, absent on the other
    assert 0.0 < x[0, names.index("name.ratio")] < 1.0
    assert x[0, names.index("name.token_set")] == pytest.approx(1.0)


def test_feature_model_on_demo_data_beats_anchor_and_keeps_recall(feature_model):
    test = demo_pairs("test")
    p = feature_model.predict_proba([l for l, _, _ in test], [r for _, r, _ in test])
    y = np.array([label for *_, label in test])
    predicted = p >= feature_model.f1_threshold
    tp = (predicted & (y == 1)).sum()
    f1 = 2 * tp / (predicted.sum() + y.sum())
    assert f1 >= 0.9, f1  # the anchor (ANCHORS.md) for Fodors-Zagats is 0.977
    kept = feature_model.passes_prefilter([l for l, _, _ in test], [r for _, r, _ in test])
    assert kept[y == 1].mean() >= 0.95
    assert kept[y == 0].mean() < 0.5  # it does filter


def test_save_and_load_round_trip(feature_model, tmp_path):
    test = demo_pairs("test")[:40]
    lefts, rights = [l for l, _, _ in test], [r for _, r, _ in test]
    feature_model.save(tmp_path / "prefilter")
    assert prefilter_folder(tmp_path / "student") == tmp_path / "prefilter"
    again = FeatureModel.load(tmp_path / "prefilter")
    assert again.attributes == feature_model.attributes
    assert again.prefilter_threshold == feature_model.prefilter_threshold
    for before, after in zip(feature_model.scores(lefts, rights), again.scores(lefts, rights)):
        np.testing.assert_allclose(after, before)
    with pytest.raises(FileNotFoundError, match="not a saved FeatureModel"):
        FeatureModel.load(tmp_path)


def test_empty_and_huge_records_score_and_are_truncated(feature_model):
    huge = {"name": "word " * 20_000, "addr": "x" * 100_000}
    cut = {k: v[:MAX_CHARS] for k, v in huge.items()}
    p = feature_model.predict_proba([{}, huge, {"name": None}], [{}, huge, {"name": "spago"}])
    assert p.shape == (3,) and np.isfinite(p).all()
    # values are cut to MAX_CHARS before rapidfuzz: the 100 KB record scores as its prefix
    attrs = feature_model.attributes
    np.testing.assert_array_equal(pair_features([huge], [huge], attrs), pair_features([cut], [cut], attrs))


def test_bad_labels_are_rejected():
    with pytest.raises(ValueError, match="pair 0 has label 2"):
        fit_prefilter([({"a": "x"}, {"a": "x"}, 2)], [({"a": "x"}, {"a": "x"}, 1)])


def test_random_cross_pairs_never_repeat_a_labeled_match():
    lefts = [{"name": "a"}, {"name": "b"}]
    rights = [{"name": "a"}, {"name": "c"}]
    labels = np.array([1, 0])  # (a, a) is a labeled match; a quarter of the draws hit it
    rl, rr = random_cross_pairs(lefts, rights, labels, 1_000, seed=3)
    assert 650 <= len(rl) == len(rr) <= 850
    assert ({"name": "a"}, {"name": "a"}) not in list(zip(rl, rr))
    assert {(l["name"], r["name"]) for l, r in zip(rl, rr)} == {("a", "c"), ("b", "a"), ("b", "c")}
    assert random_cross_pairs(lefts, rights, labels, 50, seed=3) == random_cross_pairs(lefts, rights, labels, 50, seed=3)


def test_prefilter_settles_random_pairs(feature_model):
    # Candidates from a blocker are mostly far easier than the labeled non-matches; the
    # prefilter must settle such pairs, not pass them on to the student.
    test = demo_pairs("test")
    rng = np.random.default_rng(0)
    lefts = [test[i][0] for i in rng.integers(0, len(test), 500)]
    rights = [test[i][1] for i in rng.integers(0, len(test), 500)]
    passed = feature_model.passes_prefilter(lefts, rights)
    assert passed.mean() < 0.1, passed.mean()  # 1.0 before the prefilter learned random pairs
