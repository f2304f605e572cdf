"""The records a blocking run works on (:class:`Prepared`), their numbers
(:class:`RecordNumbers`: a pair as one bigint key) and the orientation of the pairs every
blocker yields (:func:`oriented`, :func:`searched_pairs`): shared by the blocking core
(em_spark.blocking.core) and the embedding blocker (em_spark.blocking.embedding), which
the core calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

LEFT, RIGHT = "left", "right"


class RecordNumbers:
    """Each record's number: its position among its side's ids in sorted order (dedupe:
    both sides are the one table). A pair of numbers packs into one bigint key, so the
    pairs of all blockers are grouped on a long instead of two strings."""

    def __init__(self, left: pa.Array, right: pa.Array) -> None:
        self.left, self.right = left, right
        self._lookups: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, pa.Array]:
        # The lookups are rebuilt where they are used, not shipped.
        return {"left": self.left, "right": self.right}

    def __setstate__(self, state: dict[str, pa.Array]) -> None:
        self.__init__(**state)

    @classmethod
    def collect(cls, rec: DataFrame, mode: str) -> "RecordNumbers":
        """The sorted ids of each side of ``rec`` (source, rid)."""
        table = rec.select("source", "rid").toArrow()
        source = table.column("source")

        def side(name: str) -> pa.Array:
            ids = table.column("rid").filter(pc.equal(source, name)).combine_chunks()
            return ids.take(pc.sort_indices(ids))

        left = side(LEFT)
        return cls(left, left if mode == "dedupe" else side(RIGHT))

    def of(self, side: str, rids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The numbers of ``rids``, records of ``side``."""
        if side not in self._lookups:
            import pandas as pd

            self._lookups[side] = pd.Index(self.left if side == LEFT else self.right)
        return self._lookups[side].get_indexer(rids.to_pandas()).astype(np.int64)

    def key(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return left * max(len(self.right), 1) + right

    def key_column(self, left: Column, right: Column) -> Column:
        return left.cast("long") * F.lit(max(len(self.right), 1)) + right

    def ids(self, keys: np.ndarray) -> tuple[pa.Array, pa.Array]:
        """(left id, right id) of each pair key."""
        left, right = np.divmod(keys, max(len(self.right), 1))
        return self.left.take(pa.array(left)), self.right.take(pa.array(right))

    def keyed(self, pairs: DataFrame) -> DataFrame:
        """``pairs`` (left_id, right_id, oriented) as their keys."""

        def keys(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                key = self.key(self.of(LEFT, batch.column("left_id")), self.of(RIGHT, batch.column("right_id")))
                yield pa.RecordBatch.from_arrays([pa.array(key, pa.int64())], names=["key"])

        return pairs.select("left_id", "right_id").mapInArrow(keys, "key bigint")

    def pairs(self, keyed: DataFrame, schema: str) -> DataFrame:
        """``keyed`` (key, then other columns) with the key replaced by left_id, right_id;
        ``schema``: the other columns' DDL."""

        def ids(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                left, right = self.ids(batch.column("key").to_numpy())
                rest = [batch.column(i) for i in range(1, batch.num_columns)]
                yield pa.RecordBatch.from_arrays([left, right, *rest], names=["left_id", "right_id", *batch.schema.names[1:]])

        return keyed.mapInArrow(ids, f"left_id string, right_id string, {schema}")


@dataclass
class Prepared:
    """The records to block: ``rec`` has source, rid, attributes, is_new."""

    rec: DataFrame
    mode: str
    numbers: RecordNumbers
    involving: bool
    exclude: list[str]

    @property
    def n_left(self) -> int:
        return len(self.numbers.left)

    @property
    def n_right(self) -> int:
        return len(self.numbers.right) if self.mode == "link" else 0

    @property
    def n_records(self) -> int:
        return self.n_left + (self.n_right if self.mode == "link" else 0)

    @property
    def total_pairs(self) -> int:
        if self.mode == "link":
            return self.n_left * self.n_right
        return self.n_left * (self.n_left - 1) // 2


def oriented(df: DataFrame, prep: Prepared, *rest: str) -> DataFrame:
    """(rid_l, rid_r) -> (left_id, right_id), plus the ``rest`` columns; dedupe: smaller
    id left, no self pairs."""
    if prep.mode == "link":
        return df.select(F.col("rid_l").alias("left_id"), F.col("rid_r").alias("right_id"), *rest)
    return df.where(F.col("rid_l") != F.col("rid_r")).select(
        F.least("rid_l", "rid_r").alias("left_id"), F.greatest("rid_l", "rid_r").alias("right_id"), *rest
    )


def searched_pairs(found: DataFrame, sides: tuple[str, str], prep: Prepared) -> DataFrame:
    """A search's (q, c, score), queries of ``sides[0]``, candidates of ``sides[1]``, as
    (key, score) oriented like every blocker's pairs."""
    q, c = F.col("q"), F.col("c")
    if prep.mode == "dedupe":
        left, right = F.least(q, c), F.greatest(q, c)
    else:
        left, right = (q, c) if sides[0] == LEFT else (c, q)
    return found.select(prep.numbers.key_column(left, right).alias("key"), "score")
