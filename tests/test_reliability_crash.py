"""Crash safety on real Spark + Delta: a Spark task dies in the middle of a job's MERGE
(after other tasks already wrote their files). The commit never happens, so the table
keeps its version and content; a re-run completes, and counts and anti-joins show
nothing duplicated or lost. The ``runs`` table shows the failed run and the one that
completed.

Teach and score commit in chunks; their crash-between-chunks tests (EM_SPARK_FAIL_AFTER)
live with their owners: tests/test_teacher_job.py::test_crash_after_first_chunk_then_rerun_resumes
and tests/test_scoring.py::test_crash_after_a_chunk_keeps_it_and_the_rerun_does_the_rest.
Here score is also crashed inside a chunk's MERGE.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pandas as pd
import pytest
from pyspark.sql import DataFrame, Row

from em_spark.pipeline import run_job
from em_spark.tables import PREDICTIONS, Lakehouse, pair_id
from tests.conftest import make_config
from tests.results_tables import write_fixture_tables
from tests.test_scoring import _config as score_config
from tests.test_scoring import _seed_tables, model_dir  # noqa: F401 - a fixture used below

CRASH = "injected crash: a Spark task died mid-write"


def crash_inside_merge(monkeypatch, table: str, on_call: int = 1) -> None:
    """Make the ``on_call``-th MERGE into ``table`` fail in one of its four Spark tasks."""
    real = Lakehouse.merge

    # Defined here so that it pickles by value (workers cannot import test modules).
    def _die_in_third_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext

        if TaskContext.get().partitionId() == 2:
            raise RuntimeError(CRASH)
        yield from batches
    calls = {"n": 0}

    def merge(self: Lakehouse, name: str, df: DataFrame, **kwargs) -> None:
        if name == table:
            calls["n"] += 1
            if calls["n"] == on_call:
                df = df.repartition(4).mapInPandas(_die_in_third_partition, df.schema)
        real(self, name, df, **kwargs)

    monkeypatch.setattr(Lakehouse, "merge", merge)


def snapshot(lake: Lakehouse, table: str) -> DataFrame:
    return lake.spark.createDataFrame(lake.read(table).collect(), lake.read(table).schema)


def assert_same_rows(a: DataFrame, b: DataFrame) -> None:
    assert a.count() == b.count()
    assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0


def assert_one_row_per_key(lake: Lakehouse, table: str, key: list[str]) -> int:
    df = lake.read(table)
    n = df.count()
    assert df.select(*key).distinct().count() == n, f"{table}: duplicated keys"
    return n


def crash_changes_nothing(monkeypatch, lake: Lakehouse, config, job: str, table: str) -> None:
    """Run ``job`` with a task dying inside its MERGE into ``table``: same version, same rows."""
    version, before = lake.version(table), snapshot(lake, table)
    crash_inside_merge(monkeypatch, table)
    with pytest.raises(Exception, match=CRASH):
        run_job(job, config, lake)
    assert lake.version(table) == version
    assert_same_rows(lake.read(table), before)
    monkeypatch.undo()


def job_statuses(lake: Lakehouse, job: str) -> list[str]:
    return [r.status for r in lake.read("runs").where(f"job = '{job}'").orderBy("started_at").collect()]


@pytest.fixture
def fixture_lake(spark, lake_root) -> tuple:
    config = make_config(lake_root, reports_dir=str(lake_root / "_reports"))
    lake = Lakehouse.from_config(spark, config)
    write_fixture_tables(spark, lake)
    return config, lake


def test_block_crash_inside_merge_then_rerun(spark, fixture_lake, monkeypatch):
    config, lake = fixture_lake
    before = snapshot(lake, "candidates")
    crash_changes_nothing(monkeypatch, lake, config, "block", "candidates")
    run = run_job("block", config, lake)
    n = assert_one_row_per_key(lake, "candidates", ["pair_id"])
    mine = lake.read("candidates").where(f"run_id = '{run.run_id}'")
    assert mine.count() == run.counts["candidates"] > 0
    # Nothing lost: every earlier candidate is still there (delete_stale is off) ...
    assert before.select("pair_id").join(lake.read("candidates"), "pair_id", "left_anti").count() == 0
    # ... and every row is either this run's or an earlier one kept as it was.
    others = lake.read("candidates").where(f"run_id <> '{run.run_id}'")
    assert others.join(before.select("pair_id"), "pair_id", "left_anti").count() == 0
    assert n == before.select("pair_id").union(mine.select("pair_id")).distinct().count()
    assert job_statuses(lake, "block") == ["failed", "succeeded"]


def test_resolve_crash_inside_merge_then_rerun(spark, fixture_lake, monkeypatch):
    config, lake = fixture_lake
    crash_inside_merge(monkeypatch, "entities")
    with pytest.raises(Exception, match=CRASH):
        run_job("resolve", config, lake)
    assert not lake.exists("entities") or lake.read("entities").count() == 0
    monkeypatch.undo()
    run_job("resolve", config, lake)
    records = lake.read("records").select("source", "record_id")
    assert assert_one_row_per_key(lake, "entities", ["source", "record_id"]) == records.count() == 16
    entities = lake.read("entities")
    assert records.join(entities, ["source", "record_id"], "left_anti").count() == 0
    assert entities.join(records, ["source", "record_id"], "left_anti").count() == 0

    # A new accepted match (L3-R3) moves R3 into L3's entity; a crash in that commit changes nothing.
    lake.merge("predictions", spark.createDataFrame([_match("L3", "R3")], PREDICTIONS))
    crash_changes_nothing(monkeypatch, lake, config, "resolve", "entities")
    run = run_job("resolve", config, lake)
    assert run.counts["changed_rows"] == 1  # R3 joins L3's entity
    after = {(r.source, r.record_id): r.entity_id for r in lake.read("entities").collect()}
    assert after[("right", "R3")] == after[("left", "L3")] == "left:L3"
    assert assert_one_row_per_key(lake, "entities", ["source", "record_id"]) == 16
    assert job_statuses(lake, "resolve") == ["failed", "succeeded", "failed", "succeeded"]


def _match(left: str, right: str) -> Row:
    return Row(
        pair_id=pair_id(left, right), left_id=left, right_id=right, p_match=0.99, verdict="match",
        rationale="same name and phone", rationale_by="rules", decided_by="student", status="ok", error=None,
        model_uri="test", run_id="test", scored_at=datetime(2026, 11, 27),
    )


def test_score_crash_inside_a_chunk_merge_keeps_whole_chunks_only(spark, lake_root, model_dir, monkeypatch):  # noqa: F811
    config = score_config(lake_root, model_dir, chunk_pairs=10, rationale="none", partitions=2)
    lake = Lakehouse.from_config(spark, config)
    ids = _seed_tables(lake, 30)
    crash_inside_merge(monkeypatch, "predictions", on_call=2)  # chunk 1 commits, chunk 2 dies
    with pytest.raises(Exception, match=CRASH):
        run_job("score", config, lake)
    committed = lake.read("predictions")
    n_first = committed.count()
    assert 0 < n_first < 30 and lake.version("predictions") == 1  # create + one chunk
    assert_one_row_per_key(lake, "predictions", ["pair_id"])

    monkeypatch.undo()
    run = run_job("score", config, lake)
    assert run.checks["predictions_per_candidate"].startswith("ok: 30 predictions, 30 candidates")
    assert assert_one_row_per_key(lake, "predictions", ["pair_id"]) == 30
    predictions, candidates = lake.read("predictions"), lake.read("candidates")
    assert candidates.join(predictions, "pair_id", "left_anti").count() == 0
    assert predictions.join(candidates, "pair_id", "left_anti").count() == 0
    assert {r.pair_id for r in predictions.collect()} == set(ids)
    assert job_statuses(lake, "score") == ["failed", "succeeded"]
