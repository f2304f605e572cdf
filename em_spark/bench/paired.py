"""Paired bootstrap of an F1 difference: two models' verdicts on the same test pairs.

Why paired: both models score the same pairs, so most of the test split's sampling noise
is shared; resampling the pairs once for both (and for every seed) gives the uncertainty of
the difference itself, much narrower than two separate confidence intervals would suggest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _f1(weights: np.ndarray, labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 of ``predicted`` against ``labels`` under each row of pair ``weights`` (counts)."""
    tp = weights @ (predicted & labels).astype(np.float64)
    fp = weights @ (predicted & ~labels).astype(np.float64)
    fn = weights @ (~predicted & labels).astype(np.float64)
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def paired_f1_difference(
    labels: Sequence[int] | np.ndarray,
    verdicts_a: Sequence[np.ndarray],
    verdicts_b: Sequence[np.ndarray],
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Mean over runs of F1(a) - F1(b) in points, with a paired bootstrap interval.

    ``verdicts_a[i]`` and ``verdicts_b[i]`` are run i's 0/1 verdicts of models a and b on the
    same test pairs (one run per seed); each resample draws the pairs once for all runs.
    ``share_a_at_or_above``: the fraction of resamples where a's mean F1 >= b's.
    """
    y = np.asarray(labels).astype(bool)
    if len(verdicts_a) != len(verdicts_b) or not verdicts_a:
        raise ValueError(f"need the same number (>0) of runs for a and b, got {len(verdicts_a)} and {len(verdicts_b)}")
    runs = [(np.asarray(a).astype(bool), np.asarray(b).astype(bool)) for a, b in zip(verdicts_a, verdicts_b)]
    for a, b in runs:
        if a.shape != y.shape or b.shape != y.shape:
            raise ValueError(f"verdicts of {a.shape[0]} / {b.shape[0]} pairs for {y.shape[0]} labels")
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(y.size, np.full(y.size, 1.0 / y.size), size=resamples).astype(np.float64)
    ones = np.ones((1, y.size))
    observed = np.mean([_f1(ones, y, a)[0] - _f1(ones, y, b)[0] for a, b in runs])
    resampled = np.mean([_f1(weights, y, a) - _f1(weights, y, b) for a, b in runs], axis=0)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return {
        "difference": 100 * float(observed),
        "low": 100 * float(low),
        "high": 100 * float(high),
        "share_a_at_or_above": float((resampled >= 0).mean()),
        "runs": len(runs),
        "resamples": resamples,
    }
