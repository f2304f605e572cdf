"""Teach a batch of pairs: prompts -> backend -> parse -> validate -> explanations rows.

Pure Python (no pyspark): the Spark job calls :func:`teach_pairs` inside mapInPandas,
and GPU checks or notebooks can call it directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pydantic import SecretStr
from rapidfuzz import fuzz

from em_spark.config import TeachConf
from em_spark.serialize import SerializerSettings, serialize_pair
from em_spark.teacher.backends import get_backend
from em_spark.teacher.base import Backend, Completion, TeachRequest
from em_spark.teacher.parse import parse_teacher_output
from em_spark.teacher.prompts import LABEL_WORDS, Demonstration, PromptTemplate
from em_spark.teacher.validate import check_explanation

EXPLANATION_COLUMNS = [
    "pair_id", "teacher", "prompt_version", "left_id", "right_id", "label", "pseudo_label",
    "explanation", "status", "error", "raw_output", "grounding", "latency_ms",
    "input_tokens", "output_tokens", "run_id", "created_at",
]  # fmt: skip


@dataclass(frozen=True)
class Pair:
    pair_id: str
    left_id: str
    right_id: str
    left: Mapping[str, object]
    right: Mapping[str, object]
    label: int | None  # gold label; None for --predict


@dataclass(frozen=True)
class TeachSettings:
    """Everything a worker needs (pickled into the Spark task; the key stays a SecretStr)."""

    conf: TeachConf
    template: PromptTemplate
    teacher: str
    run_id: str
    order: list[str] | None = None
    # fixed: one match + one non-match for every pair; retrieved: pools to pick from.
    demonstrations: list[Demonstration] = field(default_factory=list)
    api_key: SecretStr | None = None

    @property
    def serializer(self) -> SerializerSettings:
        return SerializerSettings(self.conf.max_words_per_attribute, self.conf.max_words_per_record)


def pick_demonstrations(pair: Pair, settings: TeachSettings) -> list[Demonstration]:
    """One match then one non-match: fixed, or the most similar of each from the pool."""
    pool = [d for d in settings.demonstrations if (d.left, d.right) != (pair.left, pair.right)]
    if settings.conf.demonstrations != "retrieved":
        chosen = {d.label: d for d in reversed(pool)}  # the first of each label
        return [chosen[label] for label in (1, 0) if label in chosen]
    query = serialize_pair(pair.left, pair.right, settings.order, settings.serializer)
    out = []
    for label in (1, 0):
        candidates = [d for d in pool if d.label == label]
        if candidates:
            out.append(max(candidates, key=lambda d: fuzz.token_set_ratio(query, serialize_pair(d.left, d.right, settings.order, settings.serializer))))
    return out


def build_request(pair: Pair, settings: TeachSettings) -> TeachRequest:
    label = pair.label if settings.template.task == "rationalize" else None
    messages = settings.template.messages(
        pair.left, pair.right, label, pick_demonstrations(pair, settings), settings.order, settings.serializer
    )
    return TeachRequest(pair.pair_id, pair.left, pair.right, label, messages)


def result_row(pair: Pair, completion: Completion, settings: TeachSettings, created_at: datetime) -> dict[str, object]:
    predict = settings.template.task == "predict"
    row: dict[str, object] = {
        "pair_id": pair.pair_id,
        "teacher": settings.teacher,
        "prompt_version": settings.template.version,
        "left_id": pair.left_id,
        "right_id": pair.right_id,
        "label": None if predict else pair.label,
        "pseudo_label": predict,
        "explanation": None,
        "status": "failed",
        "error": None,
        "raw_output": completion.text,
        "grounding": None,
        "latency_ms": completion.latency_ms,
        "input_tokens": completion.input_tokens,
        "output_tokens": completion.output_tokens,
        "run_id": settings.run_id,
        "created_at": created_at,
    }
    if completion.text is None:
        row["error"] = f"{completion.error_kind or 'backend'}: {completion.error or 'no output'}"
        return row
    parsed = parse_teacher_output(completion.text)
    row["explanation"] = parsed.explanation
    row["status"] = "invalid"
    if predict:
        if parsed.label is None:
            row["error"] = f"no_label: {parsed.error or 'the answer names no label'}"
            return row
        row["label"] = parsed.label
    elif parsed.label is not None and parsed.label != pair.label:
        # The stored label stays the gold one; a teacher that argues otherwise is not used.
        row["error"] = f"contradicts_label: the teacher answered {LABEL_WORDS[parsed.label]!r}"
        return row
    v = settings.conf.validation
    verdict = check_explanation(
        parsed.explanation, int(row["label"]), pair.left, pair.right,  # type: ignore[arg-type]
        min_chars=v.min_chars, max_chars=v.max_chars, min_grounding=v.min_grounding,
    )  # fmt: skip
    row.update(status=verdict.status, error=verdict.error, grounding=verdict.grounding)
    return row


def teach_pairs(pairs: Sequence[Pair], settings: TeachSettings, backend: Backend | None = None) -> list[dict[str, object]]:
    """One explanations row per pair, in order; failures are rows too.

    ``backend`` defaults to this worker's cached backend for ``settings.conf``.
    """
    backend = backend or get_backend(settings.conf, settings.order, settings.api_key)
    out: list[dict[str, object]] = []
    size = settings.conf.batch_size
    for start in range(0, len(pairs), size):
        batch = pairs[start : start + size]
        completions = backend.complete([build_request(p, settings) for p in batch])
        if len(completions) != len(batch):  # a backend bug must not shift rows onto other pairs
            raise RuntimeError(f"backend returned {len(completions)} answers for {len(batch)} requests")
        created_at = datetime.now(timezone.utc)
        out += [result_row(p, c, settings, created_at) for p, c in zip(batch, completions)]
    return out
