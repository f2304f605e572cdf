"""The records' TF-IDF vectors, for the top-k search and the pair scores.

A record's terms are its words ("w:"), optionally its character q-grams ("q:"), and its
pair terms ("p:"): the pairs of its ``m`` rarest capped words, so that a record whose
words are all common still holds rare terms ("sony|black"). Weights are sublinear TF-IDF,
``(1 + ln tf) * (ln((N + 1) / (df + 1)) + 1)``.

No row per record and term crosses a shuffle (the counts are aggregated in each task
first, and each vector is built where its record is):
1. the terms and their hashes, per record (one Arrow pass, :func:`record_terms`);
2. one aggregation over each record's distinct terms counts the records holding each
   term, per source: the document frequencies, and the top-k blocker's key statistics;
3. a narrow pass (numpy, given the capped words' frequencies) names each record's pair
   terms, and a second aggregation counts them;
4. a narrow pass (numpy, given every frequency of 2 or more) builds each record's vector:
   its terms as term ids (a term's position among the sorted hashes of the terms held by
   two records or more), with their normalized weights, so that the search and the pair
   scores index sparse matrices by them directly.

The frequencies reach the tasks in the pass's closure, which PySpark broadcasts when it is
large: 16 bytes per term held by two records or more. A term missing there is held by one
record.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from em_spark.blocking import text
from em_spark.blocking.prepared import LEFT, RIGHT, Prepared
from em_spark.blocking.search import flat_lists
from em_spark.config import TokenBlockConf, TopKConf
from em_spark.errors import ConfigError

# Term space codes of the vectors: words, q-grams, pair terms.
SPACES = "wqp"
# How much the pair-term cosine counts in a score, relative to a word space.
PAIR_SPACE_WEIGHT = 0.1

VECTOR_SCHEMA = (
    "source string, rid string, is_new boolean, t array<int>, w array<double>, ct array<int>, cw array<double>"
)


@dataclass
class RecordVectors:
    """``vectors``: source, rid, is_new, and the record's vector over the terms another
    record holds too, as term ids (below ``n_terms``) and normalized weights, in term id
    order: t, w for the terms that pair records (held by at most the cap's limit), ct, cw
    for the capped ones, which only add to a pair's score. A dot product of two vectors is
    the weighted mean of the cosines of the term spaces. ``counts``: key (term), records,
    n_left, n_right."""

    vectors: DataFrame
    counts: DataFrame
    n_terms: int


def key_counts(keys: DataFrame, *more: Column) -> DataFrame:
    """key, records, n_left, n_right (and the ``more`` aggregates): the records holding
    each key (rows source, key, one per record and key), per source."""
    n_left = F.sum(F.when(F.col("source") == LEFT, 1).otherwise(0))
    n_right = F.sum(F.when(F.col("source") == RIGHT, 1).otherwise(0))
    return keys.groupBy("key").agg(
        F.count("*").alias("records"), n_left.alias("n_left"), n_right.alias("n_right"), *more
    )


def space_scales(conf: TopKConf) -> np.ndarray:
    """Per space (``SPACES``), the scale of its unit vectors that makes a dot product the
    weighted mean of the cosines: 1 per word or q-gram space, ``PAIR_SPACE_WEIGHT`` for the
    pair terms."""
    # Pair terms are there to create pairs, not to rank them: at full weight their few,
    # high-idf terms outweighed the words and cost 4-9 PC points on the DeepMatcher sets.
    shares = {"w": 1.0, "q": 1.0 if conf.qgram else 0.0, "p": PAIR_SPACE_WEIGHT if conf.pair_terms >= 2 else 0.0}
    total = sum(shares.values())
    return np.array([(shares[name] / total) ** 0.5 for name in SPACES])


def record_terms(rec: DataFrame, topk: TopKConf, exclude: list[str], tokens: TokenBlockConf | None) -> DataFrame:
    """``rec`` (source, rid, is_new, attributes) with each record's top-k terms as lists:
    tw, hw (words and their hashes), tq, hq (q-grams, where ``topk.qgram``); and, given
    ``tokens``, tk: the key blocker's distinct keys. One Arrow pass over the records."""
    spaces = [("w", "tw", "hw")] + ([("q", "tq", "hq")] if topk.qgram else [])
    types = {"source": "string", "rid": "string", "is_new": "boolean"}
    types |= {name: kind for _, t, h in spaces for name, kind in ((t, "array<string>"), (h, "array<bigint>"))}
    types |= {"tk": "array<string>"} if tokens else {}
    if tokens and not (tokens.words or tokens.qgram):
        raise ConfigError("block.tokens: enable words or set qgram > 0 (or disable the blocker)")

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            attributes, n = batch.column("attributes"), batch.num_rows
            found = text.value_words(attributes, topk.attributes, exclude)
            words = found.take(found.positions < topk.max_words_per_attribute)
            columns = [batch.column("source"), batch.column("rid"), batch.column("is_new")]
            for space, _, _ in spaces:
                rows, terms = (words.rows, words.words) if space == "w" else text.value_qgrams(words, topk.qgram)
                terms = text.prefixed(f"{space}:", terms)
                columns += [text.term_lists(rows, terms, n), text.term_lists(rows, text.term_hashes(terms), n)]
            if tokens:
                columns.append(_token_key_lists(attributes, found if tokens.attributes == topk.attributes else None, tokens, exclude))
            yield pa.RecordBatch.from_arrays(columns, names=list(types))

    return rec.select("source", "rid", "is_new", "attributes").mapInArrow(run, ", ".join(f"{c} {t}" for c, t in types.items()))


def _token_key_lists(
    attributes: pa.Array, found: text.ValueWords | None, conf: TokenBlockConf, exclude: list[str]
) -> pa.ListArray:
    """Each record's distinct key blocker keys: "w:" words (of ``min_length`` characters
    or more; with a digit, if ``codes_only``) and "q:" q-grams of every word."""
    if found is None:
        found = text.value_words(attributes, conf.attributes, exclude)
    rows, keys = [], []
    if conf.words:
        keep = pc.greater_equal(pc.utf8_length(found.words), conf.min_length).to_numpy(zero_copy_only=False)
        if conf.codes_only:
            keep &= text.has_digit(found.words)
        chosen = found.take(keep)
        rows.append(chosen.rows)
        keys.append(text.prefixed("w:", chosen.words))
    if conf.qgram:
        gram_rows, grams = text.value_qgrams(found, conf.qgram)
        rows.append(gram_rows)
        keys.append(text.prefixed("q:", grams))
    all_rows, all_keys = np.concatenate(rows), pa.concat_arrays(keys)
    hashes = text.term_hashes(all_keys)
    order = np.lexsort((hashes, all_rows))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (all_rows[order][1:] != all_rows[order][:-1]) | (hashes[order][1:] != hashes[order][:-1])
    kept = order[first]
    return text.term_lists(all_rows[kept], all_keys.take(pa.array(kept)), len(attributes))


def record_vectors(prep: Prepared, conf: TopKConf, terms: DataFrame, limit: int) -> RecordVectors:
    """Every record's vector over its ``terms`` (:func:`record_terms`, materialized: read
    three times); ``limit``: the records a term may be held by before it is capped."""
    named = [(t, h) for t, h in (("tw", "hw"), ("tq", "hq")) if t in terms.columns]
    distinct = F.array_distinct(
        F.arrays_zip(F.concat(*[F.col(t) for t, _ in named]).alias("key"), F.concat(*[F.col(h) for _, h in named]).alias("h"))
    )
    held = terms.select("source", F.explode(distinct).alias("term")).select("source", "term.key", "term.h")
    counts = key_counts(held, F.min("h").alias("h")).localCheckpoint()
    pairs = conf.pair_terms if conf.pair_terms >= 2 else 0
    frequent = Frequencies.collect(counts, limit + 1)
    if pairs:
        named_pairs = terms.mapInArrow(
            lambda batches: _pair_term_rows(batches, frequent, limit, pairs), "source string, h bigint, key string"
        )
        counts = counts.unionByName(key_counts(named_pairs, F.min("h").alias("h")).localCheckpoint())
    shared = Frequencies.collect(counts, 2)
    n_records, scales = prep.n_records, space_scales(conf)
    vectors = terms.mapInArrow(
        lambda batches: _vector_rows(batches, shared, n_records, limit, pairs, scales), VECTOR_SCHEMA
    )
    return RecordVectors(vectors, counts.drop("h"), len(shared.keys))


@dataclass(frozen=True)
class Frequencies:
    """Document frequencies: sorted term hashes and the records holding each."""

    keys: np.ndarray
    records: np.ndarray

    @classmethod
    def collect(cls, counts: DataFrame, at_least: int) -> "Frequencies":
        """The terms of ``counts`` (h, records) held by ``at_least`` records or more."""
        table = counts.where(F.col("records") >= at_least).select("h", "records").toArrow()
        keys = table.column("h").to_numpy().astype(np.int64)
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], table.column("records").to_numpy().astype(np.int64)[order])

    def of(self, hashes: np.ndarray) -> np.ndarray:
        """Each hash's frequency; 1 for a term not held by ``at_least`` records (the
        caller knows what that means: held by one record, or not capped)."""
        return self.lookup(hashes)[1]

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(term id: the position among ``keys``, where it is there; frequency, as ``of``)."""
        if not len(self.keys):
            return np.zeros(len(hashes), dtype=np.int64), np.ones(len(hashes), dtype=np.int64)
        at = np.minimum(np.searchsorted(self.keys, hashes), len(self.keys) - 1)
        return at, np.where(self.keys[at] == hashes, self.records[at], 1)


def _idf(df: np.ndarray, n_records: int) -> np.ndarray:
    return np.log((n_records + 1.0) / (df + 1.0)) + 1.0


def _entries(batch: pa.RecordBatch, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row, hash, tf, index of its first entry in the flattened list) of each distinct
    term of each row of list column ``column``, sorted by row, then hash."""
    indptr, hashes = flat_lists(batch.column(column))
    rows = np.repeat(np.arange(batch.num_rows), np.diff(indptr))
    order = np.lexsort((hashes, rows))
    r, h = rows[order], hashes[order]
    first = np.ones(len(r), dtype=bool)
    first[1:] = (r[1:] != r[:-1]) | (h[1:] != h[:-1])
    starts = np.flatnonzero(first)
    tf = np.diff(np.append(starts, len(r)))
    return r[starts], h[starts], tf, order[starts]


def _pair_terms(
    rows: np.ndarray, hashes: np.ndarray, df: np.ndarray, limit: int, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row, key, entry a, entry b) of each pair term: the unordered pairs of each row's
    ``m`` rarest words held by more than ``limit`` records (fewest records first, then the
    smaller hash). Entries sorted by row (``_entries``)."""
    capped = np.flatnonzero(df > limit)
    chosen = capped[np.lexsort((hashes[capped], df[capped], rows[capped]))]
    r = rows[chosen]
    first = np.ones(len(r), dtype=bool)
    first[1:] = r[1:] != r[:-1]
    rank = np.arange(len(r)) - np.maximum.accumulate(np.where(first, np.arange(len(r)), 0))
    out_rows, a, b = [], [], []
    for j in range(1, m):
        # A row's ranks are consecutive: its entry of rank i sits j - i places earlier.
        at = np.flatnonzero(rank == j)
        for i in range(j):
            out_rows.append(r[at])
            a.append(chosen[at - (j - i)])
            b.append(chosen[at])
    if not out_rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    a_idx, b_idx = np.concatenate(a), np.concatenate(b)
    return np.concatenate(out_rows), _pair_key(hashes[a_idx], hashes[b_idx]), a_idx, b_idx


def _pair_key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A 64-bit hash of the unordered pair of term hashes (splitmix64's finalizer)."""
    lo = np.minimum(a, b).astype(np.uint64)
    hi = np.maximum(a, b).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = lo * np.uint64(0x9E3779B97F4A7C15) ^ hi
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x.view(np.int64)


def _pair_term_rows(
    batches: Iterator[pa.RecordBatch], frequent: Frequencies, limit: int, m: int
) -> Iterator[pa.RecordBatch]:
    """source, h, key ("p:a|b", the words in name order): one row per record and pair
    term, for the pair terms' counts."""
    for batch in batches:
        rows, hashes, _, first = _entries(batch, "hw")
        pair_rows, keys, a, b = _pair_terms(rows, hashes, frequent.of(hashes), limit, m)
        words = pc.list_flatten(batch.column("tw"))
        word_a, word_b = words.take(pa.array(first[a])), words.take(pa.array(first[b]))
        in_order = pc.less(word_a, word_b)
        lower = pc.utf8_replace_slice(pc.if_else(in_order, word_a, word_b), 0, 2, "p:")
        upper = pc.utf8_slice_codeunits(pc.if_else(in_order, word_b, word_a), 2)
        yield pa.RecordBatch.from_arrays(
            [batch.column("source").take(pa.array(pair_rows)), pa.array(keys, pa.int64()),
             pc.binary_join_element_wise(lower, upper, "|")],
            names=["source", "h", "key"],
        )


def _vector_rows(
    batches: Iterator[pa.RecordBatch], shared: Frequencies, n_records: int, limit: int, m: int, scales: np.ndarray
) -> Iterator[pa.RecordBatch]:
    """Each record's vector (``VECTOR_SCHEMA``) from its term hashes (hw, hq)."""
    for batch in batches:
        n = batch.num_rows
        # Per space: (row, term id, frequency, space code, raw weight) of each term.
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]] = []
        for space, column in ((0, "hw"), (1, "hq")):
            if column not in batch.schema.names:
                continue
            rows, hashes, tf, _ = _entries(batch, column)
            ids, df = shared.lookup(hashes)
            parts.append((rows, ids, df, space, (1.0 + np.log(tf)) * _idf(df, n_records)))
            if space == 0 and m:
                pair_rows, keys, _, _ = _pair_terms(rows, hashes, df, limit, m)
                pair_ids, pair_df = shared.lookup(keys)
                parts.append((pair_rows, pair_ids, pair_df, 2, _idf(pair_df, n_records)))
        rows, ids, df = (np.concatenate([p[i] for p in parts]) for i in range(3))
        space = np.concatenate([np.full(len(p[0]), p[3], dtype=np.int64) for p in parts])
        weights = np.concatenate([p[4] for p in parts])
        # Unit length per space over all its terms (those of one record included), times
        # the space's scale.
        norms = np.zeros((n, len(SPACES)))
        for code in range(len(SPACES)):
            at = space == code
            norms[:, code] = np.sqrt(np.bincount(rows[at], weights=weights[at] ** 2, minlength=n))
        weights = weights / norms[rows, space] * scales[space]
        columns = [batch.column("source"), batch.column("rid"), batch.column("is_new")]
        for kept in (np.flatnonzero((df >= 2) & (df <= limit)), np.flatnonzero(df > limit)):
            kept = kept[np.lexsort((ids[kept], rows[kept]))]
            offsets = np.zeros(n + 1, dtype=np.int32)
            np.cumsum(np.bincount(rows[kept], minlength=n), out=offsets[1:])
            columns += [
                pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids[kept], pa.int32())),
                pa.ListArray.from_arrays(pa.array(offsets), pa.array(weights[kept], pa.float64())),
            ]
        yield pa.RecordBatch.from_arrays(columns, names=["source", "rid", "is_new", "t", "w", "ct", "cw"])
