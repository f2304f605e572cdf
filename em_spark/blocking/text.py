"""A record's attributes as normalized words and q-grams, two ways: Spark SQL column
expressions (MinHash, sorted neighbourhood, the embedding text) and Arrow kernels over
batches of records (the top-k and code-token blockers' terms, in one pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column
from pyspark.sql import functions as F

# Anything that is not a letter or a digit separates words ("TL-SG1005P" -> tl, sg1005p);
# Java's regex and RE2 read it alike.
_SEPARATORS = r"[^\p{L}\p{N}]+"


def normalize(text: Column) -> Column:
    """Lower case, separators collapsed to one space, trimmed."""
    return F.trim(F.regexp_replace(F.lower(text), _SEPARATORS, " "))


def attribute_values(attributes: Column, names: list[str] | None, exclude: list[str]) -> Column:
    """The chosen attribute values as array<string> (missing values as empty strings).

    ``names=None`` takes every attribute except ``exclude``, in the map's (ingest) order.
    """
    if names is not None:
        chosen = [n for n in names if n not in exclude]
        return F.array(*[F.coalesce(attributes.getItem(n), F.lit("")) for n in chosen])
    kept = F.map_filter(attributes, lambda k, _v: ~k.isin(*exclude)) if exclude else attributes
    return F.transform(F.map_values(kept), lambda v: F.coalesce(v, F.lit("")))


def words(values: Column, max_per_value: int | None = None) -> Column:
    """Normalized word tokens of every value, the first ``max_per_value`` of each."""

    def split(v: Column) -> Column:
        tokens = F.filter(F.split(normalize(v), " "), lambda t: F.length(t) > 0)
        return F.slice(tokens, 1, max_per_value) if max_per_value else tokens

    return F.flatten(F.transform(values, split))


def qgrams(tokens: Column, q: int) -> Column:
    """Character q-grams of each token padded with spaces (" ab" "abc" ... "yz ").

    Padding makes the first and last characters count, like scikit-learn's ``char_wb``.
    """

    def grams(t: Column) -> Column:
        padded = F.concat(F.lit(" "), t, F.lit(" "))
        n = F.greatest(F.length(padded) - q + 1, F.lit(1))
        return F.transform(F.sequence(F.lit(1), n), lambda i: F.substring(padded, i, q))

    return F.flatten(F.transform(tokens, grams))


# --- The same words in Arrow: the top-k and code-token blockers' one tokenizing pass ----
#
# Measured on 1M synthetic records (2 cores): the SQL words above, whose lambdas Spark
# evaluates row by row, took 17-19 s to tokenize, Arrow's vectorized kernels 4.5-7.6 s.
# RE2 reads the same separator class; Arrow lower-cases character by character (Java maps
# a few letters, such as the dotted capital I, to two characters).


@dataclass(frozen=True)
class ValueWords:
    """Every normalized word of the chosen values of a batch of records: ``rows``, the
    record (row of the batch) of each word, ``positions``, its place in its value."""

    rows: np.ndarray
    positions: np.ndarray
    words: pa.Array

    def take(self, keep: np.ndarray) -> "ValueWords":
        return ValueWords(self.rows[keep], self.positions[keep], self.words.filter(pa.array(keep)))


def value_words(attributes: pa.Array, names: list[str] | None, exclude: list[str]) -> ValueWords:
    """The words of each record's chosen attribute values (``attributes``: a map array),
    as :func:`words` makes them: ``names=None`` takes every attribute but ``exclude``."""
    offsets = attributes.offsets.to_numpy()
    start, end = int(offsets[0]), int(offsets[-1])
    keys, values = attributes.keys.slice(start, end - start), attributes.items.slice(start, end - start)
    entry_rows = np.repeat(np.arange(len(attributes)), np.diff(offsets))
    if names is not None:
        # In the order of ``names``, as the SQL words come.
        rank = pc.index_in(keys, pa.array([n for n in names if n not in exclude], pa.string()))
        at = np.flatnonzero(pc.is_valid(rank).to_numpy(zero_copy_only=False))
        at = at[np.lexsort((rank.to_numpy(zero_copy_only=False)[at], entry_rows[at]))]
        values, entry_rows = values.take(pa.array(at)), entry_rows[at]
    elif exclude:
        mask = pc.invert(pc.is_in(keys, pa.array(exclude, pa.string()))).to_numpy(zero_copy_only=False)
        values, entry_rows = values.filter(pa.array(mask)), entry_rows[mask]
    normalized = pc.utf8_trim(pc.replace_substring_regex(pc.utf8_lower(pc.fill_null(values, "")), _SEPARATORS, " "), " ")
    split = pc.split_pattern(normalized, " ")
    lengths = pc.list_value_length(split).to_numpy(zero_copy_only=False)
    words = pc.list_flatten(split)
    firsts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    found = ValueWords(np.repeat(entry_rows, lengths), np.arange(len(words)) - firsts, words)
    # An empty value splits into one empty word.
    return found.take(pc.greater(pc.utf8_length(words), 0).to_numpy(zero_copy_only=False))


def value_qgrams(words: ValueWords, q: int) -> tuple[np.ndarray, pa.Array]:
    """(row, q-gram) of the words' character q-grams, padded and ordered as :func:`qgrams`
    makes them."""
    padded = pc.binary_join_element_wise(" ", words.words, " ", "")
    counts = np.maximum(pc.utf8_length(padded).to_numpy(zero_copy_only=False) - q + 1, 1)
    word_at, grams = [], []
    for start in range(int(counts.max(initial=0))):
        at = np.flatnonzero(counts > start)
        word_at.append(at)
        grams.append(pc.utf8_slice_codeunits(padded.take(pa.array(at)), start, start + q))
    if not word_at:
        return np.zeros(0, dtype=np.int64), pa.array([], pa.string())
    # Word by word, each word's grams from its first character on.
    order = np.argsort(np.concatenate(word_at), kind="stable")
    return words.rows[np.concatenate(word_at)[order]], pa.concat_arrays(grams).take(pa.array(order))


def has_digit(words: pa.Array) -> np.ndarray:
    """A word with a digit in it: model numbers, codes, phone parts."""
    return pc.match_substring_regex(words, r"\p{N}").to_numpy(zero_copy_only=False)


def prefixed(prefix: str, terms: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(prefix, terms, "")


def term_hashes(terms: pa.Array) -> np.ndarray:
    """A 64-bit hash of each term, the same in every process (pandas' fixed-key
    SipHash), computed once per distinct term of the array."""
    import pandas as pd

    encoded = pc.dictionary_encode(terms)
    distinct = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    hashes = pd.util.hash_array(distinct, categorize=False).view(np.int64)
    return hashes[encoded.indices.to_numpy(zero_copy_only=False)]


def term_lists(rows: np.ndarray, values: pa.Array | np.ndarray, n_rows: int) -> pa.ListArray:
    """``values`` as one list per row; ``rows`` ascend."""
    offsets = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values if isinstance(values, pa.Array) else pa.array(values))
