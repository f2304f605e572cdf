"""The feature model: gradient boosting on similarity features, for the scoring prefilter
and the ``features`` verdicts (pure Python: rapidfuzz + scikit-learn, no pyspark, no torch).

Its features are the similarity features of a pair (em_spark.similarity: per aligned
attribute and over the whole record text, :data:`~em_spark.similarity.MISSING` where a
side is empty or a feature does not apply).

Two scikit-learn ``HistGradientBoostingClassifier`` models (fast on many rows) on the same
features, with class weights that balance the labeled pairs: the match classifier, fitted
on the labeled pairs, and the prefilter classifier, fitted on them plus random cross pairs of
their records as easy non-matches (:func:`random_cross_pairs`). Two thresholds are chosen on the
validation pairs: ``prefilter_threshold`` on the prefilter's score, the highest threshold
that still keeps recall >= the target on validation and out-of-fold training scores,
capped at 0.5 (pairs below it are settled as non-matches without the student), and
``f1_threshold`` on the match classifier's, the best validation F1 (the ``features`` verdicts).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from em_spark.saved_model import FEATURE_FORMAT_VERSION, FEATURE_META_FILE, feature_metadata
from em_spark.similarity import feature_names, pair_features

_MODEL = "model.joblib"
_PREFILTER_MODEL = "prefilter_model.joblib"

Pair = tuple[Mapping[str, object], Mapping[str, object], int]


def infer_attributes(records: Sequence[Mapping[str, object]]) -> list[str]:
    """Attribute names in order of first appearance over ``records``."""
    seen: dict[str, None] = {}
    for record in records:
        for name in record:
            seen.setdefault(str(name), None)
    return list(seen)


def threshold_for_recall(labels: np.ndarray, scores: np.ndarray, target_recall: float) -> float:
    """The highest threshold t with recall(scores >= t) >= ``target_recall`` (0 if no positive)."""
    positives = np.sort(scores[labels == 1])
    if positives.size == 0:
        return 0.0
    # Keep at least ceil(target * P) positives: the threshold is the score of the weakest kept.
    keep = math.ceil(target_recall * positives.size - 1e-9)
    return float(positives[positives.size - keep]) if keep > 0 else float(positives[-1])


def threshold_for_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold with the best F1 over ``scores >= t`` (0.5 if there is no positive).

    Placed halfway between the weakest score kept and the strongest one left out (0 when
    every pair is kept), never on a score: on well-separated validation scores that gap is
    wide, and a cut at its top edge (measured: 0.9997 on Fodors-Zagats) drops test matches
    scoring a hair lower; and a cut on a pair's own score would leave that pair's verdict
    to float rounding, which differs with how pairs are batched.
    """
    if not (labels == 1).any():
        return 0.5
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    tp = np.cumsum(sorted_labels == 1)
    fp = np.cumsum(sorted_labels != 1)
    # Only cut between distinct scores: the last index of each run of equal scores.
    last = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    f1 = np.where(last, 2 * tp / (tp + fp + tp[-1]), -1.0)
    best = int(np.argmax(f1))
    below = sorted_scores[best + 1] if best + 1 < len(sorted_scores) else 0.0
    return float((sorted_scores[best] + below) / 2)


@dataclass
class FeatureModel:
    """Similarity features + gradient boosting, with two thresholds chosen on validation.

    ``model`` gives the feature model's P(match) (the ``features`` verdicts, at ``f1_threshold``);
    ``prefilter_model``, fitted with easy random non-matches too, gives the prefilter's
    score (pairs below ``prefilter_threshold`` are settled as non-matches).
    """

    attributes: list[str]
    model: HistGradientBoostingClassifier
    prefilter_model: HistGradientBoostingClassifier
    prefilter_threshold: float
    f1_threshold: float
    target_recall: float
    valid_metrics: dict[str, float]

    def predict_proba(
        self, lefts: Sequence[Mapping[str, object]], rights: Sequence[Mapping[str, object]]
    ) -> np.ndarray:
        """The feature model's P(match) per pair, shape (n,)."""
        return self.scores(lefts, rights)[0]

    def scores(
        self, lefts: Sequence[Mapping[str, object]], rights: Sequence[Mapping[str, object]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(the feature model's P(match), its prefilter score) per pair, from one feature pass."""
        if len(lefts) == 0:
            return np.empty(0, dtype=np.float64), np.empty(0, dtype=np.float64)
        features = pair_features(lefts, rights, self.attributes)
        with _one_thread():
            return self.model.predict_proba(features)[:, 1], self.prefilter_model.predict_proba(features)[:, 1]

    def passes_prefilter(
        self, lefts: Sequence[Mapping[str, object]], rights: Sequence[Mapping[str, object]]
    ) -> np.ndarray:
        """Whether each pair goes on past the prefilter (bool, shape (n,))."""
        return self.scores(lefts, rights)[1] >= self.prefilter_threshold

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.model, out / _MODEL)
        joblib.dump(self.prefilter_model, out / _PREFILTER_MODEL)
        meta = {
            "format_version": FEATURE_FORMAT_VERSION,
            "attributes": self.attributes,
            "feature_names": feature_names(self.attributes),
            "prefilter_threshold": self.prefilter_threshold,
            "f1_threshold": self.f1_threshold,
            "target_recall": self.target_recall,
            "valid_metrics": self.valid_metrics,
        }
        (out / FEATURE_META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "FeatureModel":
        path = Path(directory)
        meta = feature_metadata(path)
        return cls(
            attributes=list(meta["attributes"]),
            model=joblib.load(path / _MODEL),
            prefilter_model=joblib.load(path / _PREFILTER_MODEL),
            prefilter_threshold=float(meta["prefilter_threshold"]),
            f1_threshold=float(meta["f1_threshold"]),
            target_recall=float(meta["target_recall"]),
            valid_metrics=dict(meta["valid_metrics"]),
        )


def _split(pairs: Sequence[Pair], where: str) -> tuple[list, list, np.ndarray]:
    if not pairs:
        raise ValueError(f"{where}: no pairs")
    lefts, rights, labels = [], [], []
    for i, pair in enumerate(pairs):
        left, right, label = pair
        if label not in (0, 1):
            raise ValueError(f"{where}: pair {i} has label {label!r}, expected 0 or 1")
        lefts.append(left)
        rights.append(right)
        labels.append(int(label))
    return lefts, rights, np.asarray(labels, dtype=np.int64)


def fit_prefilter(
    train_pairs: Sequence[Pair],
    valid_pairs: Sequence[Pair],
    attributes: Sequence[str] | None = None,
    target_recall: float = 0.99,
    seed: int = 0,
    max_iter: int = 300,
    max_prefilter_threshold: float = 0.5,
    random_negatives: float = 1.0,
) -> FeatureModel:
    """Fit the feature model on labeled pairs and choose its thresholds on validation.

    ``train_pairs`` / ``valid_pairs``: sequences of ``(left, right, label)`` with ``left``
    and ``right`` mappings from attribute name to value and ``label`` 0 or 1.
    ``attributes``: the aligned attribute names (default: every name seen in training, in
    order of first appearance). Early stopping holds out 10% of the training pairs.
    ``random_negatives``: random cross pairs of the training records added as non-matches,
    per labeled training pair (see :func:`random_cross_pairs`).
    """
    tl, tr, ty = _split(train_pairs, "train pairs")
    vl, vr, vy = _split(valid_pairs, "valid pairs")
    if len(set(ty.tolist())) < 2:
        raise ValueError("train pairs: need both matches and non-matches")
    attrs = list(attributes) if attributes is not None else infer_attributes(tl + tr)
    n_pos, n_neg = int(ty.sum()), int((ty == 0).sum())
    rl, rr = random_cross_pairs(tl, tr, ty, round(random_negatives * len(ty)), seed)
    labeled_x, random_x = pair_features(tl, tr, attrs), pair_features(rl, rr, attrs)
    valid_x = pair_features(vl, vr, attrs)
    # A random pair weighs as a labeled non-match.
    labeled_w = _balanced_weights(ty)
    prefilter_x, prefilter_y = np.vstack([labeled_x, random_x]), np.r_[ty, np.zeros(len(rl), dtype=np.int64)]
    prefilter_w = np.r_[labeled_w, np.full(len(rl), labeled_w[ty == 0][0])]
    with _one_thread():
        # Two models on the same features, each fitted to the pairs it decides on: the
        # match classifier's verdicts fall on pairs like the labeled ones, while the prefilter sees
        # candidates, mostly easy; fitted on both, the match classifier lost ~2 F1 on Walmart-Amazon.
        model = _classifier(len(ty), seed, max_iter).fit(labeled_x, ty, sample_weight=labeled_w)
        prefilter_model = _classifier(len(prefilter_y), seed, max_iter).fit(prefilter_x, prefilter_y, sample_weight=prefilter_w)
        valid_scores = model.predict_proba(valid_x)[:, 1]
        valid_prefilter_scores = prefilter_model.predict_proba(valid_x)[:, 1]
        # The recall threshold is a low quantile of the positives' scores: from the valid
        # positives alone (a few hundred) it is noisy, so out-of-fold scores of the training
        # pairs join them (scored by models that never saw them, as new pairs will be).
        pooled_labels, pooled_scores = vy, valid_prefilter_scores
        n_folds = min(3, n_pos, n_neg)
        if n_folds >= 2:
            oof = np.empty(len(prefilter_y))
            folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            for fit_idx, held_idx in folds.split(prefilter_x, prefilter_y):
                fold_model = _classifier(len(fit_idx), seed, max_iter).fit(
                    prefilter_x[fit_idx], prefilter_y[fit_idx], sample_weight=prefilter_w[fit_idx]
                )
                oof[held_idx] = fold_model.predict_proba(prefilter_x[held_idx])[:, 1]
            pooled_labels, pooled_scores = np.r_[prefilter_y, vy], np.r_[oof, valid_prefilter_scores]
        # Capped: a pair the feature model finds more likely a match than not is never settled
        # without the student (on easy data every positive scores ~1.0).
        prefilter = min(threshold_for_recall(pooled_labels, pooled_scores, target_recall), max_prefilter_threshold)
    best = threshold_for_f1(vy, valid_scores)
    kept = valid_prefilter_scores >= prefilter
    metrics = {
        "valid_pairs": float(len(vy)),
        "valid_positives": float(vy.sum()),
        "prefilter_recall": float(kept[vy == 1].mean()) if vy.any() else math.nan,
        "prefilter_pass_rate": float(kept.mean()),
        "f1": _f1(vy, valid_scores >= best),
    }
    return FeatureModel(
        attributes=attrs,
        model=model,
        prefilter_model=prefilter_model,
        prefilter_threshold=prefilter,
        f1_threshold=best,
        target_recall=target_recall,
        valid_metrics=metrics,
    )


def _balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-pair weights under which matches and non-matches weigh the same in total."""
    n_pos, n_neg = int(labels.sum()), int((labels == 0).sum())
    return np.where(labels == 1, len(labels) / (2 * n_pos), len(labels) / (2 * n_neg))


def random_cross_pairs(
    lefts: Sequence[Mapping[str, object]],
    rights: Sequence[Mapping[str, object]],
    labels: np.ndarray,
    n: int,
    seed: int,
) -> tuple[list, list]:
    """``n`` random (left, right) pairs of the given records, none of them a labeled match.

    Why: labeled non-matches are the hard ones a blocker once kept; the candidates scored in
    production are mostly far easier. A model that never saw an easy pair scores one
    arbitrarily (on Walmart-Amazon 99% of random pairs passed the prefilter), so it learns
    them from random pairs, which are non-matches but for a ~1/len(rights) chance.
    """
    positives = {(_key(l), _key(r)) for l, r, y in zip(lefts, rights, labels) if y == 1}
    rng = np.random.default_rng(seed)
    out_l: list = []
    out_r: list = []
    for i, j in zip(rng.integers(0, len(lefts), n), rng.integers(0, len(rights), n)):
        if (_key(lefts[i]), _key(rights[j])) not in positives:
            out_l.append(lefts[i])
            out_r.append(rights[j])
    return out_l, out_r


def _key(record: Mapping[str, object]) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in record.items()))


def _one_thread() -> threadpool_limits:
    """scikit-learn's OpenMP pool on one thread: with every core busy (Spark tasks, other
    jobs) its spinning threads made fitting 10x slower here; one thread per task scales."""
    return threadpool_limits(limits=1, user_api="openmp")


def _classifier(n_rows: int, seed: int, max_iter: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=max_iter,
        learning_rate=0.1,
        # Leaves of >= 40 pairs (default 20) and an L2 penalty on leaf values: on the small
        # demo tables an unregularized fold model scored an odd positive ~1e-6, and that score
        # set the prefilter threshold (everything passed). Test F1 on three DeepMatcher sets
        # stayed within seed noise (docs/BENCHMARKS.md).
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=n_rows >= 200,
        validation_fraction=0.1,
        n_iter_no_change=20,
        random_state=seed,
    )


def _f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    tp = float((predicted & (labels == 1)).sum())
    denominator = float(predicted.sum() + (labels == 1).sum())
    return 2 * tp / denominator if denominator else 0.0
