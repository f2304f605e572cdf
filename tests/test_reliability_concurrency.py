"""Two writers MERGE into one Delta table at once: the loser of the commit race retries
(Delta's ConcurrentAppendException) and the table ends consistent: one row per key,
nothing lost. Conflicts that never clear end in one clear error."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from em_spark import tables
from em_spark.errors import WriteConflictError
from em_spark.pipeline import run_job
from em_spark.tables import PREDICTIONS, Lakehouse, pair_id
from tests.conftest import make_config
from tests.test_scoring import _config, _seed_tables, model_dir  # noqa: F401 (a fixture)


def predictions(spark: SparkSession, ids: range, writer: str) -> DataFrame:
    now = datetime.now()
    rows = [
        (pair_id(f"l{i}", f"r{i}"), f"l{i}", f"r{i}", 0.9, "match", f"by {writer}", "rules", "student", "ok", None,
         "models:/m/1", writer, now)
        for i in ids
    ]
    return spark.createDataFrame(rows, PREDICTIONS)


def wait_for_file(flag: Path):
    """A pandas UDF that holds the MERGE (after its snapshot was read) until ``flag`` exists."""

    @F.pandas_udf(T.StringType())
    def held(run_id: pd.Series) -> pd.Series:
        deadline = time.monotonic() + 60
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return run_id

    return held


def test_two_concurrent_merge_writers_end_consistent(spark, lake_root, caplog):
    lake = Lakehouse.from_config(spark, make_config(lake_root))
    lake.merge("predictions", predictions(spark, range(0, 10), "seed"))
    v0 = lake.version("predictions")
    flag = lake_root / "fast_writer_committed"
    # Writer A overlaps writer B on keys 40-59; A is held mid-MERGE until B has committed,
    # so A's first commit must conflict with B's and be retried.
    # One partition: A's held task takes one of the two cores and leaves the other to B.
    slow = predictions(spark, range(0, 60), "A").coalesce(1).withColumn("run_id", wait_for_file(flag)("run_id"))
    fast = predictions(spark, range(40, 100), "B")
    errors: list[BaseException] = []

    def write_slow() -> None:
        try:
            lake.merge("predictions", slow)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    caplog.set_level(logging.WARNING, logger="em_spark.tables")
    thread = threading.Thread(target=write_slow)
    thread.start()
    time.sleep(3)  # let A read its snapshot and block in the UDF
    lake.merge("predictions", fast)
    flag.touch()
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors

    conflicts = [r for r in caplog.records if "Delta write conflict" in r.getMessage()]
    assert conflicts and "predictions: Delta write conflict (Concurrent" in conflicts[0].getMessage()
    table = lake.read("predictions")
    expected = {pair_id(f"l{i}", f"r{i}") for i in range(100)}
    assert table.count() == 100
    assert table.select("pair_id").distinct().count() == 100
    assert {r.pair_id for r in table.select("pair_id").collect()} == expected
    # A committed last (after its retry), so A's rows win on the overlap 40-59.
    by_writer = {r.run_id: r["count"] for r in table.groupBy("run_id").count().collect()}
    assert by_writer == {"A": 60, "B": 40}
    assert lake.version("predictions") == v0 + 2


def test_two_concurrent_score_jobs_end_consistent(spark, lake_root, model_dir, monkeypatch, caplog):  # noqa: F811
    config = _config(lake_root, model_dir, rationale="none", rescore=True)
    lake = Lakehouse.from_config(spark, config)
    ids = _seed_tables(lake, 16)
    run_job("score", config, lake)
    # Both jobs start their predictions MERGE together, on the same snapshot: each rewrites
    # the files holding all 16 pairs, so whichever commits second must conflict.
    together = threading.Barrier(2, timeout=120)
    merge = Lakehouse.merge

    def merge_together(self: Lakehouse, name: str, df: DataFrame, **kwargs) -> None:
        if name == "predictions":
            together.wait()
        merge(self, name, df, **kwargs)

    monkeypatch.setattr(Lakehouse, "merge", merge_together)
    caplog.set_level(logging.WARNING, logger="em_spark.tables")
    runs: dict[str, object] = {}

    def score(job: str) -> None:
        try:
            runs[job] = run_job("score", config, Lakehouse.from_config(spark, config))
        except BaseException as exc:  # surfaced by the assertion below
            runs[job] = exc

    threads = [threading.Thread(target=score, args=(job,)) for job in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert not [r for r in runs.values() if isinstance(r, BaseException)], runs

    assert any("predictions: Delta write conflict" in r.getMessage() for r in caplog.records)
    table = lake.read("predictions")
    assert sorted(r.pair_id for r in table.select("pair_id").collect()) == sorted(ids)
    # every row comes from one of the two concurrent runs, and each run checked one per pair
    assert {r.run_id for r in table.select("run_id").distinct().collect()} <= {r.run_id for r in runs.values()}
    for run in runs.values():
        assert run.checks["predictions_per_candidate"].startswith("ok: 16 predictions, 16 candidates")
    statuses = [r.status for r in lake.read("runs").where("job = 'score'").collect()]
    assert statuses == ["succeeded"] * 3


class ConcurrentAppendException(Exception):
    """Named as Delta's (delta.exceptions / io.delta.exceptions) conflict."""


class _FailingMerges:
    """Stand-in session whose every MERGE raises ``error`` (other statements run for real)."""

    def __init__(self, spark: SparkSession, error: Exception):
        self._spark = spark
        self._error = error
        self.merges = 0

    def sql(self, query: str):
        if query.startswith("MERGE INTO"):
            self.merges += 1
            raise self._error
        return self._spark.sql(query)

    def __getattr__(self, name: str):
        return getattr(self._spark, name)


def test_conflict_that_never_clears_is_one_clear_error(spark, lake_root, monkeypatch):
    monkeypatch.setattr(tables, "MERGE_BACKOFF_S", 0.0)
    lake = Lakehouse.from_config(spark, make_config(lake_root))
    lake.merge("predictions", predictions(spark, range(3), "seed"))
    version = lake.version("predictions")
    conflict = ConcurrentAppendException("[DELTA_CONCURRENT_APPEND] Files were added by a concurrent update")
    session = _FailingMerges(spark, conflict)
    with pytest.raises(WriteConflictError) as caught:
        Lakehouse(session, lake.conf).merge("predictions", predictions(spark, range(3, 6), "x"))
    message = str(caught.value)
    assert session.merges == tables.MERGE_ATTEMPTS
    assert message.startswith(f"predictions: concurrent writers conflicted {tables.MERGE_ATTEMPTS} times")
    assert "ConcurrentAppendException" in message and "\n" not in message

    other = _FailingMerges(spark, RuntimeError("[DIVIDE_BY_ZERO] not a conflict"))
    with pytest.raises(RuntimeError, match="DIVIDE_BY_ZERO"):
        Lakehouse(other, lake.conf).merge("predictions", predictions(spark, range(3, 6), "x"))
    assert other.merges == 1  # only conflicts are retried

    # deleting rows that left the candidates (score's stale-prediction sweep) retries alike
    session = _FailingMerges(spark, conflict)
    with pytest.raises(WriteConflictError, match="predictions: concurrent writers conflicted"):
        Lakehouse(session, lake.conf).delete_missing("predictions", predictions(spark, range(1), "x"))
    assert session.merges == tables.MERGE_ATTEMPTS
    assert lake.version("predictions") == version
    assert lake.read("predictions").count() == 3
