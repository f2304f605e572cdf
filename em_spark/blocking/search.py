"""Exact top-k search in Spark: each query record's k best candidate records by a score.

Queries are split into groups; each group meets a copy of the candidate side in
``cogroup().applyInArrow``, where numpy and scipy score a slice of queries at a time and
keep the k best of each. The copies cost ``groups`` times the candidate side in the
shuffle, and no (query, candidate) row is ever formed in Spark: on two cores this is
several times faster than joining term postings and ranking the pairs in SQL.

Two scorers: sparse TF-IDF vectors (term hashes and weights; ties go to the smaller
candidate id, so the result does not depend on partitioning) and dense embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

SCHEMA = "rid_l string, rid_r string, score double"
# Queries scored at once in a task: bounds the memory of the score matrix.
QUERY_SLICE = 8192
# Rounded so that summation order cannot reorder near-ties between runs.
SCORE_DECIMALS = 9

Scorer = Callable[[pa.Table, pa.Table], pa.Table]


def search(queries: DataFrame, candidates: DataFrame, groups: int, scorer: Scorer) -> DataFrame:
    """(rid_l: query, rid_r: candidate, score) from ``scorer`` run on each query group
    against the whole candidate side."""
    q = queries.withColumn("g", F.pmod(F.xxhash64("rid"), F.lit(groups)))
    # Fresh column ids: queries and candidates may be the same DataFrame (dedupe).
    c = candidates.select(*[F.col(name).alias(name) for name in candidates.columns])
    copies = c.crossJoin(q.sparkSession.range(groups).select(F.col("id").alias("g")))
    return q.groupBy("g").cogroup(copies.groupBy("g")).applyInArrow(scorer, SCHEMA)


def _empty() -> pa.Table:
    return pa.table({"rid_l": pa.array([], pa.string()), "rid_r": pa.array([], pa.string()),
                     "score": pa.array([], pa.float64())})


def flat_lists(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(row pointer, values) of a list column."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy()
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return indptr, pc.list_flatten(arr).to_numpy()


@dataclass(frozen=True)
class TermSpaces:
    """How a record's raw TF-IDF weights become its vector: divided by the length of their
    term space, times the space's scale (``scales[code]``), so that a dot product is a
    weighted mean of the cosines. Terms held by more than ``limit`` records do not pair
    records, they only add to the score of a pair found through the others."""

    scales: tuple[float, ...]
    limit: int

    def vectors(self, table: pa.Table, prefix: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(row, term hash, normalized weight, pairs records?) of the terms of the rows of
        ``table`` (list columns h, w, df, space, norms, each name after ``prefix``)."""
        indptr, hashes = flat_lists(table.column(prefix + "h"))
        weights = flat_lists(table.column(prefix + "w"))[1].astype(np.float64)
        held = flat_lists(table.column(prefix + "df"))[1]
        space = flat_lists(table.column(prefix + "space"))[1].astype(np.int64)
        rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        # Where a row's norms start (a row without a vector, from an outer join, has none).
        norms_at, norms = flat_lists(table.column(prefix + "norms"))
        normalized = weights / norms.astype(np.float64)[norms_at[rows] + space] * np.asarray(self.scales)[space]
        return rows, hashes, normalized, held <= self.limit


def _csr(rows: np.ndarray, hashes: np.ndarray, values: np.ndarray, n_rows: int, vocab: np.ndarray):
    """(row, term hash, value) entries as a CSR matrix over ``vocab`` (sorted hashes);
    terms outside it are dropped (the other side holds none of them)."""
    from scipy import sparse

    cols = np.searchsorted(vocab, hashes)
    cols[cols == len(vocab)] = 0
    known = vocab[cols] == hashes if len(vocab) else np.zeros(len(hashes), dtype=bool)
    matrix = sparse.csr_matrix((values[known], (rows[known], cols[known])), shape=(n_rows, max(len(vocab), 1)))
    matrix.sort_indices()
    return matrix


def _best_per_row(rows: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the k best entries of each row: highest score (at ``SCORE_DECIMALS``),
    then smallest column. The entries come in row, then column order (a CSR matrix with
    sorted indices), so one stable sort on (row, score) keeps ties in column order: a
    tenth of the time of sorting on the three keys."""
    scale = 10**SCORE_DECIMALS
    quantized = np.round(np.clip(scores, 0.0, 1.0) * scale).astype(np.int64)
    order = np.argsort((rows.astype(np.int64) << 30) | (scale - quantized), kind="stable")
    first = np.ones(len(order), dtype=bool)
    first[1:] = rows[order][1:] != rows[order][:-1]
    rank = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    return order[rank < k]


def sparse_scorer(k: int, exclude_self: bool, spaces: TermSpaces) -> Scorer:
    """Top-k by the dot product of TF-IDF vectors (columns ``rid`` and the raw weights of
    :class:`TermSpaces`), with each kept pair's full score: the pairing terms find it,
    the capped terms add to it."""

    def score(queries: pa.Table, candidates: pa.Table) -> pa.Table:
        if queries.num_rows == 0 or candidates.num_rows == 0:
            return _empty()
        # Candidates in id order: a tie goes to the smaller column, i.e. the smaller id.
        candidates = candidates.take(pc.sort_indices(candidates, sort_keys=[("rid", "ascending")]))
        c_ids = candidates.column("rid")
        rows, hashes, values, pairing = spaces.vectors(candidates)
        vocab, rest_vocab = np.unique(hashes[pairing]), np.unique(hashes[~pairing])
        n_c = candidates.num_rows
        c_pairing = _csr(rows[pairing], hashes[pairing], values[pairing], n_c, vocab).T.tocsr()
        c_rest = _csr(rows[~pairing], hashes[~pairing], values[~pairing], n_c, rest_vocab)
        if exclude_self:
            # Each query's own column (queries and candidates are the same records).
            own = np.searchsorted(c_ids.to_numpy(zero_copy_only=False), queries.column("rid").to_numpy(zero_copy_only=False))
        parts = []
        for start in range(0, queries.num_rows, QUERY_SLICE):
            part = queries.slice(start, QUERY_SLICE)
            q_rows, q_hashes, q_values, q_pairing = spaces.vectors(part)
            n_q = part.num_rows
            sims = _csr(q_rows[q_pairing], q_hashes[q_pairing], q_values[q_pairing], n_q, vocab) @ c_pairing
            sims.sort_indices()
            rows_ = np.repeat(np.arange(n_q), np.diff(sims.indptr))
            cols, found = sims.indices.astype(np.int64), sims.data
            if exclude_self:
                keep = cols != own[start + rows_]
                rows_, cols, found = rows_[keep], cols[keep], found[keep]
            best = _best_per_row(rows_, found, k)
            rows_, cols, found = rows_[best], cols[best], found[best]
            q_rest = _csr(q_rows[~q_pairing], q_hashes[~q_pairing], q_values[~q_pairing], n_q, rest_vocab)
            rest = np.asarray(q_rest[rows_].multiply(c_rest[cols]).sum(axis=1)).ravel()
            parts.append(pa.table({
                "rid_l": part.column("rid").take(pa.array(rows_)),
                "rid_r": c_ids.take(pa.array(cols)),
                "score": pa.array(found + rest, pa.float64()),
            }))
        return pa.concat_tables(parts) if parts else _empty()

    return score


def pair_scores(batches: Iterator[pa.RecordBatch], spaces: TermSpaces) -> Iterator[pa.RecordBatch]:
    """left_id, right_id, flags, score: the dot product of the pair's two TF-IDF
    vectors (the raw weights of :class:`TermSpaces`, columns after ``l_`` and ``r_``),
    for ``mapInArrow``."""
    for batch in batches:
        table = pa.Table.from_batches([batch])
        n = table.num_rows
        l_rows, l_hashes, l_values, _ = spaces.vectors(table, "l_")
        r_rows, r_hashes, r_values, _ = spaces.vectors(table, "r_")
        vocab = np.unique(l_hashes)
        dot = _csr(l_rows, l_hashes, l_values, n, vocab).multiply(_csr(r_rows, r_hashes, r_values, n, vocab))
        score = np.asarray(dot.sum(axis=1)).ravel()
        out = table.select(["left_id", "right_id", "flags"]).append_column("score", pa.array(score, pa.float64()))
        yield from out.to_batches()


def dense_scorer(k: int, exclude_self: bool) -> Scorer:
    """Top-k by the dot product of dense vectors (column ``vec``, normalized: cosine)."""

    def score(queries: pa.Table, candidates: pa.Table) -> pa.Table:
        if queries.num_rows == 0 or candidates.num_rows == 0:
            return _empty()
        c = flat_lists(candidates.column("vec"))[1].astype(np.float32).reshape(candidates.num_rows, -1)
        c_ids = candidates.column("rid")
        q_all = flat_lists(queries.column("vec"))[1].astype(np.float32).reshape(queries.num_rows, -1)
        kk = min(k, c.shape[0])
        parts = []
        for start in range(0, queries.num_rows, QUERY_SLICE):
            part = queries.slice(start, QUERY_SLICE)
            sims = q_all[start : start + part.num_rows] @ c.T
            if exclude_self:
                own = part.column("rid").to_numpy(zero_copy_only=False)[:, None] == c_ids.to_numpy(zero_copy_only=False)[None, :]
                sims[own] = -np.inf
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            rows = np.repeat(np.arange(part.num_rows), kk)
            cols = top.reshape(-1)
            values = sims[rows, cols]
            keep = np.isfinite(values)
            parts.append(pa.table({
                "rid_l": part.column("rid").take(pa.array(rows[keep])),
                "rid_r": c_ids.take(pa.array(cols[keep])),
                "score": pa.array(values[keep].astype(np.float64)),
            }))
        return pa.concat_tables(parts)

    return score
