"""Pair serialization shared by the teacher and the student (no pyspark import).

A record becomes ``COL title VAL sony turntable COL price VAL 149.0`` in a stable
attribute order; a pair becomes ``Entity A: ... Entity B: ...``. Long values are cut per
attribute under a word budget (a cheap, tokenizer-free proxy for tokens), so one 100 KB
description cannot crowd out every other attribute.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SerializerSettings:
    """Stored with the model, so scoring serializes exactly as training did."""

    max_words_per_attribute: int = 48
    max_words_per_record: int = 96

    def to_dict(self) -> dict[str, int]:
        return {
            "max_words_per_attribute": self.max_words_per_attribute,
            "max_words_per_record": self.max_words_per_record,
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


def serialize_record(
    record: Mapping[str, object],
    order: Sequence[str] | None = None,
    settings: SerializerSettings = SerializerSettings(),
) -> str:
    names = ordered_attributes(record, order)
    words = [clean_value(record[n]).split(" ")[: settings.max_words_per_attribute] for n in names]
    words = [[] if w == [""] else w for w in words]
    words = _fit_budget(words, settings.max_words_per_record)
    return " ".join(f"COL {n} VAL {' '.join(w)}".rstrip() for n, w in zip(names, words))


def serialize_pair(
    left: Mapping[str, object],
    right: Mapping[str, object],
    order: Sequence[str] | None = None,
    settings: SerializerSettings = SerializerSettings(),
) -> str:
    return (
        f"Entity A: {serialize_record(left, order, settings)} "
        f"Entity B: {serialize_record(right, order, settings)}"
    )
