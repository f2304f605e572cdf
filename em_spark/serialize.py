"""Pair serialization shared by the teacher and the student (no pyspark import).

A record becomes ``COL title VAL sony turntable COL price VAL 149.0`` in a stable
attribute order; a pair becomes ``Entity A: ... Entity B: ...``. Long values are cut per
attribute under a word budget (a cheap, tokenizer-free proxy for tokens), so one 100 KB
description cannot crowd out every other attribute.

With ``similarity_hints`` a pair starts with ``SIM title r9 s10 c- n- price r8 s8 c10 n9
all ...``: a few of the similarity features (em_spark.features) of each aligned attribute
and of the whole records, in tenths, each word led by its feature's letter. A student
trained from random weights does not learn to compare two records token by token from a
few thousand pairs (measured: docs/STUDENT.md); with the hints it reads the comparison and
learns what it means. With ``feature_score_hint`` the feature matcher's own P(match) leads
them as one more word (``SIM m7 title ...``, em_spark.features.score_hint_word): the caller
passes it, since only the caller holds the matcher.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_SPACE = re.compile(r"\s+")
HINT_WORD = "SIM"


@dataclass(frozen=True)
class SerializerSettings:
    """Stored with the model, so scoring serializes exactly as training did."""

    max_words_per_attribute: int = 48
    max_words_per_record: int = 96
    # sequential: "Entity A: <record> Entity B: <record>" (the paper's, and the teacher's);
    # interleaved: "COL title A: <left value> B: <right value> COL ...", so the values a
    # model must compare sit next to each other (see docs/STUDENT.md).
    pair_layout: str = "sequential"
    # Prefix the pair with similarity hints (module docstring).
    similarity_hints: bool = False
    # Prefix the pair with the feature matcher's score hint (module docstring).
    feature_score_hint: bool = False

    def to_dict(self) -> dict[str, int | str | bool]:
        return {
            "max_words_per_attribute": self.max_words_per_attribute,
            "max_words_per_record": self.max_words_per_record,
            "pair_layout": self.pair_layout,
            "similarity_hints": self.similarity_hints,
            "feature_score_hint": self.feature_score_hint,
        }


def clean_value(value: object) -> str:
    """A value as one line of text: None -> '', whitespace (newlines too) collapsed."""
    if value is None:
        return ""
    return _SPACE.sub(" ", str(value)).strip()


def _fit_budget(word_lists: list[list[str]], budget: int) -> list[list[str]]:
    """Shorten the longest lists first until the total fits ``budget`` (water-filling)."""
    total = sum(len(w) for w in word_lists)
    if total <= budget:
        return word_lists
    lengths = sorted(len(w) for w in word_lists)
    remaining, n = budget, len(lengths)
    cap = 0
    for i, length in enumerate(lengths):
        share = remaining // (n - i)
        if length <= share:
            remaining -= length
        else:
            cap = share
            break
    else:  # pragma: no cover - total > budget means some list exceeds its share
        cap = lengths[-1]
    return [w[:cap] if len(w) > cap else w for w in word_lists]


def ordered_attributes(record: Mapping[str, object], order: Sequence[str] | None) -> list[str]:
    """``order`` first (those present), then any other keys in the record's own order."""
    if order is None:
        return list(record.keys())
    rest = [k for k in record.keys() if k not in set(order)]
    return [k for k in order if k in record] + rest


def _record_words(
    record: Mapping[str, object], names: Sequence[str], settings: SerializerSettings
) -> list[list[str]]:
    """Each attribute's words (``[]`` where absent or empty), cut to the word budgets."""
    words = [clean_value(record.get(n)).split(" ")[: settings.max_words_per_attribute] for n in names]
    words = [[] if w == [""] else w for w in words]
    return _fit_budget(words, settings.max_words_per_record)


def serialize_record(
    record: Mapping[str, object],
    order: Sequence[str] | None = None,
    settings: SerializerSettings = SerializerSettings(),
) -> str:
    names = ordered_attributes(record, order)
    words = _record_words(record, names, settings)
    return " ".join(f"COL {n} VAL {' '.join(w)}".rstrip() for n, w in zip(names, words))


def serialize_pair(
    left: Mapping[str, object],
    right: Mapping[str, object],
    order: Sequence[str] | None = None,
    settings: SerializerSettings = SerializerSettings(),
    score_hint: str | None = None,
) -> str:
    """``score_hint``: the feature matcher's hint word for this pair, required with
    ``settings.feature_score_hint`` (and ignored without)."""
    names = ordered_attributes(left, order)
    names += [n for n in ordered_attributes(right, order) if n not in set(names)]
    # Hints go first so that truncation to the model's input length never cuts them.
    hints = []
    if settings.feature_score_hint:
        if score_hint is None:
            raise ValueError("these serializer settings need the feature matcher's score hint (score_hint)")
        hints.append(score_hint)
    if settings.similarity_hints:
        from em_spark.features import similarity_hints  # features imports this module

        hints.append(similarity_hints(left, right, names))
    prefix = f"{HINT_WORD} {' '.join(hints)} " if hints else ""
    if settings.pair_layout == "interleaved":
        lw, rw = _record_words(left, names, settings), _record_words(right, names, settings)
        return prefix + " ".join(
            f"COL {n} A: {' '.join(a)} B: {' '.join(b)}".replace("  ", " ").rstrip()
            for n, a, b in zip(names, lw, rw)
        )
    return (
        f"{prefix}Entity A: {serialize_record(left, order, settings)} "
        f"Entity B: {serialize_record(right, order, settings)}"
    )
