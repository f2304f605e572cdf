"""The ``rules`` teacher: the offline default. It is NOT a language model.

It stands in for an LLM where none is available (tests, the demo, offline benchmarks):
it compares the two records attribute by attribute — identifiers and model numbers
shared or conflicting, names' shared and distinguishing words, numeric gaps (prices,
years), missing values — and writes a short explanation that argues for the GOLD label,
quoting values exactly as they appear in the records (so grounding is ~1 by
construction).

What it cannot do: use world knowledge (that "ipod" is an Apple product, that two
spellings name one restaurant), read meaning that is not in shared tokens or numbers,
or tell why a pair that looks identical is labeled a non-match; then it says so rather
than inventing a reason. Its explanations are therefore shallower and more uniform than
an LLM's; the label-free ``--predict`` mode uses a similarity heuristic, not judgement.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rapidfuzz import fuzz

from em_spark.serialize import ordered_attributes
from em_spark.teacher.base import Completion, TeachRequest
from em_spark.teacher.prompts import format_answer
from em_spark.values import clean_value

_SPLIT = re.compile(r"[\s,;()\[\]{}|]+")
_EDGE = re.compile(r"^[^\w]+|[^\w]+$")
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")
# Spec values with a unit are not model numbers ("32gb", "1080p", "200w").
_UNIT = re.compile(
    r"^\d+(?:\.\d+)?(?:gb|mb|tb|kb|w|mm|cm|m|in|inch|hz|khz|mhz|ghz|mp|p|k|x|v|mah|lb|lbs|oz|ft|g|kg|ml|l|"
    r"st|nd|rd|th|s|pc|pcs|pk|ch|bit|rpm|db|ohm|a)$"
)
STOP_WORDS = frozenset(
    "a an and the of for with in on to by from at or is are be as this that it its into than "
    "new black white silver inc co ltd corp llc - & / x".split()
)
_MAX_QUOTE_WORDS = 6


@dataclass
class _Evidence:
    shared_codes: list[str] = field(default_factory=list)
    left_codes: list[str] = field(default_factory=list)
    right_codes: list[str] = field(default_factory=list)
    agree: list[str] = field(default_factory=list)  # phrases for agreeing attributes
    conflict: list[str] = field(default_factory=list)  # phrases for conflicting attributes
    missing: list[str] = field(default_factory=list)
    similarity: float = 0.0  # whole-record token-set similarity, 0..100


def tokens(text: str) -> list[str]:
    out = []
    for raw in _SPLIT.split(text.lower()):
        token = _EDGE.sub("", raw)
        if token:
            out.append(token)
    return out


def compact_code(token: str) -> str:
    return re.sub(r"[-./]", "", token)


def _is_code(token: str) -> bool:
    compact = compact_code(token)
    has_digit = any(c.isdigit() for c in compact)
    has_alpha = any(c.isalpha() for c in compact)
    digits = sum(c.isdigit() for c in compact)
    if has_digit and has_alpha:
        return len(compact) >= 4 and digits >= 2 and not _UNIT.match(compact)
    # UPC / ISBN / part numbers, not prices ("910.91") or sizes ("10/100")
    return compact.isdigit() and len(compact) >= 5 and token.isdigit()


def identifier_codes(record: Mapping[str, object], names: Sequence[str]) -> dict[str, str]:
    """Identifier-like tokens: compact form -> the form first seen in the record."""
    found: dict[str, str] = {}
    for name in names:
        for token in tokens(clean_value(record.get(name))):
            if _is_code(token):
                found.setdefault(compact_code(token), token)
    return found


_QUOTE_MARKS = str.maketrans({'"': "'", "\u201c": "'", "\u201d": "'"})


def _quote(value: str) -> str:
    """The value's first words in double quotes; quote marks inside become ' (as the
    rationale checker normalizes them), so a quote never ends early."""
    words = value.split(" ")[:_MAX_QUOTE_WORDS]
    return '"' + " ".join(words).translate(_QUOTE_MARKS) + '"'


def parse_number(value: str) -> float | None:
    text = value.replace("$", "").replace("%", "").strip()
    match = _NUMBER.fullmatch(text.replace(",", "")) if text else None
    return float(match.group(0)) if match else None


def _compare_numbers(name: str, a: float, b: float, a_text: str, b_text: str, ev: _Evidence) -> None:
    gap = abs(a - b) / max(abs(a), abs(b), 1e-9)
    if gap <= 0.05:
        ev.agree.append(f"the {name} values agree ({a_text} vs {b_text})")
    elif gap <= 0.25:
        ev.conflict.append(f"the {name} values differ somewhat ({a_text} vs {b_text})")
    else:
        ev.conflict.append(f"the {name} values are far apart ({a_text} vs {b_text})")


def plural(name: str) -> str:
    """An attribute's name as the plural subject of a clause ("the titles share …"): a name
    already in -s stays ("authors", not "authorss"); -ss, -x, -z, -ch, -sh take -es; a
    consonant + y takes -ies."""
    lower = name.lower()
    if lower.endswith(("ss", "x", "z", "ch", "sh")):
        return name + "es"
    if lower.endswith("s"):
        return name
    if len(lower) > 1 and lower.endswith("y") and lower[-2] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


def _plural_subjects(names: Sequence[str]) -> dict[str, str]:
    """Each attribute's plural (:func:`plural`), unless two of them would read the same
    ("title" and "titles"): then every name + s, as distinct as the names themselves."""
    plurals = {name: plural(name) for name in names}
    spelled = [p.lower() for p in plurals.values()]
    others = {n.lower() for n in names}
    if len(set(spelled)) < len(spelled) or any(p.lower() in others - {n.lower()} for n, p in plurals.items()):
        return {name: name + "s" for name in names}
    return plurals


def _compare_text(name: str, names: str, a: str, b: str, ev: _Evidence) -> None:
    ta, tb = tokens(a), tokens(b)
    content_a = [t for t in dict.fromkeys(ta) if t not in STOP_WORDS]
    content_b = [t for t in dict.fromkeys(tb) if t not in STOP_WORDS]
    shared = [t for t in content_a if t in set(content_b)]
    only_a = [t for t in content_a if t not in set(content_b) and not _is_code(t)]
    only_b = [t for t in content_b if t not in set(content_a) and not _is_code(t)]
    score = fuzz.token_set_ratio(a.lower(), b.lower())
    if a.lower() == b.lower():
        ev.agree.append(f"the {name} is identical ({_quote(a)})")
    elif score >= 80 and shared:
        words = ", ".join(_quote(t) for t in sorted(shared, key=len, reverse=True)[:3])
        ev.agree.append(f"the {names} share {words}")
        if only_a and only_b:
            ev.conflict.append(f"the {names} differ in {_quote(only_a[0])} vs {_quote(only_b[0])}")
    elif shared:
        words = ", ".join(_quote(t) for t in sorted(shared, key=len, reverse=True)[:2])
        ev.agree.append(f"the {names} share only {words}")
        ev.conflict.append(f"the {names} otherwise differ ({_quote(a)} vs {_quote(b)})")
    else:
        ev.conflict.append(f"the {names} have nothing in common ({_quote(a)} vs {_quote(b)})")


def compare_records(
    left: Mapping[str, object], right: Mapping[str, object], order: Sequence[str] | None = None
) -> _Evidence:
    names = ordered_attributes(left, order) + [k for k in ordered_attributes(right, order) if k not in left]
    ev = _Evidence()
    left_codes, right_codes = identifier_codes(left, names), identifier_codes(right, names)
    ev.shared_codes = [left_codes[c] for c in left_codes if c in right_codes]
    ev.left_codes = [left_codes[c] for c in left_codes if c not in right_codes]
    ev.right_codes = [right_codes[c] for c in right_codes if c not in left_codes]
    subjects = _plural_subjects(names)
    for name in names:
        a, b = clean_value(left.get(name)), clean_value(right.get(name))
        if not a and not b:
            continue
        if not a or not b:
            ev.missing.append(f"{'A' if not a else 'B'} has no {name}")
            continue
        na, nb = parse_number(a), parse_number(b)
        if na is not None and nb is not None:
            _compare_numbers(name, na, nb, a, b, ev)
        else:
            _compare_text(name, subjects[name], a, b, ev)
    text_a = " ".join(clean_value(left.get(n)) for n in names).lower()
    text_b = " ".join(clean_value(right.get(n)) for n in names).lower()
    ev.similarity = fuzz.token_set_ratio(text_a, text_b)
    return ev


def _codes_phrase(codes: Sequence[str]) -> str:
    return ", ".join(f'"{c.translate(_QUOTE_MARKS)}"' for c in codes[:2])


def _sentence(parts: Sequence[str]) -> str:
    if not parts:
        return ""
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:]


def explain_pair(
    left: Mapping[str, object],
    right: Mapping[str, object],
    label: int,
    order: Sequence[str] | None = None,
    decided_by: str = "the label",
) -> str:
    """A short explanation of why ``left`` and ``right`` do (1) or do not (0) match.

    ``decided_by`` names what set ``label`` where the records alone cannot show it (the
    gold label when teaching; the matcher when explaining its verdict)."""
    ev = compare_records(left, right, order)
    if label == 1:
        reasons = []
        if ev.shared_codes:
            noun = "identifier" if len(ev.shared_codes) == 1 else "identifiers"
            reasons.append(f"both records carry the {noun} {_codes_phrase(ev.shared_codes)}")
        reasons += ev.agree[:2]
        concessions = []
        if ev.left_codes and ev.right_codes and not ev.shared_codes:
            concessions.append(f"the codes {_codes_phrase(ev.left_codes[:1])} and {_codes_phrase(ev.right_codes[:1])} are written differently")
        concessions += [c for c in ev.conflict if "far apart" in c or "differ somewhat" in c][:1]
        if not reasons:
            text = "The records share little text, but nothing in them rules out that they describe the same entity"
            if ev.missing:
                text += f" ({ev.missing[0]})"
        else:
            text = _sentence(reasons)
        if concessions:
            text += "; " + " and ".join(concessions) + ", which does not outweigh that"
        return text + ", so they refer to the same entity."
    reasons = []
    if ev.left_codes and ev.right_codes:
        reasons.append(f"the identifiers differ ({_codes_phrase(ev.left_codes[:1])} in A vs {_codes_phrase(ev.right_codes[:1])} in B)")
    reasons += [c for c in ev.conflict if "far apart" in c or "nothing in common" in c or "otherwise differ" in c][:2]
    reasons += [c for c in ev.conflict if c not in reasons][: max(0, 2 - len(reasons))]
    if not reasons:
        text = "The records look alike"
        if ev.agree:
            text += f" ({ev.agree[0]})"
        text += ", but nothing in these attributes confirms they are one entity"
        if ev.missing:
            text += f" ({ev.missing[0]})"
        return text + f", and {decided_by} says they are different entities."
    text = _sentence(reasons[:2])
    if len(reasons) > 1:  # two conflicts make the case; a concession would only add words
        return text + ", so they are different entities."
    if ev.shared_codes:
        text += f"; sharing {_codes_phrase(ev.shared_codes[:1])} is not enough"
    elif ev.agree and "share" in ev.agree[0]:
        text += f"; that {ev.agree[0]} is not enough"
    return text + ", so they are different entities."


def explanation_candidates(
    left: Mapping[str, object],
    right: Mapping[str, object],
    label: int,
    order: Sequence[str] | None = None,
    decided_by: str = "the matcher's score",
) -> list[str]:
    """Every explanation of ``label`` in this teacher's phrasing that is true of the pair:
    :func:`explain_pair`'s own, and each ordered choice of one or two of the pair's
    comparisons that argue for ``label``, with the conclusion. Decoding restricted
    to these (em_spark.student.constrained.ClauseConstraint) lets a student choose what to
    say and never say something false."""
    ev = compare_records(left, right, order)
    if label == 1:
        claims = list(ev.agree)
        if ev.shared_codes:
            noun = "identifier" if len(ev.shared_codes) == 1 else "identifiers"
            claims.insert(0, f"both records carry the {noun} {_codes_phrase(ev.shared_codes)}")
        ending = ", so they refer to the same entity."
    else:
        claims = list(ev.conflict)
        if ev.left_codes and ev.right_codes:
            claims.insert(0, f"the identifiers differ ({_codes_phrase(ev.left_codes[:1])} in A vs {_codes_phrase(ev.right_codes[:1])} in B)")
        ending = ", so they are different entities."
    out = [explain_pair(left, right, label, order, decided_by)]
    for first in claims:
        out.append(_sentence([first]) + ending)
        out += [_sentence([first, second]) + ending for second in claims if second != first]
    return list(dict.fromkeys(out))


def guess_label(left: Mapping[str, object], right: Mapping[str, object], order: Sequence[str] | None = None) -> int:
    """A similarity heuristic for ``--predict`` (no LLM): shared identifiers or near-equal text."""
    ev = compare_records(left, right, order)
    if ev.shared_codes:
        return 1
    if ev.left_codes and ev.right_codes:
        return 0
    return int(ev.similarity >= 85 and not any("far apart" in c for c in ev.conflict))


class RulesBackend:
    """The rules teacher behind the backend interface (answers in the prompt's JSON format)."""

    def __init__(self, order: Sequence[str] | None = None):
        self.order = list(order) if order is not None else None

    def complete(self, requests: Sequence[TeachRequest]) -> list[Completion]:
        out = []
        for request in requests:
            t0 = time.perf_counter()
            label = request.label if request.label is not None else guess_label(request.left, request.right, self.order)
            text = format_answer(label, explain_pair(request.left, request.right, label, self.order))
            out.append(Completion(text=text, latency_ms=(time.perf_counter() - t0) * 1000))
        return out
