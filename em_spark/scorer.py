"""The scoring core: prefilter -> verdict -> rationale policy over one batch of pairs.

No pyspark here: the Spark UDF (udfs/scoring.py), the scoring benchmark and the GPU check
(benchmarks/gpu_score.py) all call this module, so every path shares the same batching,
input-length sorting and KV-cached generation (those live in
:class:`~em_spark.student.inference.StudentPredictor`).

Per pair, in order:

1. the prefilter (the similarity-feature model shipped with the student, if any): pairs
   with P(match) below its ``prefilter_threshold`` get verdict ``no_match``,
   ``decided_by = prefilter`` and that probability as ``p_match``; the student never sees
   them;
2. the verdict: from the student — ``p_match`` from the first decoder step (one forward
   pass), verdict ``match`` where ``p_match >= threshold`` — or, when the train job found
   the feature model better on validation (``verdict_by = features`` in the model's
   metadata), from the feature model at its F1 threshold (``decided_by = features``);
3. a rationale from the student, generated only for the pairs the policy names (``none``,
   ``matches``, ``uncertain`` = ``|p_match - threshold| <= band``, ``all`` = every pair
   past the prefilter) and forced to start with the pair's verdict, so it explains the
   verdict in the table; its quotes constrained to the pair's values; elsewhere null;
4. the rationale checker (em_spark.rationale) on every generated rationale: one that fails
   is replaced by the rules explanation of the pair for its verdict, and ``rationale_by``
   says who wrote each (``student`` | ``rules``), so nothing unchecked reaches a table.

A stage that fails for a batch is retried pair by pair, so one bad pair fails alone:
it gets status ``failed``, verdict ``error``, its error text and ``decided_by`` naming the
stage that failed (``input``, ``prefilter``, ``student``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from em_spark.errors import InputError
from em_spark.features import FeatureMatcher
from em_spark.mlflow_store import MlflowStore
from em_spark.rationale import check_rationale
from em_spark.serialize import clean_value
from em_spark.student.inference import StudentPredictor, parse_verdict
from em_spark.teacher.rules import explain_pair

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
    # None: the threshold saved with the student.
    threshold: float | None = None
    use_prefilter: bool = True

    def with_batch_size(self, batch_size: int) -> "ScoringPolicy":
        return replace(self, batch_size=batch_size)


@dataclass
class ScoringModel:
    """A student and, when one was trained with it, its prefilter; loaded from one URI."""

    uri: str
    student: StudentPredictor
    prefilter: FeatureMatcher | None

    @classmethod
    def load(
        cls, uri: str, device: str | None = None, dtype: str | None = None, store: MlflowStore | None = None
    ) -> "ScoringModel":
        """``uri``: a model folder (``<dir>/student``, ``<dir>/prefilter``) or an MLflow URI
        in ``store``."""
        student = StudentPredictor.load(uri, device=device, dtype=dtype, store=store)
        path = student.prefilter_path
        prefilter = FeatureMatcher.load(path) if path is not None and FeatureMatcher.is_saved(path) else None
        if prefilter is not None:
            student.feature_matcher = prefilter  # its score hints and offsets, if the student uses them
        return cls(uri=uri, student=student, prefilter=prefilter)

    @property
    def verdict_by(self) -> str:
        """``features`` when the train job chose the feature model and it is loaded."""
        return "features" if self.prefilter is not None and self.student.verdict_by == "features" else "student"

    def feature_model_uses(self, policy: ScoringPolicy) -> list[str]:
        """What scoring with ``policy`` uses the feature model for (empty: nothing)."""
        if self.prefilter is None:
            return []
        uses = ["the prefilter"] if policy.use_prefilter else []
        if self.verdict_by == "features":
            uses.append("the verdicts (verdict_by: features)")
        if self.student.settings.feature_score_hint:
            uses.append("the student's score hint")
        if self.student.feature_offset:
            uses.append("the student's verdict offset")
        return uses


def feature_schema_check(attributes: Sequence[str], present: Collection[str], uses: Sequence[str]) -> str:
    """The ``feature_schema`` run check: do the records carry every attribute the feature
    model compares (``attributes``; ``present``: the records' attribute names, ``uses``:
    :meth:`ScoringModel.feature_model_uses`)? Raises InputError when one is missing and the
    feature model is in use.

    The feature model was fitted on one schema; on records of another it has only the
    whole-record features. Measured out of domain (docs/BENCHMARKS.md, "the score hint out
    of domain"): its prefilter let through 0% of the matches on 5 of the paper's 7 rows and
    2.4% where one of five attributes was shared, and a student reading its score hint
    followed it to test F1 0-36.
    """
    if not uses:
        return "ok: the feature model is not used"
    missing = [a for a in attributes if a not in present]
    if not missing:
        return f"ok: records carry all {len(attributes)} attributes the feature model compares"
    retrain_verdicts = " (a model whose verdicts come from it needs train.verdict_by: student)"
    raise InputError(
        f"records lack {len(missing)} of the {len(attributes)} attributes the feature model compares "
        f"({', '.join(missing)}; the records have: {', '.join(sorted(present)) or 'none'}), and it is used "
        f"for {', '.join(uses)}: the model was trained on another schema. Train a model on these tables "
        "(em-spark train), or score with score.prefilter: false if the student does not read the score hint"
        + (retrain_verdicts if "the verdicts (verdict_by: features)" in uses else "")
    )


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
    model: ScoringModel,
    lefts: Sequence[Mapping[str, object] | None],
    rights: Sequence[Mapping[str, object] | None],
    policy: ScoringPolicy,
) -> pd.DataFrame:
    """Score aligned pairs; a ``None`` record (not found) fails its pair. -> RESULT_COLUMNS."""
    n = len(lefts)
    threshold = model.student.threshold if policy.threshold is None else policy.threshold
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

    # The feature model when it gives the verdicts (the train job's choice), else None.
    feature_verdicts = model.prefilter if model.verdict_by == "features" else None
    feature_scores: dict[int, float] = {}
    if model.prefilter is not None and (policy.use_prefilter or feature_verdicts is not None):
        prefilter = model.prefilter
        both, failed = _guarded(
            lambda rows: list(zip(*prefilter.scores([lefts[r] for r in rows], [rights[r] for r in rows]))),
            pending,
        )
        for i, message in failed.items():
            decided_by[i], error[i] = "prefilter", message
        pending = []
        for i, (score, prefilter_score) in both.items():
            feature_scores[i] = score
            if policy.use_prefilter and prefilter_score < prefilter.prefilter_threshold:
                p_match[i], verdict[i], decided_by[i] = prefilter_score, "no_match", "prefilter"
            else:
                pending.append(i)

    student = model.student
    texts, failed = _guarded(
        lambda rows: student.serialize_pairs([lefts[r] for r in rows], [rights[r] for r in rows]), pending
    )
    if feature_verdicts is not None:
        threshold = feature_verdicts.f1_threshold if policy.threshold is None else policy.threshold
        probs, failed_p = {i: feature_scores[i] for i in pending if i in texts}, {}
    else:
        probs, failed_p = _guarded(
            lambda rows: student.p_match(
                [texts[r] for r in rows],
                batch_size=policy.batch_size,
                offsets=student.verdict_offsets([lefts[r] for r in rows], [rights[r] for r in rows]),
            ),
            [i for i in pending if i in texts],
        )
    for i, message in {**failed, **failed_p}.items():
        decided_by[i], error[i] = "student", message
    scored = sorted(probs)
    for i in scored:
        p_match[i] = probs[i]
        verdict[i] = "match" if probs[i] >= threshold else "no_match"
        decided_by[i] = model.verdict_by

    chosen = [i for i, want in zip(scored, wants_rationale(policy, p_match[scored], threshold)) if want]
    for said in ("match", "no_match"):
        generated, failed_g = _guarded(
            lambda rows, said=said: student.generate(
                [texts[r] for r in rows],
                max_new_tokens=policy.max_new_tokens,
                batch_size=policy.batch_size,
                verdict=said,
                sources=[record_values(lefts[r], rights[r]) for r in rows],
            ),
            [i for i in chosen if verdict[i] == said],
        )
        for i, text in generated.items():
            rationale[i], rationale_by[i] = checked_rationale(
                parse_verdict(text)[1], said, lefts[i], rights[i], student.attributes
            )
        for i, message in failed_g.items():
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


def record_values(left: Mapping[str, object], right: Mapping[str, object]) -> list[str]:
    """What a rationale of (left, right) may quote: every non-empty value of both."""
    return [text for text in (clean_value(v) for v in (*left.values(), *right.values())) if text]


def checked_rationale(
    written: str, verdict: str, left: Mapping[str, object], right: Mapping[str, object], order: Sequence[str] | None
) -> tuple[str, str]:
    """(rationale, rationale_by): the student's text where it passes the rationale checker,
    else the rules explanation of the pair for ``verdict``, which is grounded by
    construction (and checked by the tests on empty, numeric and very long values)."""
    if check_rationale(written, verdict, left, right, order).ok:
        return written, "student"
    label = 1 if verdict == "match" else 0
    return explain_pair(left, right, label, order, decided_by="the matcher's score"), "rules"
