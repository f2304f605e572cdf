"""Evaluate: metrics against hand-computed values, and the job's reports and MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from em_spark.evaluate import split_metrics, threshold_sweep
from results_tables import PAIRS, results_lake


def _labeled() -> pd.DataFrame:
    """The fixture's test split as evaluate's driver-side frame."""
    rows = []
    for n, label, verdict, p, _blockers, rationale in PAIRS:
        rows.append(
            {"pair_id": f"p{n}", "left_id": f"L{n}", "right_id": f"R{n}", "label": label, "p_match": p,
             "verdict": verdict, "rationale": rationale, "decided_by": "student" if verdict else None,
             "status": None if verdict is None else ("failed" if verdict == "error" else "ok"),
             "error": None, "proposed": verdict is not None}
        )
    return pd.DataFrame(rows)


def test_metrics_count_unproposed_pairs_as_no_match():
    m = split_metrics(_labeled(), "no_match", 101)
    # tp = pairs 1, 2; fp = 4; fn = 3 and 7 (never proposed); tn = 5, 6, 8 (failed)
    assert m["confusion"] == {"tp": 2, "fp": 1, "fn": 2, "tn": 3}
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert (m["labeled_pairs"], m["proposed_pairs"], m["positives_proposed"], m["failed_pairs"]) == (8, 7, 3, 1)
    # the matcher alone: the 7 proposed pairs (tp 2, fp 1, fn 1, tn 3)
    assert m["matcher"]["confusion"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 3}
    assert m["matcher"]["f1"] == pytest.approx(2 / 3)
    # best F1 of the sweep: p >= t for t in (0.2, 0.4] takes pairs 1-4: P = R = 3/4
    assert m["best_f1_on_this_split"]["f1"] == pytest.approx(0.75)
    assert 0.2 < m["best_f1_on_this_split"]["threshold"] <= 0.4
    # average precision by hand: ranking .9(+) .8(+) .7(-) .4(+), then 0.2 0.1 0 0 with
    # the unproposed positive at 0: AP = sum over positives of precision * recall step
    ap = 0.25 * (1 + 1 + 3 / 4) + 0.25 * (4 / 8)
    assert m["pr_curve"]["average_precision"] == pytest.approx(ap)


def test_metrics_can_exclude_unproposed_pairs():
    m = split_metrics(_labeled(), "exclude", 11)
    assert m["pairs"] == 7
    assert m["confusion"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 3}
    assert m["recall"] == pytest.approx(2 / 3)


def test_threshold_sweep_by_hand():
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.6, 0.6, 0.1, 0.0])
    rows = {r["threshold"]: r for r in threshold_sweep(y, s, 11)}
    assert rows[0.5]["precision"] == pytest.approx(2 / 3) and rows[0.5]["recall"] == pytest.approx(2 / 3)
    assert rows[0.7]["precision"] == 1.0 and rows[0.7]["recall"] == pytest.approx(1 / 3)
    assert rows[0.0]["predicted_matches"] == 5 and rows[0.0]["recall"] == 1.0
    assert rows[1.0]["predicted_matches"] == 0 and rows[1.0]["f1"] == 0.0


def test_evaluate_job_writes_reports_checks_and_mlflow(spark, tmp_path_factory):
    config, _lake, runs = results_lake(spark, tmp_path_factory)
    checks = runs["evaluate"].checks
    assert (checks["f1"], checks["precision"], checks["recall"], checks["threshold"]) == ("0.571", "0.667", "0.500", "0.500")
    assert checks["blocking_recall"] == "0.600"
    out = Path(config.reports_dir) / "evaluate"
    assert Path(checks["report"]) == out / "review.html"
    metrics = json.loads((out / "metrics.json").read_text())
    # recall per blocker over all 5 labeled positives (test + train): 1-3 proposed, 7 and
    # L5-R6 never were, so they count as misses for every blocker
    assert metrics["blocking"] == {"positives": 5, "any": 0.6, "missed": 2, "per_blocker": {"token": 0.4, "topk": 0.4}}
    lengths = metrics["rationale_lengths"]
    assert lengths["match"]["pairs"] == 4 and lengths["match"]["with_rationale"] == 4
    assert lengths["no_match"]["with_rationale"] == 0
    # pair 1 quotes "Cafe Luna" and a phone number: both are in its records
    assert metrics["rationale_grounding"]["checkable"] >= 1
    assert metrics["rationale_grounding"]["mean_grounding"] == pytest.approx(1.0)
    sweep = json.loads((out / "threshold_sweep.json").read_text())
    assert len(sweep) == config.evaluate.sweep_points
    for png in ("pr_curve.png", "threshold_sweep.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "confusion_matrix.json").read_text()) == {"tp": 2, "fp": 1, "fn": 2, "tn": 3}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.mlflow.tracking_uri)
    logged = client.get_run(checks["mlflow_run_id"])
    assert logged.data.metrics["f1"] == pytest.approx(4 / 7)
    assert logged.data.tags["em_spark.run_id"] == runs["evaluate"].run_id
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id, "evaluate")}
    assert {"evaluate/review.html", "evaluate/metrics.json", "evaluate/pr_curve.png"} <= artifacts
