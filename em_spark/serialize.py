"""Pair serialization shared by the teacher and the student (no pyspark import).

A record becomes ``COL title VAL sony turntable COL price VAL 149.0`` in a stable
attribute order; a pair becomes ``Entity A: ... Entity B: ...``. Long values are cut per
attribute under a word budget (a cheap, tokenizer-free proxy for tokens), so one 100 KB
description cannot crowd out every other attribute.

With ``similarity_hints`` a pair starts with ``SIM title r9 s10 c- n- price r8 s8 c10 n9
all ...``: a few of the similarity features (em_spark.similarity) of each aligned attribute
and of the whole records, in tenths, each word led by its feature's letter. A student
trained from random weights does not learn to compare two records token by token from a
few thousand pairs (measured: docs/STUDENT.md); with the hints it reads the comparison and
learns what it means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from em_spark.errors import InputError
from em_spark.similarity import MISSING, feature_names, pair_features
from em_spark.values import clean_value  # also imported from here (em_spark.match_model)

HINT_WORD = "SIM"


@dataclass(frozen=True)
class SerializerSettings:
    """Stored with the model, so scoring serializes exactly as training did."""

    max_words_per_attribute: int = 48
    max_words_per_record: int = 96
    # Prefix the pair with similarity hints (module docstring).
    similarity_hints: bool = False

    def to_dict(self) -> dict[str, int | bool]:
        return {
            "max_words_per_attribute": self.max_words_per_attribute,
            "max_words_per_record": self.max_words_per_record,
            "similarity_hints": self.similarity_hints,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "SerializerSettings":
        """Settings as saved with a model (:meth:`to_dict`).

        Models saved before the interleaved layout and the feature score hint were removed
        carry ``pair_layout`` and ``feature_score_hint``: dropped where they hold the value
        every model now has (sequential, no score hint); a model that used either is
        refused, since it would read pairs laid out otherwise than it was trained on.
        """
        known = {"max_words_per_attribute", "max_words_per_record", "similarity_hints"}
        for key, value in data.items():
            if key in known or _REMOVED.get(key, object()) == value:
                continue
            if key in _REMOVED:
                raise InputError(
                    f"this model was trained with {key}={value!r}, an option since removed "
                    "(docs/STUDENT.md); retrain it"
                )
            raise InputError(f"unknown serializer setting {key!r} in the saved model")
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


# Settings of earlier versions, with the value at which they changed nothing.
_REMOVED: dict[str, object] = {"pair_layout": "sequential", "feature_score_hint": False}


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


# The features (em_spark.similarity) the similarity hints show: per attribute and
# for the whole record. Chosen by how well a gradient-boosting model on them, in tenths,
# matches the test pairs of four DeepMatcher sets (docs/STUDENT.md): these 4 + 4 keep
# most of what all features carry, in a third of the tokens.
HINT_ATTRIBUTE_FEATURES = {"ratio": "r", "token_set": "s", "code_jaccard": "c", "num_diff": "n"}
HINT_RECORD_FEATURES = {"token_set": "s", "token_sort": "o", "token_jaccard": "j", "code_jaccard": "c"}
HINT_LETTERS = sorted({*HINT_ATTRIBUTE_FEATURES.values(), *HINT_RECORD_FEATURES.values()})
# Every hint word ("r9", "s10", "c-"): one tokenizer piece each (em_spark.student.presets).
HINT_VOCABULARY = sorted({f"{letter}{v}" for letter in HINT_LETTERS for v in [*map(str, range(11)), "-"]})


def similarity_hints(left: Mapping[str, object], right: Mapping[str, object], attributes: Sequence[str]) -> str:
    """``title r9 s10 c- n- ... all s9 o9 j8 c-``: hint features in tenths (0 = unlike,
    10 = alike), each word naming its feature by a letter, so that one token says both.

    ``-`` where a side is empty or the feature does not apply; a numeric difference d is
    shown as the similarity 1 - d.
    """
    values = dict(zip(feature_names(attributes), pair_features([left], [right], attributes)[0]))

    def word(name: str, letter: str) -> str:
        value = float(values[name])
        if value == MISSING:
            return f"{letter}-"
        similarity = 1.0 - min(value, 1.0) if name.endswith(".num_diff") else value
        return f"{letter}{round(10 * similarity)}"

    parts = []
    for attr in attributes:
        parts += [attr] + [word(f"{attr}.{f}", letter) for f, letter in HINT_ATTRIBUTE_FEATURES.items()]
    return " ".join(parts + ["all"] + [word(f"record.{f}", letter) for f, letter in HINT_RECORD_FEATURES.items()])


def serialize_pair(
    left: Mapping[str, object],
    right: Mapping[str, object],
    order: Sequence[str] | None = None,
    settings: SerializerSettings = SerializerSettings(),
) -> str:
    names = ordered_attributes(left, order)
    names += [n for n in ordered_attributes(right, order) if n not in set(names)]
    # Hints go first so that truncation to the model's input length never cuts them.
    prefix = ""
    if settings.similarity_hints:
        prefix = f"{HINT_WORD} {similarity_hints(left, right, names)} "
    return (
        f"{prefix}Entity A: {serialize_record(left, order, settings)} "
        f"Entity B: {serialize_record(right, order, settings)}"
    )
