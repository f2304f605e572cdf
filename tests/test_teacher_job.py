"""The teach job on real local Spark + Delta: resume after a crash, an endpoint that is
down for a whole job, the key never stored, label-free bootstrap."""

from __future__ import annotations

import csv
import json
import socket
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from em_spark.cli import main
from em_spark.errors import EmError
from em_spark.faults import ENV as FAIL_ENV
from em_spark.faults import InjectedFailure
from em_spark.pipeline import run_job
from em_spark.tables import CANDIDATES, LABELS, RECORDS, Lakehouse, pair_id
from tests.conftest import DEMO_DATA, make_config
from tests.fake_openai_server import FakeChatServer

SENTINEL_KEY = "sk-SENTINEL-never-stored-7f3a"


@pytest.fixture(scope="module")
def demo_lake(spark, tmp_path_factory) -> Path:
    """Demo records and a slice of their labels (60 valid, 20 train for demonstrations),
    written straight into the contract tables (two MERGEs instead of a whole ingest job:
    the Spark actions, not the pairs, are what cost time here)."""
    root = tmp_path_factory.mktemp("teach") / "lakehouse"
    lake = Lakehouse.from_config(spark, make_config(root))
    now = datetime.now(timezone.utc)
    records = []
    for source, name in (("left", "tableA.csv"), ("right", "tableB.csv")):
        with open(DEMO_DATA / name, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                rid = row.pop("id")
                records.append((source, rid, row, f"h{rid}", "seed", now))
    lake.merge("records", spark.createDataFrame(records, RECORDS))
    labels = []
    for split, n in (("valid", 60), ("train", 20)):
        with open(DEMO_DATA / f"{split}.csv", encoding="utf-8", newline="") as f:
            for row in list(csv.DictReader(f))[:n]:
                l, r = row["ltable_id"], row["rtable_id"]
                labels.append((pair_id(l, r), l, r, int(row["label"]), split, "seed"))
    lake.merge("labels", spark.createDataFrame(labels, LABELS))
    return root


def _config(root: Path, teacher: str, **teach):
    return make_config(root, reports_dir=str(root.parent / f"reports-{teacher}"), teach={"teacher": teacher, **teach})


def _rows(spark, lake: Lakehouse, teacher: str):
    return lake.read("explanations").where(F.col("teacher") == teacher)


def test_crash_after_first_chunk_then_rerun_resumes(spark, demo_lake, monkeypatch):
    config = _config(demo_lake, "rules-resume", chunk_rows=30, splits=["valid"])
    lake = Lakehouse.from_config(spark, config)
    n_pairs = lake.read("labels").where("split = 'valid'").count()
    monkeypatch.setenv(FAIL_ENV, "teach:1")
    with pytest.raises(InjectedFailure):
        run_job("teach", config, lake)
    first = _rows(spark, lake, "rules-resume").count()
    assert 0 < first < n_pairs  # one chunk of two committed, the other lost with the crash
    monkeypatch.delenv(FAIL_ENV)
    run = run_job("teach", config, lake)
    assert run.counts["pairs_todo"] == n_pairs - first  # only what was missing
    gold = {r.pair_id: r.label for r in lake.read("labels").where("split = 'valid'").collect()}
    rows = _rows(spark, lake, "rules-resume").collect()
    assert len(rows) == n_pairs and {r.pair_id for r in rows} == set(gold)  # none lost, none twice
    assert all(r.status == "ok" and r.label == gold[r.pair_id] for r in rows)  # stored label = gold
    assert all(r.prompt_version == "rationalize-v1" and not r.pseudo_label for r in rows)
    runs = {r.status for r in lake.read("runs").where("job = 'teach'").collect()}
    assert runs == {"failed", "succeeded"}
    report = json.loads(Path(run.checks["report"]).read_text())
    assert report["status"] == {"ok": n_pairs - first} and report["pairs_per_s"] > 0


def test_openai_job_endpoint_down_then_up_and_key_never_stored(spark, demo_lake, monkeypatch, capsys):
    monkeypatch.setenv("EM_TEST_TEACHER_KEY", SENTINEL_KEY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    openai = {
        "model": "fake-7b",
        "api_key_env": "EM_TEST_TEACHER_KEY",
        "max_retries": 1,
        "backoff_base_s": 0.01,
        "timeout_s": 5,
        "max_concurrency": 4,
    }
    teacher = "openai-fake"
    down = _config(
        demo_lake, teacher, backend="openai", splits=["valid"], chunk_rows=500,
        openai={**openai, "base_url": f"http://127.0.0.1:{dead_port}/v1"},
    )  # fmt: skip
    lake = Lakehouse.from_config(spark, down)
    n_valid = lake.read("labels").where("split = 'valid'").count()
    with pytest.raises(EmError, match="unavailable.*connect"):
        run_job("teach", down, lake)
    rows = _rows(spark, lake, teacher).collect()
    assert len(rows) == n_valid and {r.status for r in rows} == {"failed"}  # recorded, none ok
    assert {r.error.split(":")[0] for r in rows} == {"connect"}

    with FakeChatServer() as server:
        up = down.model_copy(deep=True)
        up.teach.openai.base_url = server.base_url
        run = run_job("teach", up, lake)
        assert server.total_requests == n_valid  # each pair asked once: failed ones retried, none twice
        assert server.auth_headers == {f"Bearer {SENTINEL_KEY}"}
    rows = _rows(spark, lake, teacher).collect()
    assert len(rows) == n_valid == len({r.pair_id for r in rows})
    assert all(r.status == "ok" and r.input_tokens > 0 and r.output_tokens > 0 and r.grounding == 1.0 for r in rows)
    report = json.loads(Path(run.checks["report"]).read_text())
    assert report["tokens_per_s"] > 0

    # the key is in no table, report or log line
    for table in ("explanations", "runs"):
        df = lake.read(table)
        text = " ".join(str(r.asDict()) for r in df.collect())
        assert SENTINEL_KEY not in text, table
    for path in Path(up.reports_dir).rglob("*.json"):
        assert SENTINEL_KEY not in path.read_text()
    captured = capsys.readouterr()
    assert SENTINEL_KEY not in captured.out + captured.err


def test_predict_bootstraps_unlabeled_candidates(spark, demo_lake):
    config = _config(demo_lake, "rules-predict", splits=["train"])
    lake = Lakehouse.from_config(spark, config)
    labeled = lake.read("labels").limit(5).collect()
    labeled_pairs = [(r.left_id, r.right_id) for r in labeled]
    fresh = [("0", "1"), ("2", "3"), ("10", "20")]
    cands = [
        (pair_id(l, r), l, r, ["test"], None, "seed") for l, r in labeled_pairs[:2] + fresh
    ]
    lake.merge("candidates", spark.createDataFrame(cands, CANDIDATES))
    code = main(["teach", "--predict", "--set", f"lakehouse.root={demo_lake}", "--set", "teach.teacher=rules-predict",
                 "--set", "spark.master=local[2]", "--set", f"reports_dir={demo_lake.parent / 'reports-predict'}"])  # fmt: skip
    assert code == 0
    rows = _rows(spark, lake, "rules-predict").collect()
    candidates = lake.read("candidates").join(lake.read("labels"), "pair_id", "left_anti").count()
    assert len(rows) == candidates >= 3
    assert all(r.pseudo_label and r.prompt_version == "predict-v1" and r.label in (0, 1) for r in rows)
    assert {r.pair_id for r in rows}.isdisjoint({pair_id(l, r) for l, r in labeled_pairs})
