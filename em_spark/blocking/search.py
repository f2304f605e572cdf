"""Exact top-k search in Spark: each query record's k best candidate records by a score.

The candidate side is collected once and turned into an index (scipy / numpy matrices)
in the driver; the index travels to the tasks in the closure of a narrow ``mapInArrow``
over the queries (PySpark broadcasts a large closure), and each task scores a slice of
queries at a time against it and keeps the k best of each. No (query, candidate) row is
ever formed in Spark and nothing is shuffled. Every task holds the whole index, so the
candidate side must fit a worker's memory: about 25 bytes per term that another record
holds too, 0.3 GB for 500k records of 20 such terms.

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

SCHEMA = "q bigint, c bigint, score double"
# Queries scored at once in a task: bounds the memory of the score matrix.
QUERY_SLICE = 8192
# Rounded so that summation order cannot reorder near-ties between runs.
SCORE_DECIMALS = 9


class Scorer(Protocol):
    """``index`` builds, from the candidate side (a table with column ``rid``) and each of
    its rows' record number, what ``top_k`` scores queries against: (query row, candidate
    number, score) of the k best candidates of each query row, never a query's ``own``
    number (-1: none)."""

    def index(self, candidates: pa.Table, numbers: np.ndarray) -> Any: ...

    def top_k(self, index: Any, queries: pa.Table, own: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def search(
    queries: DataFrame, candidates: DataFrame, scorer: Scorer, numbers: RecordNumbers, sides: tuple[str, str]
) -> DataFrame:
    """(q: query, c: candidate, score): each query's k best candidates by ``scorer``, the
    records as their ``numbers``; ``sides``: (the queries' side, the candidates' side).
    When both are the same table (dedupe), a record is never its own candidate."""
    table = candidates.toArrow()
    index = scorer.index(table, numbers.of(sides[1], table.column("rid"))) if table.num_rows else None

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if index is None or not batch.num_rows:
                continue
            query_numbers = numbers.of(sides[0], batch.column("rid"))
            own = query_numbers if sides[0] == sides[1] else None
            for start in range(0, batch.num_rows, QUERY_SLICE):
                part = pa.Table.from_batches([batch.slice(start, QUERY_SLICE)])
                part_own = None if own is None else own[start : start + QUERY_SLICE]
                rows, found, scores = scorer.top_k(index, part, part_own)
                yield pa.RecordBatch.from_arrays(
                    [pa.array(query_numbers[start + rows]), pa.array(found), pa.array(scores, pa.float64())],
                    names=["q", "c", "score"],
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
    score: the pairing terms find it, the capped terms add to it."""

    k: int
    n_terms: int

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
        pairing.sort_indices()
        rows, ids, values = entries("ct", "cw")
        return SparseIndex(pairing, sparse.csr_matrix((values, (rows, ids)), shape=(n, max(self.n_terms, 1))))

    def top_k(self, index: SparseIndex, queries: pa.Table, own: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_q = queries.num_rows
        sims = term_matrix(queries, "t", "w", self.n_terms) @ index.pairing
        sims.sort_indices()
        rows = np.repeat(np.arange(n_q), np.diff(sims.indptr))
        cols, found = sims.indices.astype(np.int64), sims.data
        if own is not None:
            keep = cols != own[rows]
            rows, cols, found = rows[keep], cols[keep], found[keep]
        best = _best_per_row(rows, found, self.k)
        rows, cols, found = rows[best], cols[best], found[best]
        capped = term_matrix(queries, "ct", "cw", self.n_terms)
        rest = np.asarray(capped[rows].multiply(index.capped[cols]).sum(axis=1)).ravel()
        return rows, cols, found + rest


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
        self, index: tuple[np.ndarray, np.ndarray], queries: pa.Table, own: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        matrix, numbers = index
        sims = flat_lists(queries.column("vec"))[1].astype(np.float32).reshape(queries.num_rows, -1) @ matrix.T
        if own is not None:
            at = np.minimum(np.searchsorted(numbers, own), len(numbers) - 1)
            mine = np.flatnonzero(numbers[at] == own)
            sims[mine, at[mine]] = -np.inf
        k = min(self.k, matrix.shape[0])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        rows = np.repeat(np.arange(queries.num_rows), k)
        cols = top.reshape(-1)
        values = sims[rows, cols]
        keep = np.isfinite(values)
        return rows[keep], numbers[cols[keep]], values[keep].astype(np.float64)
