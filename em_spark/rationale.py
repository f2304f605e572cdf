"""The rationale checker: is a written reason true of its two records? (no Spark, no torch)

A rationale is a claim about two records that a person will check against them. For one
rationale, its pair and the verdict it explains, :func:`check_rationale` reports pass or
fail and why:

- ``quote``: every quoted span occurs in the records (after :func:`normalize`, the
  serializer's whitespace cleaning plus lower case); where a clause names an attribute
  ("the name is identical ("…")"), in that attribute;
- ``claim``: each claim in the rules teacher's phrasing holds on the pair — "identical",
  "share …", "differ in … vs …", "nothing in common", number comparisons ("agree",
  "differ somewhat", "far apart"), identifiers shared or differing, "A has no …" —
  decided by the functions the rules teacher decides them with
  (:mod:`em_spark.teacher.rules`);
- ``verdict``: the conclusion does not argue the other verdict (:func:`stance`);
- ``repeat``: no clause and no long word sequence repeats (a decoding loop);
- ``cut``: the text ends as a sentence ends, not at a token limit.

The teacher's own validation (:mod:`em_spark.teacher.validate`) and scoring use this one
checker, so an LLM's explanations and the student's rationales are held to the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from em_spark.serialize import ordered_attributes
from em_spark.teacher import rules
from em_spark.values import clean_value

CHECKS = ("quote", "claim", "verdict", "repeat", "cut")

QUOTED = re.compile(r"[\"\u201c\u201d]([^\"\u201c\u201d]*)[\"\u201c\u201d]")
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
_CLAUSE_SPLIT = re.compile(r"\s*(?:[,;.]\s+|\s+and\s+|\s+but\s+|\s+so\s+)\s*")
_WORD = re.compile(r"\S+")
_ENDS = (".", "!", "?")
_LOOP_NGRAM = 5  # words; a span this long said three times is a loop, not style


@dataclass(frozen=True)
class RationaleCheck:
    """The outcome for one rationale: ``ok``, and the first failing check with its reason."""

    ok: bool
    check: str | None = None  # one of CHECKS
    reason: str | None = None

    def __str__(self) -> str:
        return "ok" if self.ok else f"{self.check}: {self.reason}"


_PASS = RationaleCheck(True)


def normalize(text: object) -> str:
    """What quotes are compared on: the serializer's cleaning, lower case, one kind of quote."""
    return clean_value(text).lower().replace('"', "'").replace("\u201c", "'").replace("\u201d", "'")


def stance(text: str) -> int:
    """+1 if the text's own words call the pair a match, -1 if not, 0 if neither (quoted
    text is data and never counts)."""
    own = QUOTED.sub(" ", text)
    negative = bool(_NEGATIVE.search(own))
    positive = bool(_POSITIVE.search(_NEGATIVE.sub(" ", own)))
    if negative and not positive:
        return -1
    if positive and not negative:
        return 1
    return 0


class _Pair:
    """The two records as the claims are decided on them."""

    def __init__(self, left: Mapping[str, object], right: Mapping[str, object], order: Sequence[str] | None):
        self.left, self.right = left, right
        names = ordered_attributes(left, order) + [k for k in ordered_attributes(right, order) if k not in left]
        # Longest first, so "brand name" wins over "name" when a clause is read.
        self.names = sorted(names, key=len, reverse=True)
        self.values = {
            side: {n: normalize(rec.get(n)) for n in names} for side, rec in (("a", left), ("b", right))
        }
        self.all_values = [v for side in self.values.values() for v in side.values() if v]
        self.codes = {
            side: {rules.compact_code(normalize(code)) for code in rules.identifier_codes(rec, names)}
            for side, rec in (("a", left), ("b", right))
        }

    def value(self, side: str, name: str) -> str:
        return self.values[side].get(name, "")

    def words(self, side: str, name: str) -> set[str]:
        return set(rules.tokens(self.value(side, name)))

    def attributes(self, text: str) -> list[str]:
        """The attributes a clause fragment may name: ``"addresses"`` is the plural of
        ``address`` (the teacher's :func:`rules.plural`) or an attribute of that name; both
        are tried. The bare ``+ s`` of releases before 2026-12-07 (``"authorss"``) still reads."""
        text = text.strip().lower()
        return [n for n in self.names if text in (n.lower(), rules.plural(n).lower(), n.lower() + "s")]

    def has_code(self, side: str, code: str) -> bool:
        return rules.compact_code(normalize(code)) in self.codes[side]


def _quotes(text: str) -> list[str]:
    return [normalize(q) for q in QUOTED.findall(text)]


def _number_gap(a: str, b: str) -> float | None:
    na, nb = rules.parse_number(a), rules.parse_number(b)
    if na is None or nb is None:
        return None
    return abs(na - nb) / max(abs(na), abs(nb), 1e-9)


# Each claim: a pattern in the rules teacher's phrasing and a test of it on the pair,
# returning None when it holds, else why not.
def _identical(pair: _Pair, m: re.Match, name: str) -> str | None:
    a, b = pair.value("a", name), pair.value("b", name)
    if not a or a != b:
        return f"the {name} values are not identical"
    if any(q not in a for q in _quotes(m["rest"])):
        return f"a quote is not in the {name}"
    return None


def _share(pair: _Pair, m: re.Match, name: str) -> str | None:
    quotes = _quotes(m["rest"])
    if not quotes:
        return "nothing quoted as shared"
    for q in quotes:
        if not all(w in pair.words(side, name) for side in "ab" for w in rules.tokens(q)) or not q:
            return f"{q!r} is not in both {rules.plural(name)}"
    return None


def _differ_in(pair: _Pair, m: re.Match, name: str) -> str | None:
    a, b = normalize(m["a"]), normalize(m["b"])
    if not a or a not in pair.words("a", name) or a in pair.words("b", name):
        return f"{a!r} is not a word of A's {name} alone"
    if not b or b not in pair.words("b", name) or b in pair.words("a", name):
        return f"{b!r} is not a word of B's {name} alone"
    return None


def _sides_quoted(pair: _Pair, name: str, a: str, b: str) -> str | None:
    if not a or a not in pair.value("a", name):
        return f"{a!r} is not in A's {name}"
    if not b or b not in pair.value("b", name):
        return f"{b!r} is not in B's {name}"
    return None


def _otherwise_differ(pair: _Pair, m: re.Match, name: str) -> str | None:
    if pair.value("a", name) == pair.value("b", name):
        return f"the {name} values are identical"
    return _sides_quoted(pair, name, normalize(m["a"]), normalize(m["b"]))


def _nothing_in_common(pair: _Pair, m: re.Match, name: str) -> str | None:
    stop = rules.STOP_WORDS
    shared = (pair.words("a", name) - stop) & (pair.words("b", name) - stop)
    if shared:
        return f"the {rules.plural(name)} share {sorted(shared)[0]!r}"
    return _sides_quoted(pair, name, normalize(m["a"]), normalize(m["b"]))


_GAP_WORDS = {"agree": (0.0, 0.05), "differ somewhat": (0.05, 0.25), "are far apart": (0.25, float("inf"))}


def _numbers(pair: _Pair, m: re.Match, name: str) -> str | None:
    a, b = normalize(m["a"]), normalize(m["b"])
    if a != pair.value("a", name) or b != pair.value("b", name):
        return f"the {name} values are not {a!r} and {b!r}"
    gap = _number_gap(a, b)
    low, high = _GAP_WORDS[m["how"]]
    if gap is None or not (gap == low == 0.0 or low < gap <= high):
        return f"the {name} values do not {m['how'].replace('are ', 'lie ')}"
    return None


def _shared_codes(pair: _Pair, m: re.Match, name: str) -> str | None:
    for code in _quotes(m["rest"]):
        if not (pair.has_code("a", code) and pair.has_code("b", code)):
            return f"{code!r} is not an identifier of both records"
    return None if _quotes(m["rest"]) else "no identifier quoted"


def _codes_differ(pair: _Pair, m: re.Match, name: str) -> str | None:
    a, b = normalize(m["a"]), normalize(m["b"])
    if not pair.has_code("a", a) or pair.has_code("b", a):
        return f"{a!r} is not an identifier of A alone"
    if not pair.has_code("b", b) or pair.has_code("a", b):
        return f"{b!r} is not an identifier of B alone"
    return None


def _has_no(pair: _Pair, m: re.Match, name: str) -> str | None:
    side = m["side"].lower()
    if pair.value(side, name):
        return f"{side.upper()} has a {name}"
    return None


_Q = r'"[^"]*"'
_CLAIMS = [
    (re.compile(rf"\bthe (?P<attr>[\w .\-]+?) is identical (?P<rest>\(\s*{_Q}\s*\))", re.I), _identical),
    (re.compile(rf"\bthe (?P<attr>[\w .\-]+?) share (?:only )?(?P<rest>{_Q}(?:\s*,\s*{_Q})*)", re.I), _share),
    (re.compile(rf"\bthe (?P<attr>[\w .\-]+?) differ in \"(?P<a>[^\"]*)\" vs \"(?P<b>[^\"]*)\"", re.I), _differ_in),
    (re.compile(rf"\bthe (?P<attr>[\w .\-]+?) otherwise differ \(\"(?P<a>[^\"]*)\" vs \"(?P<b>[^\"]*)\"\)", re.I), _otherwise_differ),
    (re.compile(rf"\bthe (?P<attr>[\w .\-]+?) have nothing in common \(\"(?P<a>[^\"]*)\" vs \"(?P<b>[^\"]*)\"\)", re.I), _nothing_in_common),
    (re.compile(r"\bthe (?P<attr>[\w .\-]+?) values (?P<how>agree|differ somewhat|are far apart) \((?P<a>[^()]*?) vs (?P<b>[^()]*?)\)", re.I), _numbers),
    (re.compile(rf"\b(?:both records carry the identifiers?|sharing) (?P<rest>{_Q}(?:\s*,\s*{_Q})*)", re.I), _shared_codes),
    (re.compile(r"\bthe identifiers differ \(\"(?P<a>[^\"]*)\" in A vs \"(?P<b>[^\"]*)\" in B\)", re.I), _codes_differ),
    (re.compile(r"\bthe codes \"(?P<a>[^\"]*)\" and \"(?P<b>[^\"]*)\" are written differently", re.I), _codes_differ),
    (re.compile(r"\b(?P<side>A|B) has no (?P<attr>[\w .\-]+?)(?=[,;.)]|\s+and\b|\s+but\b|\s+so\b|$)"), _has_no),
]


def _repeats(text: str) -> str | None:
    # Quoted values are data: a value that says "salt and pepper" twice is no loop.
    text = QUOTED.sub('"…"', text)
    clauses = [c.strip().lower() for c in _CLAUSE_SPLIT.split(text) if len(c.split()) >= 3]
    seen: set[str] = set()
    for clause in clauses:
        if clause in seen:
            return f"the clause {clause[:60]!r} repeats"
        seen.add(clause)
    words = _WORD.findall(text.lower())
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - _LOOP_NGRAM + 1):
        gram = tuple(words[i : i + _LOOP_NGRAM])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= 3:
            return f"{' '.join(gram)!r} is said three times"
    return None


def rationale_failures(
    text: str | None,
    verdict: str,
    left: Mapping[str, object],
    right: Mapping[str, object],
    order: Sequence[str] | None = None,
    *,
    truncated: bool = False,
) -> list[RationaleCheck]:
    """Every check that fails, at most one per check, in the order of :data:`CHECKS`."""
    body = (text or "").strip()
    if not body:
        return [RationaleCheck(False, "cut", "empty")]
    failed: list[RationaleCheck] = []
    pair = _Pair(left, right, order)
    for quote in _quotes(body):
        if quote and not any(quote in value for value in pair.all_values):
            failed.append(RationaleCheck(False, "quote", f"{quote[:60]!r} is in neither record"))
            break
    claim = _false_claim(pair, body)
    if claim is not None:
        failed.append(RationaleCheck(False, "claim", claim))
    said = stance(body)
    if said != 0 and said != (1 if verdict == "match" else -1):
        failed.append(RationaleCheck(False, "verdict", f"the conclusion argues the other verdict ({verdict} given)"))
    looped = _repeats(body)
    if looped:
        failed.append(RationaleCheck(False, "repeat", looped))
    if truncated or not body.endswith(_ENDS):
        failed.append(RationaleCheck(False, "cut", "the text stops before its end (token limit)"))
    return failed


def _false_claim(pair: _Pair, body: str) -> str | None:
    for pattern, holds in _CLAIMS:
        for found in pattern.finditer(body):
            names = pair.attributes(found["attr"]) if "attr" in pattern.groupindex else [""]
            if not names:
                return f"{found.group(0)[:80]!r}: no attribute {found['attr']!r}"
            whys = [holds(pair, found, name) for name in names]
            if all(why is not None for why in whys):
                return f"{found.group(0)[:80]!r}: {whys[0]}"
    return None


def check_rationale(
    text: str | None,
    verdict: str,
    left: Mapping[str, object],
    right: Mapping[str, object],
    order: Sequence[str] | None = None,
    *,
    truncated: bool = False,
) -> RationaleCheck:
    """Check one rationale for the verdict ``match`` / ``no_match`` of (left, right): pass,
    or the first failing check and why. ``truncated``: generation stopped at its token
    limit rather than at its end."""
    failed = rationale_failures(text, verdict, left, right, order, truncated=truncated)
    return failed[0] if failed else _PASS
