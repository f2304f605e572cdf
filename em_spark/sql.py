"""SQL over the em-spark tables: each table is a temp view under its own name."""

from __future__ import annotations

from pyspark.sql import SparkSession

from em_spark.config import Config
from em_spark.errors import EmError
from em_spark.session import get_spark
from em_spark.tables import CONTRACTS, Lakehouse


def register_views(lake: Lakehouse) -> list[str]:
    """Register every existing contract table as a temp view; return their names."""
    names = []
    for name in CONTRACTS:
        if lake.exists(name):
            lake.read(name).createOrReplaceTempView(name)
            names.append(name)
    return names


def run_sql(config: Config, query: str, limit: int = 50, spark: SparkSession | None = None) -> None:
    lake = Lakehouse.from_config(spark or get_spark(config.spark), config)
    views = register_views(lake)
    if not views:
        raise EmError(f"no em-spark tables under {config.lakehouse.root}; run a job first")
    try:
        df = lake.spark.sql(query)
    except Exception as exc:  # AnalysisException / ParseException: one line for the user
        first = str(exc).strip().splitlines()[0]
        raise EmError(f"SQL: {first} (tables and views: {', '.join(views)})") from None
    df.show(limit, truncate=80)
