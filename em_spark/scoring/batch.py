"""The per-batch scoring core: feature-model prefilter -> verdict -> checked rationale.

No pyspark here: the Spark UDF (udfs/scoring.py), the MLflow pyfunc, the scoring
benchmark and the GPU check all call :func:`score_pairs`, which runs the stages of
:class:`~em_spark.match_model.MatchModel` over one batch and keeps every failure to the
pair it belongs to.

Per pair, in order:

1. the prefilter (the feature model saved with the student, if any): pairs with a score
   below its ``prefilter_threshold`` get verdict ``no_match``, ``decided_by = prefilter``
   and that score as ``p_match``; the student never sees them;
2. the verdict of the model training chose (``decided_by`` = ``student`` or
   ``features``): ``match`` where ``p_match >= threshold``;
3. a rationale, only for the pairs the policy names (``none``, ``matches``, ``uncertain``
   = ``|p_match - threshold| <= band``, ``all`` = every pair past the prefilter):
   :meth:`MatchModel.explain` — the student's text, forced to start with the pair's
   verdict and decoded within the rules teacher's true explanations of the pair, where it
   passes the rationale checker, else the rules explanation; ``rationale_by`` says which.
   Elsewhere null.

A stage that fails for a batch is retried pair by pair, so one bad pair fails alone:
it gets status ``failed``, verdict ``error``, its error text and ``decided_by`` naming the
stage that failed (``input``, ``prefilter``, ``student``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the score job's driver imports this module and never loads a model (no torch)
    from em_spark.match_model import MatchModel

RESULT_COLUMNS = ["p_match", "verdict", "rationale", "rationale_by", "decided_by", "status", "error"]
RationalePolicy = Literal["none", "matches", "uncertain", "all"]
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class ScoringPolicy:
    """How pairs are scored; built from ``ScoreConf`` by the job, plain values for the UDF."""

    rationale: RationalePolicy = "matches"
    uncertain_band: float = 0.1
    max_new_tokens: int = 128
    batch_size: int = 64
    # None: the threshold saved with the model that gives the verdicts.
    threshold: float | None = None
    use_prefilter: bool = True

    def with_batch_size(self, batch_size: int) -> "ScoringPolicy":
        return replace(self, batch_size=batch_size)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]


def _guarded(
    fn: Callable[[list[int]], Sequence[Any]], rows: list[int]
) -> tuple[dict[int, Any], dict[int, str]]:
    """Run ``fn`` over ``rows`` at once; if that raises, row by row. -> (results, errors)."""
    if not rows:
        return {}, {}
    try:
        return dict(zip(rows, fn(rows))), {}
    except Exception:  # noqa: BLE001 - isolate the failing pairs below
        results: dict[int, Any] = {}
        errors: dict[int, str] = {}
        for row in rows:
            try:
                results[row] = fn([row])[0]
            except Exception as exc:  # noqa: BLE001 - kept as the row's error
                errors[row] = _error_text(exc)
        return results, errors


def wants_rationale(policy: ScoringPolicy, p_match: np.ndarray, threshold: float) -> np.ndarray:
    """Which student-scored pairs get a generated rationale under ``policy``."""
    if policy.rationale == "none":
        return np.zeros(len(p_match), dtype=bool)
    if policy.rationale == "matches":
        return p_match >= threshold
    if policy.rationale == "uncertain":
        return np.abs(p_match - threshold) <= policy.uncertain_band
    return np.ones(len(p_match), dtype=bool)


def score_pairs(
    model: MatchModel,
    lefts: Sequence[Mapping[str, object] | None],
    rights: Sequence[Mapping[str, object] | None],
    policy: ScoringPolicy,
) -> pd.DataFrame:
    """Score aligned pairs; a ``None`` record (not found) fails its pair. -> RESULT_COLUMNS."""
    n = len(lefts)
    threshold = model.threshold if policy.threshold is None else policy.threshold
    p_match = np.full(n, np.nan)
    verdict: list[str] = ["error"] * n
    rationale: list[str | None] = [None] * n
    rationale_by: list[str | None] = [None] * n
    decided_by: list[str] = ["input"] * n
    error: list[str | None] = [None] * n

    pending = []
    for i in range(n):
        missing = [side for side, rec in (("left", lefts[i]), ("right", rights[i])) if rec is None]
        if missing:
            error[i] = f"{' and '.join(missing)} record not found in records"
        else:
            pending.append(i)

    feature_scores: dict[int, float] = {}
    if model.feature_model_uses(policy.use_prefilter):
        both, failed = _guarded(
            lambda rows: list(zip(*model.prefilter_scores([lefts[r] for r in rows], [rights[r] for r in rows]))),
            pending,
        )
        for i, message in failed.items():
            decided_by[i], error[i] = "prefilter", message
        pending = []
        cut = model.feature_model.prefilter_threshold
        for i, (score, prefilter_score) in both.items():
            feature_scores[i] = score
            if policy.use_prefilter and prefilter_score < cut:
                p_match[i], verdict[i], decided_by[i] = prefilter_score, "no_match", "prefilter"
            else:
                pending.append(i)

    probs, failed = _guarded(
        lambda rows: model.verdict_scores(
            [lefts[r] for r in rows], [rights[r] for r in rows], policy.batch_size,
            [feature_scores[r] for r in rows] if model.verdict_by == "features" else None,
        ),
        pending,
    )
    for i, message in failed.items():
        decided_by[i], error[i] = "student", message
    scored = sorted(probs)
    for i in scored:
        p_match[i] = probs[i]
        verdict[i] = model.verdict(probs[i], model.verdict_by, threshold)
        decided_by[i] = model.verdict_by

    chosen = [i for i, want in zip(scored, wants_rationale(policy, p_match[scored], threshold)) if want]
    explained, failed = _guarded(
        lambda rows: model.explain(
            [lefts[r] for r in rows], [rights[r] for r in rows], [verdict[r] for r in rows],
            max_new_tokens=policy.max_new_tokens, batch_size=policy.batch_size,
        ),
        chosen,
    )
    for i, (text, by) in explained.items():
        rationale[i], rationale_by[i] = text, by
    for i, message in failed.items():
        verdict[i], error[i] = "error", message

    status = ["failed" if e is not None else "ok" for e in error]
    return pd.DataFrame(
        {
            "p_match": p_match,
            "verdict": verdict,
            "rationale": rationale,
            "rationale_by": rationale_by,
            "decided_by": decided_by,
            "status": status,
            "error": error,
        },
        columns=RESULT_COLUMNS,
    )
