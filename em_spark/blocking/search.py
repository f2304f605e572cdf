"""Exact top-k search in Spark: each query record's k best candidate records by a score.

The candidate side is collected once and turned into an index (scipy / numpy matrices)
in the driver; the index travels to the tasks in the closure of a narrow ``mapInArrow``
over the queries (PySpark broadcasts a large closure), and each task scores a slice of
queries at a time against it and keeps the k best of each. No (query, candidate) row is
ever formed in Spark and nothing is shuffled. Every task holds the whole index, so the
candidate side must fit a worker's memory: about 12 bytes per term that another record
holds too, 0.12 GB for 500k records of 20 such terms.

Two scorers: sparse TF-IDF vectors (term ids and weights; ties go to the smaller
candidate id, so the result does not depend on partitioning) and dense embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

from em_spark.blocking.prepared import RecordNumbers

# bound: on a query's k-th pair, the quantized score that ranked it (see TopKBounds); -1
# on the other rows.
SCHEMA = "q bigint, c bigint, score double, bound bigint"
# Queries scored at once in a task: bounds the memory of the score matrix.
QUERY_SLICE = 8192
# Rounded so that summation order cannot reorder near-ties between runs.
SCORE_DECIMALS = 9


class Scorer(Protocol):
    """``index`` builds, from the candidate side (a table with column ``rid``) and each of
    its rows' record number, what ``top_k`` scores queries (their record ``numbers``)
    against: (query row, candidate number, score, bound) of the k best candidates of each
    query row; never the query itself when ``same_side``."""

    def index(self, candidates: pa.Table, numbers: np.ndarray) -> Any: ...

    def top_k(
        self, index: Any, queries: pa.Table, numbers: np.ndarray, same_side: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...


def search(
    queries: DataFrame, candidates: DataFrame, scorer: Scorer, numbers: RecordNumbers, sides: tuple[str, str]
) -> DataFrame:
    """(q: query, c: candidate, score, bound): each query's k best candidates by
    ``scorer``, the records as their ``numbers``; ``sides``: (the queries' side, the
    candidates' side). When both are the same table (dedupe), a record is never its own
    candidate."""
    table = candidates.toArrow()
    index = scorer.index(table, numbers.of(sides[1], table.column("rid"))) if table.num_rows else None

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if index is None or not batch.num_rows:
                continue
            query_numbers = numbers.of(sides[0], batch.column("rid"))
            for start in range(0, batch.num_rows, QUERY_SLICE):
                part = pa.Table.from_batches([batch.slice(start, QUERY_SLICE)])
                part_numbers = query_numbers[start : start + QUERY_SLICE]
                rows, found, scores, bounds = scorer.top_k(index, part, part_numbers, sides[0] == sides[1])
                yield pa.RecordBatch.from_arrays(
                    [pa.array(part_numbers[rows]), pa.array(found), pa.array(scores, pa.float64()), pa.array(bounds)],
                    names=["q", "c", "score", "bound"],
                )

    return queries.mapInArrow(run, SCHEMA)


def flat_lists(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(row pointer, values) of a list column."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy()
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return indptr, pc.list_flatten(arr).to_numpy()


def term_matrix(table: pa.Table, terms: str, weights: str, n_terms: int):
    """The rows of ``table`` as a CSR matrix (row x term id), from its list columns of term
    ids (in order within a row: em_spark.blocking.vectors) and weights."""
    from scipy import sparse

    indptr, ids = flat_lists(table.column(terms))
    values = flat_lists(table.column(weights))[1].astype(np.float64)
    return sparse.csr_matrix((values, ids, indptr), shape=(table.num_rows, max(n_terms, 1)))


def quantized(scores: np.ndarray) -> np.ndarray:
    """Scores as integers at ``SCORE_DECIMALS``, what the ranking compares."""
    return np.round(np.clip(scores, 0.0, 1.0) * 10**SCORE_DECIMALS).astype(np.int64)


# The pre-selection of _best_per_row: 2**BAND_BITS bands of quantized scores.
BAND_BITS = 6
BAND_SHIFT = 24  # 10**SCORE_DECIMALS >> BAND_SHIFT < 2**BAND_BITS


def _best_per_row(rows: np.ndarray, cols: np.ndarray, ranked: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indexes of the k best entries of each row: highest ``ranked``, then smallest
    column; which of them is its row's k-th). ``rows`` ascend.

    Only the entries in or above the band of scores (equal bands, ``BAND_SHIFT``) that
    holds a row's k-th entry are sorted: most entries share a common term and score low, so this
    sorts a fraction of them (a sort of every entry took 60% of the search)."""
    band = ranked >> BAND_SHIFT
    n_rows = int(rows[-1]) + 1 if len(rows) else 0
    per_band = np.bincount((rows << BAND_BITS) | band, minlength=n_rows << BAND_BITS).reshape(n_rows, 1 << BAND_BITS)
    # Per row, the entries in each band or above it; the lowest band still needed.
    at_or_above = np.cumsum(per_band[:, ::-1], axis=1)[:, ::-1]
    lowest = np.maximum((at_or_above >= k).sum(axis=1) - 1, 0)
    chosen = np.flatnonzero(band >= lowest[rows])
    # Column order first; then a stable sort on (row, score) keeps ties in it.
    chosen = chosen[np.argsort(cols[chosen])]
    order = chosen[np.argsort((rows[chosen] << 30) | (10**SCORE_DECIMALS - ranked[chosen]), kind="stable")]
    first = np.ones(len(order), dtype=bool)
    first[1:] = rows[order][1:] != rows[order][:-1]
    rank = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    kept = rank < k
    return order[kept], rank[kept] == k - 1


@dataclass(frozen=True)
class TopKBounds:
    """What a search from the other side kept, per record number of this search's
    candidates: the quantized pairing score of its k-th pair (-1: it kept fewer than k,
    so every pair it shares a term with) and that pair's partner number. A pair ranks
    within a record's k best when its score is above the k-th's, or equal with a partner
    number no larger. Both sides sum the same products in the same term order, so a pair's
    score is the same bits from either side."""

    score: np.ndarray
    partner: np.ndarray

    @classmethod
    def of(cls, kth: pa.Table, n: int) -> "TopKBounds":
        """From a search's k-th pairs (q, c, bound) over queries numbered below ``n``."""
        score, partner = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
        at = kth.column("q").to_numpy()
        score[at], partner[at] = kth.column("bound").to_numpy(), kth.column("c").to_numpy()
        return cls(score, partner)

    def hold(self, records: np.ndarray, partners: np.ndarray, ranked: np.ndarray) -> np.ndarray:
        """Whether each (record, partner) pair with quantized pairing score ``ranked`` is
        among the record's k best."""
        bound = self.score[records]
        return (bound < 0) | (ranked > bound) | ((ranked == bound) & (partners <= self.partner[records]))


@dataclass(frozen=True)
class SparseIndex:
    """The candidate side of the TF-IDF search: its terms that pair records as a
    (term x candidate number) matrix, its capped terms as (candidate number x term)."""

    pairing: Any
    capped: Any


@dataclass(frozen=True)
class SparseScorer:
    """Top-k by the dot product of TF-IDF vectors (columns ``rid``, t, w, ct, cw of
    em_spark.blocking.vectors, term ids below ``n_terms``), with each kept pair's full
    score: the pairing terms find it, the capped terms add to it. Given ``found``, the
    bounds of a search from the other side, a pair that search kept is left out here."""

    k: int
    n_terms: int
    found: TopKBounds | None = None

    def index(self, candidates: pa.Table, numbers: np.ndarray) -> SparseIndex:
        from scipy import sparse

        n = int(numbers.max()) + 1

        def entries(terms: str, weights: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            indptr, ids = flat_lists(candidates.column(terms))
            values = flat_lists(candidates.column(weights))[1].astype(np.float64)
            return numbers[np.repeat(np.arange(len(numbers)), np.diff(indptr))], ids, values

        # Columns and rows by record number: a tie goes to the smaller one, the smaller id.
        rows, ids, values = entries("t", "w")
        pairing = sparse.csr_matrix((values, (ids, rows)), shape=(max(self.n_terms, 1), n))
        rows, ids, values = entries("ct", "cw")
        return SparseIndex(pairing, sparse.csr_matrix((values, (rows, ids)), shape=(n, max(self.n_terms, 1))))

    def top_k(
        self, index: SparseIndex, queries: pa.Table, numbers: np.ndarray, same_side: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        sims = term_matrix(queries, "t", "w", self.n_terms) @ index.pairing
        rows = np.repeat(np.arange(queries.num_rows), np.diff(sims.indptr))
        cols, found = sims.indices.astype(np.int64), sims.data
        if same_side:
            keep = cols != numbers[rows]
            rows, cols, found = rows[keep], cols[keep], found[keep]
        ranked = quantized(found)
        best, kth = _best_per_row(rows, cols, ranked, self.k)
        rows, cols, found, ranked = rows[best], cols[best], found[best], ranked[best]
        bounds = np.where(kth, ranked, -1)
        if self.found is not None:
            new = ~self.found.hold(cols, numbers[rows], ranked)
            rows, cols, found, bounds = rows[new], cols[new], found[new], bounds[new]
        capped = term_matrix(queries, "ct", "cw", self.n_terms)
        rest = np.asarray(capped[rows].multiply(index.capped[cols]).sum(axis=1)).ravel()
        return rows, cols, found + rest, bounds


def pair_scores(batches: Iterator[pa.RecordBatch], n_terms: int) -> Iterator[pa.RecordBatch]:
    """left_id, right_id, flags, score: the dot product of the pair's two TF-IDF vectors
    (columns t, w, ct, cw after ``l_`` and ``r_``), for ``mapInArrow``."""
    for batch in batches:
        table = pa.Table.from_batches([batch])
        score = np.zeros(table.num_rows)
        for terms, weights in (("t", "w"), ("ct", "cw")):
            left = term_matrix(table, "l_" + terms, "l_" + weights, n_terms)
            right = term_matrix(table, "r_" + terms, "r_" + weights, n_terms)
            score += np.asarray(left.multiply(right).sum(axis=1)).ravel()
        out = table.select(["left_id", "right_id", "flags"]).append_column("score", pa.array(score, pa.float64()))
        yield from out.to_batches()


@dataclass(frozen=True)
class DenseScorer:
    """Top-k by the dot product of dense vectors (column ``vec``, normalized: cosine)."""

    k: int

    def index(self, candidates: pa.Table, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the vectors as a matrix, the record number of each of its rows, ascending)."""
        matrix = flat_lists(candidates.column("vec"))[1].astype(np.float32).reshape(candidates.num_rows, -1)
        order = np.argsort(numbers)
        return matrix[order], numbers[order]

    def top_k(
        self, index: tuple[np.ndarray, np.ndarray], queries: pa.Table, numbers: np.ndarray, same_side: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Bounds: none (-1): the pairs of dense searches are grouped, not bounded."""
        matrix, candidates = index
        sims = flat_lists(queries.column("vec"))[1].astype(np.float32).reshape(queries.num_rows, -1) @ matrix.T
        if same_side:
            at = np.minimum(np.searchsorted(candidates, numbers), len(candidates) - 1)
            mine = np.flatnonzero(candidates[at] == numbers)
            sims[mine, at[mine]] = -np.inf
        k = min(self.k, matrix.shape[0])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        rows = np.repeat(np.arange(queries.num_rows), k)
        cols = top.reshape(-1)
        values = sims[rows, cols]
        keep = np.isfinite(values)
        return rows[keep], candidates[cols[keep]], values[keep].astype(np.float64), np.full(int(keep.sum()), -1)
