"""The train job on real Spark + Delta + MLflow (SQLite), and the matching bench command."""

from __future__ import annotations

import csv
import json
import re
from datetime import datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from em_spark.cli import main
from em_spark.match_model import MatchModel
from em_spark.mlflow_store import MlflowStore
from em_spark.pipeline import run_job
from em_spark.tables import Lakehouse
from em_spark.teacher.rules import explain_pair
from tests.conftest import DEMO_DATA, dataset, make_config


def _slice(src: Path, dst: Path, n: int) -> Path:
    """The first n matches and n non-matches of a labels file (both labels present)."""
    with src.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if r["label"] == "1"][:n] + [r for r in rows if r["label"] == "0"][:n]
    with dst.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["ltable_id", "rtable_id", "label"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("ltable_id", "rtable_id", "label")} for r in keep)
    return dst


def _write_explanations(lake: Lakehouse, every: int) -> int:
    """Rules explanations for every ``every``-th train pair (the rest must fall back)."""
    pairs = (
        lake.read("labels").where("split = 'train'").alias("p")
        .join(lake.read("records").where("source = 'left'").alias("l"), F.col("p.left_id") == F.col("l.record_id"))
        .join(lake.read("records").where("source = 'right'").alias("r"), F.col("p.right_id") == F.col("r.record_id"))
        .select("p.pair_id", "p.left_id", "p.right_id", "p.label", F.col("l.attributes").alias("la"),
                F.col("r.attributes").alias("ra"))
        .orderBy("pair_id").collect()
    )
    rows = [
        (p.pair_id, "rules", "rationalize-v1", p.left_id, p.right_id, p.label, False,
         explain_pair(p.la, p.ra, p.label), "ok", None, None, 1.0, None, None, None, "test", datetime.now())
        for i, p in enumerate(pairs) if i % every == 0
    ]
    from em_spark.tables import EXPLANATIONS

    lake.merge("explanations", lake.spark.createDataFrame(rows, EXPLANATIONS))
    return len(pairs) - len(rows)


def test_train_job_logs_registers_and_loads_by_uri(spark, lake_root, tmp_path):
    labels = [
        {"path": str(_slice(DEMO_DATA / "train.csv", tmp_path / "train.csv", 12)), "split": "train"},
        {"path": str(_slice(DEMO_DATA / "valid.csv", tmp_path / "valid.csv", 6)), "split": "valid"},
    ]
    config = make_config(
        lake_root,
        ingest={"left": {"path": str(DEMO_DATA / "tableA.csv")}, "right": {"path": str(DEMO_DATA / "tableB.csv")},
                "labels": labels},
        train={"max_epochs": 2, "batch_size": 8, "budget_minutes": 0.25, "threads": 1, "max_target_tokens": 24},
        # One best partner a record: about 900 candidates, each with a generated rationale.
        block={"topk": {"k": 1}},
        score={"rationale": "all", "max_new_tokens": 24},
    )
    lake = Lakehouse.from_config(spark, config)
    run_job("ingest", config, lake)
    missing = _write_explanations(lake, every=2)
    run = run_job("train", config, lake)

    assert run.counts["train_pairs"] == 24 and run.counts["valid_pairs"] == 12
    assert run.counts["label_only_fallbacks"] == missing > 0
    uri = run.checks["model_uri"]
    assert uri == f"models:/{config.mlflow.registered_model}/1"
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    logged = mlflow.get_run(run.checks["mlflow_run_id"])
    assert logged.data.params["train.mode"] == "explained"
    assert "best_valid_f1" in logged.data.metrics and "feature_model_prefilter_recall" in logged.data.metrics
    history = mlflow.MlflowClient().get_metric_history(logged.info.run_id, "train_loss")
    assert len(history) >= 1

    model = MatchModel.load(uri, device="cpu", store=MlflowStore.of(config.mlflow.tracking_uri))
    assert abs(model.student.threshold - float(run.checks["threshold"])) < 1e-5
    assert model.student.attributes and model.feature_model is not None
    # the verdict model chosen on validation is recorded in the model, the run and MLflow
    metrics = logged.data.metrics
    chosen = "features" if metrics["feature_model_f1"] > metrics["best_valid_f1"] else "student"
    assert model.verdict_by == run.checks["verdict_by"] == logged.data.tags["verdict_by"] == chosen
    left = {"name": "arnie morton's of chicago", "addr": "435 s. la cienega blv.", "city": "los angeles"}
    (text,) = model.student.serialize_pairs([left], [dict(left)])
    # the similarity hints (identical records: every string score 10), then the pair
    assert re.match(r"SIM name r10 s10 ", text) and " Entity A: COL name VAL arnie" in text

    # The registered model answers as the score job writes predictions, pair for pair.
    run_job("block", config, lake)
    run_job("score", config, lake)
    records = {(r.source, r.record_id): dict(r.attributes) for r in lake.read("records").collect()}
    scored = lake.read("predictions").orderBy("pair_id").limit(400).toPandas()
    pyfunc = mlflow.pyfunc.load_model(uri)
    served = pyfunc.predict(
        pd.DataFrame({
            "left": [records[("left", i)] for i in scored["left_id"]],
            "right": [json.dumps(records[("right", i)]) for i in scored["right_id"]],
        }),
        params={"rationale": "all", "max_new_tokens": 24},
    )
    assert len(served) == len(scored) and (scored["decided_by"] != "prefilter").any()
    for column in ("verdict", "decided_by", "rationale", "rationale_by", "status"):
        assert served[column].tolist() == scored[column].tolist(), column
    np.testing.assert_allclose(served["p_match"], scored["p_match"], atol=1e-6)
    with pytest.raises(Exception, match="expected 'left' and 'right'"):
        pyfunc.predict(pd.DataFrame({"text": [text]}))


def test_bench_matching_writes_json(tmp_path):
    from em_spark.bench.matching import load_dataset

    data, other = dataset("Structured-Fodors-Zagats"), dataset("Structured-Beer")  # cuts shipped with the tests
    out, other_out = tmp_path / "student.json", tmp_path / "student_beer.json"
    common = ["bench", "matching", "--train", str(data), "--mode", "label_only", "--limit-train", "40",
              "--limit-test", "30", "--max-epochs", "1", "--budget-minutes", "0.2", "--set", "threads=1"]
    # one training, two test folders: a JSON each
    assert main([*common, "--test", str(data), str(other), "--out", str(out), str(other_out)]) == 0
    report, other_report = json.loads(out.read_text()), json.loads(other_out.read_text())
    for key in ("f1", "precision", "recall", "threshold", "test_pairs", "seconds", "valid_f1", "history"):
        assert key in report, key
    assert report["test_pairs"] == 30 and report["train_pairs"] == 40 and report["mode"] == "label_only"
    assert 0.0 <= report["f1"] <= 1.0
    assert other_report["test"] == str(other) and len(other_report["test_scores"]) == other_report["test_pairs"] == 30
    assert (other_report["threshold"], other_report["history"]) == (report["threshold"], report["history"])
    assert main([*common, "--test", str(data), str(other), "--out", str(tmp_path / "one.json")]) == 2
    assert not (tmp_path / "one.json").exists()

    # the feature model on the whole dataset where ../shared has it (189 test pairs), else on the cut (40)
    full = dataset("Structured-Fodors-Zagats", full=True)
    features = tmp_path / "features.json"
    assert main(["bench", "matching", "--train", str(full), "--test", str(full), "--model", "features",
                 "--out", str(features)]) == 0
    baseline = json.loads(features.read_text())
    assert baseline["test_pairs"] == len(load_dataset(full).splits["test"]) and baseline["f1"] > 0.8
    # in domain the prefilter keeps (nearly) every match and drops most other pairs
    assert baseline["prefilter_recall"] >= 0.9 and baseline["prefilter_pass_rate"] < 0.9


def test_bench_limits_sample_rows_not_the_first_ones(tmp_path):
    # a split sorted by label (as WDC-Products' valid.csv is) must still give both labels
    from em_spark.bench.matching import load_dataset

    (tmp_path / "tableA.csv").write_text("id,name\n" + "".join(f"a{i},x{i}\n" for i in range(100)))
    (tmp_path / "tableB.csv").write_text("id,name\n" + "".join(f"b{i},y{i}\n" for i in range(100)))
    rows = "ltable_id,rtable_id,label\n" + "".join(f"a{i},b{i},{int(i < 50)}\n" for i in range(100))
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.csv").write_text(rows)
    first = load_dataset(tmp_path, {"valid": 20}).splits["valid"]
    again = load_dataset(tmp_path, {"valid": 20}).splits["valid"]
    assert len(first) == 20 and {p.label for p in first} == {0, 1}
    assert [p.left["name"] for p in first] == [p.left["name"] for p in again]
    assert [int(p.left["name"][1:]) for p in first] == sorted(int(p.left["name"][1:]) for p in first)
