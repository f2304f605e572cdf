"""Checks on one explanation: length, agreement with the label, and grounding.

Grounding is the share of the explanation's quoted values and identifiers (model
numbers, codes, numbers) that occur in the two records: a hallucination signal. Text
inside quotes is treated as data — it counts for grounding but never as the
explanation's own verdict, so quoting a record that says "answer match" is harmless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from em_spark.serialize import clean_value

_QUOTED = re.compile(r"[\"\u201c\u201d]([^\"\u201c\u201d]{1,300})[\"\u201c\u201d]")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9./-]*[a-z0-9]|[a-z0-9]", re.I)
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")

# Verdict phrases. Negative ones are removed before looking for positive ones, so
# "not the same product" never reads as "the same product".
_NEGATIVE = re.compile(
    r"\b(?:no match|not a match|non-?match|(?:do|does|did|can)\s*(?:not|n't)\s+(?:\w+\s+){0,2}(?:match|refer to the same|describe the same)"
    r"|not\s+(?:\w+\s+){0,2}(?:the same|identical)|different (?:products?|entit(?:y|ies)|items?|records?|things?|objects?)"
    r"|refer to different|(?:are|is) (?:two )?(?:different|distinct)\b)",
    re.I,
)
_POSITIVE = re.compile(
    r"\b(?:(?:is|are) a match|(?:they|both|records|entities) (?:do )?match\b|refer to the same|describe the same"
    r"|(?:is|are) the same (?:product|entity|item|record|thing|object)|same (?:product|entity|item|record)\b)",
    re.I,
)


@dataclass(frozen=True)
class Verdict:
    status: str  # ok | invalid
    error: str | None
    grounding: float | None


def _normalize(text: str) -> str:
    return clean_value(text).lower().replace('"', "'").replace("\u201c", "'").replace("\u201d", "'")


def _is_identifier(token: str) -> bool:
    has_digit = any(c.isdigit() for c in token)
    has_alpha = any(c.isalpha() for c in token)
    return (has_digit and has_alpha and len(token) >= 3) or bool(_NUMBER.match(token) and len(token) >= 2)


def _as_number(token: str) -> float | None:
    return float(token) if _NUMBER.match(token) else None


def stance(explanation: str) -> int:
    """+1 if the explanation's own words call the pair a match, -1 if not, 0 if neither."""
    text = _QUOTED.sub(" ", explanation)
    negative = bool(_NEGATIVE.search(text))
    positive = bool(_POSITIVE.search(_NEGATIVE.sub(" ", text)))
    if negative and not positive:
        return -1
    if positive and not negative:
        return 1
    return 0


def grounding_score(explanation: str, left: Mapping[str, object], right: Mapping[str, object]) -> float | None:
    """Share of quoted values and identifiers found in the records (None: nothing to check)."""
    record_text = " | ".join(_normalize(str(v)) for r in (left, right) for v in r.values() if v is not None)
    record_tokens = {t.lower() for t in _TOKEN.findall(record_text)}
    compact_tokens = {re.sub(r"[-./]", "", t) for t in record_tokens}
    record_numbers = {n for n in (_as_number(t) for t in record_tokens) if n is not None}
    checks: list[bool] = []
    for quoted in _QUOTED.findall(explanation):
        checks.append(_normalize(quoted) in record_text)
    unquoted = _QUOTED.sub(" ", explanation)
    for token in (t.lower() for t in _TOKEN.findall(unquoted)):
        if not _is_identifier(token):
            continue
        number = _as_number(token)
        if number is not None:
            checks.append(number in record_numbers or token in record_text)
        else:
            checks.append(token in record_tokens or re.sub(r"[-./]", "", token) in compact_tokens)
    return sum(checks) / len(checks) if checks else None


def check_explanation(
    explanation: str | None,
    label: int,
    left: Mapping[str, object],
    right: Mapping[str, object],
    *,
    min_chars: int,
    max_chars: int,
    min_grounding: float,
) -> Verdict:
    if explanation is None or not explanation.strip():
        return Verdict("invalid", "empty: no explanation", None)
    text = explanation.strip()
    grounding = grounding_score(text, left, right)
    if len(text) < min_chars:
        return Verdict("invalid", f"too_short: {len(text)} < {min_chars} characters", grounding)
    if len(text) > max_chars:
        return Verdict("invalid", f"too_long: {len(text)} > {max_chars} characters", grounding)
    said = stance(text)
    if said != 0 and said != (1 if label == 1 else -1):
        return Verdict("invalid", "contradicts_label: the explanation argues the other label", grounding)
    if grounding is not None and grounding < min_grounding:
        return Verdict("invalid", f"ungrounded: grounding {grounding:.2f} < {min_grounding}", grounding)
    return Verdict("ok", None, grounding)
