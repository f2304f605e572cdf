"""Similarity features of a record pair (pure Python: rapidfuzz + numpy, no pyspark).

Features of a pair (left, right), both ``Mapping[str, object]`` records:

- per aligned attribute (the same name on both sides): character ratio, token-set and
  token-sort ratio, Jaro-Winkler, numeric relative difference (when both values are
  numbers), shared "code" tokens (tokens with a digit: model numbers, years); -1
  (:data:`MISSING`) where a side is empty or a feature does not apply, so the trees learn
  what missing means (a sentinel, not NaN: an all-NaN column breaks histogram binning);
- over the whole record text (every value, in attribute order): the same string scores,
  the Jaccard of tokens and of code tokens, and the length ratio.

Values are lower-cased and cut to :data:`MAX_CHARS` characters first: a 100 KB
description costs as much as a short one (rapidfuzz is quadratic in the worst case).

Read by the feature model (em_spark.features) and by the similarity hints of a
serialized pair (em_spark.serialize).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
from rapidfuzz import fuzz, process
from rapidfuzz.distance import JaroWinkler

from em_spark.values import clean_value

MAX_CHARS = 512
MISSING = -1.0

_TOKEN = re.compile(r"[a-z0-9]+(?:[.\-/][a-z0-9]+)*")
_NUMBER = re.compile(r"^[^0-9\-+.]*([-+]?\d+(?:[.,]\d+)?)")

# rapidfuzz scorers computed element-wise over aligned lists (process.cpdist, in C++).
_STRING_SCORERS = {
    "ratio": fuzz.ratio,
    "token_set": fuzz.token_set_ratio,
    "token_sort": fuzz.token_sort_ratio,
    "jaro_winkler": JaroWinkler.normalized_similarity,
}


def _text(value: object) -> str:
    return clean_value(value).lower()[:MAX_CHARS]


def _number(text: str) -> float | None:
    match = _NUMBER.match(text)
    if match is None:
        return None
    try:
        return float(match.group(1).replace(",", "."))
    except ValueError:  # pragma: no cover - the regex only matches numbers
        return None


def _numeric_difference(a: str, b: str) -> float:
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return math.nan
    scale = max(abs(x), abs(y))
    return 0.0 if scale == 0 else abs(x - y) / scale


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return math.nan
    return len(a & b) / len(a | b)


def _codes(tokens: set[str]) -> set[str]:
    return {t for t in tokens if any(c.isdigit() for c in t)}

def feature_names(attributes: Sequence[str]) -> list[str]:
    names = []
    for attr in attributes:
        names += [f"{attr}.{s}" for s in _STRING_SCORERS]
        names += [f"{attr}.num_diff", f"{attr}.code_jaccard"]
    names += [f"record.{s}" for s in _STRING_SCORERS]
    names += ["record.token_jaccard", "record.code_jaccard", "record.length_ratio"]
    return names


def _string_scores(lefts: list[str], rights: list[str]) -> np.ndarray:
    """(n, len(_STRING_SCORERS)) scores in [0, 1]; NaN (later MISSING) where a side is empty."""
    out = np.empty((len(lefts), len(_STRING_SCORERS)), dtype=np.float32)
    for j, scorer in enumerate(_STRING_SCORERS.values()):
        scores = process.cpdist(lefts, rights, scorer=scorer, dtype=np.float32, workers=1)
        out[:, j] = scores / 100.0 if scorer is not JaroWinkler.normalized_similarity else scores
    empty = np.fromiter((not a or not b for a, b in zip(lefts, rights)), bool, len(lefts))
    out[empty] = np.nan
    return out


def pair_features(
    lefts: Sequence[Mapping[str, object]],
    rights: Sequence[Mapping[str, object]],
    attributes: Sequence[str],
) -> np.ndarray:
    """The feature matrix (n pairs x ``len(feature_names(attributes))``), float32."""
    if len(lefts) != len(rights):
        raise ValueError(f"{len(lefts)} left records but {len(rights)} right records")
    n = len(lefts)
    columns: list[np.ndarray] = []
    record_l: list[list[str]] = [[] for _ in range(n)]
    record_r: list[list[str]] = [[] for _ in range(n)]
    for attr in attributes:
        a = [_text(rec.get(attr)) for rec in lefts]
        b = [_text(rec.get(attr)) for rec in rights]
        for i in range(n):
            record_l[i].append(a[i])
            record_r[i].append(b[i])
        columns.append(_string_scores(a, b))
        extra = np.empty((n, 2), dtype=np.float32)
        for i in range(n):
            extra[i, 0] = _numeric_difference(a[i], b[i])
            extra[i, 1] = _jaccard(_codes(set(_TOKEN.findall(a[i]))), _codes(set(_TOKEN.findall(b[i]))))
        columns.append(extra)
    whole_l = [" ".join(v for v in values if v)[:MAX_CHARS] for values in record_l]
    whole_r = [" ".join(v for v in values if v)[:MAX_CHARS] for values in record_r]
    columns.append(_string_scores(whole_l, whole_r))
    extra = np.empty((n, 3), dtype=np.float32)
    for i in range(n):
        ta, tb = set(_TOKEN.findall(whole_l[i])), set(_TOKEN.findall(whole_r[i]))
        extra[i, 0] = _jaccard(ta, tb)
        extra[i, 1] = _jaccard(_codes(ta), _codes(tb))
        la, lb = len(whole_l[i]), len(whole_r[i])
        extra[i, 2] = min(la, lb) / max(la, lb) if max(la, lb) else math.nan
    columns.append(extra)
    if not n:
        return np.empty((0, len(feature_names(attributes))), np.float32)
    matrix = np.hstack(columns)
    matrix[np.isnan(matrix)] = MISSING
    return matrix
