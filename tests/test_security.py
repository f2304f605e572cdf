"""Secrets and hostile input.

- The teacher's API key comes only from the environment (or a Databricks secret): config
  has no field for the key itself. A teach job with the ``openai`` backend against a real
  loopback chat-completions server, followed by a train run, leaves the sentinel key in
  no log line, console output, MLflow param / tag / artifact, report, Delta table row, or
  Delta data / log file.
- SQL-looking attribute names and values pass through the SQL review views as data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F

from em_spark.config import load_config
from em_spark.errors import ConfigError
from em_spark.pipeline import run_job
from em_spark.sql import register_views
from em_spark.tables import CANDIDATES, CONTRACTS, PREDICTIONS, RECORDS, Lakehouse, pair_id
from tests.conftest import DEMO_DATA, make_config
from tests.fake_openai_server import FakeChatServer
from tests.test_student_job import _slice

SENTINEL = "sk-SENTINEL-7c1e-do-not-store"
KEY_ENV = "EM_TEST_SECURITY_KEY"


@pytest.mark.parametrize(
    "override",
    [f"teach.openai.api_key={SENTINEL}", f"teach.api_key={SENTINEL}", f"teach.openai.token={SENTINEL}"],
)
def test_config_has_no_place_for_a_literal_key(override):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=[override])
    assert "unknown key" in str(caught.value)
    assert SENTINEL not in str(caught.value)  # the error does not echo the value


def _files_containing(folder: Path, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_sentinel_key_is_used_but_stored_nowhere(spark, tmp_path, monkeypatch, caplog, capfd):
    monkeypatch.setenv(KEY_ENV, SENTINEL)
    for name in ("em_spark", "udfs", "httpx", "httpcore", "mlflow"):
        caplog.set_level(logging.DEBUG, logger=name)
    root = tmp_path / "lakehouse"
    teacher = "openai-sentinel"
    with FakeChatServer() as server:
        config = make_config(
            root,
            reports_dir=str(tmp_path / "reports"),
            ingest={
                "left": {"path": str(DEMO_DATA / "tableA.csv")},
                "right": {"path": str(DEMO_DATA / "tableB.csv")},
                "labels": [
                    {"path": str(_slice(DEMO_DATA / "train.csv", tmp_path / "train.csv", 8)), "split": "train"},
                    {"path": str(_slice(DEMO_DATA / "valid.csv", tmp_path / "valid.csv", 4)), "split": "valid"},
                ],
            },
            teach={
                "backend": "openai", "teacher": teacher, "splits": ["train", "valid"],
                "openai": {"base_url": server.base_url, "model": "fake-7b", "api_key_env": KEY_ENV,
                           "max_retries": 1, "backoff_base_s": 0.01, "timeout_s": 10},
            },
            train={"teacher": teacher, "max_epochs": 1, "batch_size": 8, "budget_minutes": 0.1, "threads": 1,
                   "max_target_tokens": 16},
        )  # fmt: skip
        lake = Lakehouse.from_config(spark, config)
        for job in ("ingest", "teach", "train"):
            run_job(job, config, lake)
        # The key was really sent (so finding it nowhere below means something).
        assert server.auth_headers == {f"Bearer {SENTINEL}"} and server.total_requests == 24
    assert lake.read("explanations").where(F.col("status") == "ok").count() == 24

    # Every row of every Delta table, every column as JSON text.
    for name in CONTRACTS:
        if lake.exists(name):
            text = lake.read(name).select(F.to_json(F.struct("*")).alias("j"))
            assert text.where(F.col("j").contains(SENTINEL)).count() == 0, name
    configs = [r.config for r in lake.read("runs").collect()]
    assert len(configs) == 3 and all(KEY_ENV in c and SENTINEL not in c for c in configs)

    # Every file on disk: Delta data files and commit logs (with their column stats), the
    # MLflow database and artifacts (the logged model), reports.
    assert _files_containing(tmp_path, SENTINEL.encode()) == []
    assert _files_containing(root / "runs", KEY_ENV.encode())  # the scan does see stored text

    # MLflow params and tags of every run.
    client = mlflow.MlflowClient(tracking_uri=config.mlflow.tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs
    for r in runs:
        assert SENTINEL not in repr(r.data.params) + repr(r.data.tags)
        artifacts = Path(r.info.artifact_uri.removeprefix("file://"))
        assert artifacts.is_relative_to(tmp_path) and _files_containing(artifacts, SENTINEL.encode()) == []

    # Log records (DEBUG for em_spark and the HTTP client) and everything printed,
    # the JVM's output included.
    assert caplog.records and SENTINEL not in caplog.text
    out, err = capfd.readouterr()
    assert SENTINEL not in out + err


HOSTILE_NAME = "x'] AS y FROM records; DROP TABLE records; --"
HOSTILE_VALUE = "'); DROP TABLE predictions; --"


def test_sql_looking_names_and_values_stay_data_in_review_views(spark, lake_root):
    lake = Lakehouse.from_config(spark, make_config(lake_root))
    from datetime import datetime

    now = datetime(2026, 11, 27)
    records = [
        Row(source=s, record_id=rid, attributes={"name": HOSTILE_VALUE, HOSTILE_NAME: "v", "city": "o'hare"},
            record_hash="h", run_id="t", ingested_at=now)
        for s, rid in (("left", "l' OR '1'='1"), ("right", 'r"; --'))
    ]  # fmt: skip
    pid = pair_id("l' OR '1'='1", 'r"; --')
    lake.merge("records", spark.createDataFrame(records, RECORDS))
    lake.merge("candidates", spark.createDataFrame(
        [Row(pair_id=pid, left_id="l' OR '1'='1", right_id='r"; --', blockers=["t"], score=1.0, run_id="t")], CANDIDATES))
    lake.merge("predictions", spark.createDataFrame([Row(
        pair_id=pid, left_id="l' OR '1'='1", right_id='r"; --', p_match=0.9, verdict="match",
        rationale=HOSTILE_VALUE, rationale_by="rules", decided_by="student", status="ok", error=None, model_uri="m", run_id="t",
        scored_at=now)], PREDICTIONS))  # fmt: skip
    views = register_views(lake, mode="link")
    assert "match_review" in views
    (row,) = spark.sql("SELECT * FROM match_review").collect()
    assert row.left_id == "l' OR '1'='1" and row.right_id == 'r"; --'
    assert row.left_name == HOSTILE_VALUE and row.right_city == "o'hare" and row.rationale == HOSTILE_VALUE
    assert row.left_attributes[HOSTILE_NAME] == "v"  # reachable through the map, not pasted as a column
    assert all(HOSTILE_NAME not in c for c in spark.table("match_review").columns)
    assert spark.table("records").count() == 2 and spark.table("predictions").count() == 1
