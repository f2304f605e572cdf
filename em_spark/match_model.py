"""``MatchModel``: the one model behind every entry point (no Spark here).

It owns what makes a verdict and its reason, so the train job, the score job's UDF,
``bench``, ``evaluate`` and the MLflow pyfunc cannot disagree:

- the **feature model** (em_spark.features.FeatureModel, gradient-boosted similarity
  features), fitted first; it is the prefilter (pairs below its prefilter threshold are
  ``no_match`` without the student) and, when it validated strictly better than the
  student, the verdict maker (``verdict_by = features``);
- the **student** (em_spark.student.inference.StudentPredictor): p_match from one forward
  pass, and the rationale;
- the **verdict rule**: ``p_match >= threshold`` of whichever model decides;
- the **rationale policy**: the student writes, decoding restricted to explanations in
  the teacher's phrasing that are true of the pair (it chooses what to say, never says
  something false); every text still goes through the rationale checker
  (em_spark.rationale), and one that fails is replaced by the rules explanation of the
  pair for the verdict given.

In the scikit-learn manner: :meth:`fit`, :meth:`predict_proba`, :meth:`predict`,
:meth:`explain`, :meth:`save`, :meth:`load`. A saved model is one folder::

    <dir>/student/      the student (Hugging Face files + em_student.json)
    <dir>/prefilter/    the feature model, when there is one (the folder keeps its first name)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from em_spark.errors import InputError
from em_spark.features import FeatureModel, fit_prefilter
from em_spark.mlflow_store import MlflowStore
from em_spark.rationale import check_rationale
from em_spark.serialize import clean_value, serialize_pair, serialize_record
from em_spark.saved_model import PREFILTER_DIR, feature_model_uses, verdict_maker
from em_spark.student.inference import StudentPredictor, parse_verdict, save_student
from em_spark.teacher.rules import explain_pair, explanation_candidates

log = logging.getLogger(__name__)

Record = Mapping[str, object]
Triple = tuple[Mapping[str, object], Mapping[str, object], int]


def record_values(left: Record, right: Record) -> list[str]:
    """What a rationale of (left, right) may quote: every non-empty value of both."""
    return [text for text in (clean_value(v) for v in (*left.values(), *right.values())) if text]


def checked_rationale(
    written: str, verdict: str, left: Record, right: Record, order: Sequence[str] | None
) -> tuple[str, str]:
    """(rationale, rationale_by): the student's text where it passes the rationale checker,
    else the rules explanation of the pair for ``verdict``, grounded by construction."""
    if check_rationale(written, verdict, left, right, order).ok:
        return written, "student"
    label = 1 if verdict == "match" else 0
    return explain_pair(left, right, label, order, decided_by="the matcher's score"), "rules"


def choose_verdict_model(choice: str, student_valid_f1: float, feature_model: FeatureModel | None) -> str:
    """``student`` or ``features``: ``auto`` picks the feature model only when it has a
    strictly higher validation F1 (both at their own F1-best threshold on the same pairs),
    so a student that has not learned to discriminate yet does not decide verdicts."""
    if choice != "auto":
        return choice
    if feature_model is not None and feature_model.valid_metrics["f1"] > student_valid_f1:
        log.info(
            "train: verdicts by the feature model (valid F1 %.4f > student %.4f); the student writes rationales",
            feature_model.valid_metrics["f1"], student_valid_f1,
        )
        return "features"
    return "student"


class MatchModel:
    """A student and, when one was fitted with it, its feature model."""

    def __init__(self, student: StudentPredictor, feature_model: FeatureModel | None, uri: str = ""):
        self.student = student
        self.feature_model = feature_model
        self.uri = uri
        self.fit_info: dict[str, Any] = {}

    # --- fit / save / load -------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        train: Sequence[Triple],
        valid: Sequence[Triple],
        explanations: Sequence[str | None],
        conf: Any,
        work_dir: str | Path,
        attributes: Sequence[str] | None = None,
        corpus_records: Sequence[Record] = (),
        on_validation: Callable[[dict[str, float], int], None] | None = None,
    ) -> "MatchModel":
        """Fit the feature model (``conf.prefilter``), then the student on ``train``
        (``explanations``: the teacher's, aligned with ``train``), choosing the threshold
        and the verdict model on ``valid``. ``conf``: a TrainConf. ``corpus_records``:
        extra records for a preset's tokenizer. ``fit_info`` holds what was measured."""
        from em_spark.student.training import PairExample, serializer_settings, train_student

        if len(explanations) != len(train):
            raise InputError(f"fit: {len(explanations)} explanations for {len(train)} train pairs")
        t0 = time.monotonic()
        order = list(attributes) if attributes is not None else None
        feature_model = None
        if conf.prefilter:
            feature_model = fit_prefilter(
                train, valid, order, target_recall=conf.prefilter_recall, seed=conf.seed
            )
        settings = serializer_settings(conf)
        train_ex = [
            PairExample(serialize_pair(l, r, order, settings), int(y), e) for (l, r, y), e in zip(train, explanations)
        ]
        valid_ex = [PairExample(serialize_pair(l, r, order, settings), int(y), None) for l, r, y in valid]
        records = [rec for l, r, _ in (*train, *valid) for rec in (l, r)] + list(corpus_records)
        corpus = [serialize_record(r, order, settings) for r in records] + [e for e in explanations if e]
        result = train_student(train_ex, valid_ex, conf, corpus, work_dir, order, on_validation=on_validation)
        verdict_by = choose_verdict_model(conf.verdict_by, result.valid_f1, feature_model)
        student = StudentPredictor(
            result.model, result.tokenizer, result.threshold, settings, order, conf.max_input_tokens,
            extra={
                "mode": conf.mode, "teacher": conf.teacher, "base_model": conf.model,
                "valid_f1": result.valid_f1, "verdict_by": verdict_by,
            },
        )
        model = cls(student, feature_model)
        model.fit_info = {
            "result": result,
            "verdict_by": verdict_by,
            "seconds": time.monotonic() - t0,
            "train_pairs": len(train_ex),
            "valid_pairs": len(valid_ex),
            "explanations_used": sum(1 for e in explanations if e) if conf.mode != "label_only" else 0,
        }
        return model

    def save(self, folder: str | Path) -> Path:
        """Write the model folder (``student/`` and, with a feature model, ``prefilter/``); return it."""
        root = Path(folder)
        s = self.student
        save_student(s.model, s.tokenizer, root, s.threshold, s.settings, s.attributes, s.extra, s.max_input_tokens)
        if self.feature_model is not None:
            self.feature_model.save(root / PREFILTER_DIR)
        return root

    @classmethod
    def load(
        cls, uri: str, device: str | None = None, dtype: str | None = None, store: MlflowStore | None = None
    ) -> "MatchModel":
        """``uri``: a model folder or an MLflow URI in ``store``."""
        student = StudentPredictor.load(uri, device=device, dtype=dtype, store=store)
        path = student.prefilter_path
        feature_model = FeatureModel.load(path) if path is not None else None
        return cls(student, feature_model, uri=uri)

    # --- the verdict -------------------------------------------------------------------

    @property
    def verdict_by(self) -> str:
        """``features`` when training chose the feature model and it is loaded."""
        return verdict_maker(self.feature_model is not None, self.student.verdict_by)

    @property
    def threshold(self) -> float:
        """The threshold of the model that gives the verdicts."""
        return self.feature_model.f1_threshold if self.verdict_by == "features" else self.student.threshold

    def feature_model_uses(self, use_prefilter: bool) -> list[str]:
        """What scoring uses the feature model for (empty: nothing)."""
        return feature_model_uses(self.feature_model is not None, self.verdict_by, use_prefilter)

    def prefilter_scores(self, lefts: Sequence[Record], rights: Sequence[Record]) -> tuple[np.ndarray, np.ndarray]:
        """(P(match), prefilter score) of the feature model per pair."""
        if self.feature_model is None:
            raise InputError("this model has no feature model")
        scores, prefilter = self.feature_model.scores(list(lefts), list(rights))
        return np.asarray(scores, dtype=np.float64), np.asarray(prefilter, dtype=np.float64)

    def verdict_scores(
        self, lefts: Sequence[Record], rights: Sequence[Record], batch_size: int = 64,
        feature_scores: Sequence[float] | None = None,
    ) -> np.ndarray:
        """p_match of the verdict model (no prefilter): the student's, or the feature
        model's (``feature_scores``, when the caller has them already)."""
        if self.verdict_by == "features":
            if feature_scores is not None:
                return np.asarray(feature_scores, dtype=np.float64)
            return self.prefilter_scores(lefts, rights)[0]
        return self.student.p_match(self.student.serialize_pairs(lefts, rights), batch_size=batch_size)

    def predict_proba(
        self, lefts: Sequence[Record], rights: Sequence[Record], use_prefilter: bool = True, batch_size: int = 64
    ) -> tuple[np.ndarray, list[str]]:
        """(p_match, decided_by) per pair, as the score job writes them."""
        n = len(lefts)
        p = np.zeros(n, dtype=np.float64)
        decided_by = [self.verdict_by] * n
        todo = list(range(n))
        feature_scores = None
        if self.feature_model is not None and (use_prefilter or self.verdict_by == "features"):
            feature_scores, prefilter = self.prefilter_scores(lefts, rights)
            if use_prefilter:
                cut = prefilter < self.feature_model.prefilter_threshold
                p[cut] = prefilter[cut]
                for i in np.flatnonzero(cut):
                    decided_by[i] = "prefilter"
                todo = [i for i in todo if not cut[i]]
        if todo:
            p[todo] = self.verdict_scores(
                [lefts[i] for i in todo], [rights[i] for i in todo], batch_size,
                None if feature_scores is None else feature_scores[todo],
            )
        return p, decided_by

    def predict(self, lefts: Sequence[Record], rights: Sequence[Record], use_prefilter: bool = True) -> list[str]:
        """``match`` / ``no_match`` per pair."""
        p, decided_by = self.predict_proba(lefts, rights, use_prefilter)
        return [self.verdict(x, by) for x, by in zip(p, decided_by)]

    def verdict(self, p_match: float, decided_by: str, threshold: float | None = None) -> str:
        """The verdict rule (a prefilter score is below its threshold by definition)."""
        if decided_by == "prefilter":
            return "no_match"
        return "match" if p_match >= (self.threshold if threshold is None else threshold) else "no_match"

    # --- the rationale -----------------------------------------------------------------

    def explain(
        self,
        lefts: Sequence[Record],
        rights: Sequence[Record],
        verdicts: Sequence[str],
        max_new_tokens: int = 128,
        batch_size: int = 64,
    ) -> list[tuple[str, str]]:
        """(rationale, rationale_by) per pair for the given verdicts: the student's text,
        decoded within the rules teacher's true explanations of the pair for that verdict
        (em_spark.teacher.rules.explanation_candidates), where it passes the rationale
        checker, else the rules one."""
        out: list[tuple[str, str]] = [("", "")] * len(lefts)
        texts = self.student.serialize_pairs(lefts, rights)
        for said in ("match", "no_match"):
            rows = [i for i, v in enumerate(verdicts) if v == said]
            if not rows:
                continue
            written = self.student.generate(
                [texts[i] for i in rows], max_new_tokens=max_new_tokens, batch_size=batch_size, verdict=said,
                candidates=[
                    explanation_candidates(lefts[i], rights[i], int(said == "match"), self.student.attributes)
                    for i in rows
                ],
            )
            for i, text in zip(rows, written):
                out[i] = checked_rationale(parse_verdict(text)[1], said, lefts[i], rights[i], self.student.attributes)
        return out
