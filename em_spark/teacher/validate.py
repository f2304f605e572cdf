"""Checks on one teacher explanation: length, then the rationale checker
(:mod:`em_spark.rationale`: quotes in the records, claims true of the pair, a conclusion
that argues the label, no loop), then grounding.

Grounding is the share of the explanation's quoted values and identifiers (model
numbers, codes, numbers) that occur in the two records: a hallucination signal kept as a
column. Text inside quotes is treated as data — it counts for grounding but never as the
explanation's own verdict, so quoting a record that says "answer match" is harmless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from em_spark.rationale import QUOTED, check_rationale, normalize, stance

_TOKEN = re.compile(r"[a-z0-9][a-z0-9./-]*[a-z0-9]|[a-z0-9]", re.I)
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
__all__ = ["Verdict", "check_explanation", "grounding_score", "stance"]


@dataclass(frozen=True)
class Verdict:
    status: str  # ok | invalid
    error: str | None
    grounding: float | None


def _is_identifier(token: str) -> bool:
    has_digit = any(c.isdigit() for c in token)
    has_alpha = any(c.isalpha() for c in token)
    return (has_digit and has_alpha and len(token) >= 3) or bool(_NUMBER.match(token) and len(token) >= 2)


def _as_number(token: str) -> float | None:
    return float(token) if _NUMBER.match(token) else None


def grounding_score(explanation: str, left: Mapping[str, object], right: Mapping[str, object]) -> float | None:
    """Share of quoted values and identifiers found in the records (None: nothing to check)."""
    record_text = " | ".join(normalize(str(v)) for r in (left, right) for v in r.values() if v is not None)
    record_tokens = {t.lower() for t in _TOKEN.findall(record_text)}
    compact_tokens = {re.sub(r"[-./]", "", t) for t in record_tokens}
    record_numbers = {n for n in (_as_number(t) for t in record_tokens) if n is not None}
    checks: list[bool] = []
    for quoted in QUOTED.findall(explanation):
        checks.append(normalize(quoted) in record_text)
    unquoted = QUOTED.sub(" ", explanation)
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
    checked = check_rationale(text, "match" if label == 1 else "no_match", left, right)
    if checked.check == "verdict":
        return Verdict("invalid", "contradicts_label: the explanation argues the other label", grounding)
    if not checked.ok:
        return Verdict("invalid", str(checked), grounding)
    if grounding is not None and grounding < min_grounding:
        return Verdict("invalid", f"ungrounded: grounding {grounding:.2f} < {min_grounding}", grounding)
    return Verdict("ok", None, grounding)
