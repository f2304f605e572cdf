"""The records a blocking run works on (:class:`Prepared`) and the orientation of the
pairs every blocker yields (:func:`oriented`): shared by the blocking core
(em_spark.blocking.core) and the embedding blocker (em_spark.blocking.embedding), which
the core calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

LEFT, RIGHT = "left", "right"


@dataclass
class Prepared:
    """The records to block: ``rec`` has source, rid, attributes, is_new."""

    rec: DataFrame
    mode: str
    n_left: int
    n_right: int
    involving: bool
    exclude: list[str]

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
