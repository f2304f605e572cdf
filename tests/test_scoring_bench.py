"""The scoring benchmarks: the GPU one runs without pyspark (smoke sizes, on the CPU here);
`em-spark bench scoring` writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, dataset

RUN_WITHOUT_PYSPARK = """
import runpy, sys
sys.modules["pyspark"] = None  # importing pyspark now fails, as on the GPU machine
sys.argv = ["gpu_score.py", "--smoke", "--out", sys.argv[1]]
try:
    runpy.run_path("benchmarks/gpu_score.py", run_name="__main__")
except SystemExit as exc:
    assert exc.code == 0, exc.code
"""


def test_gpu_score_smoke_runs_without_pyspark(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_PYSPARK, str(out)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["verdict"] and report["generate"]
    for entry in [*report["verdict"].values(), *report["generate"].values()]:
        assert entry["pairs"] > 0 and entry["pairs_per_s"] > 0
    assert report["verdict_over_generate"] > 0


def test_bench_scoring_writes_json(tmp_path):
    from em_spark.cli import main

    out = tmp_path / "scoring.json"
    data = dataset("Structured-Fodors-Zagats")  # the cut shipped with the tests: 40 test pairs
    assert main(["bench", "scoring", "--dataset", str(data), "--pairs", "24", "--presets", "tiny",
                 "--train-minutes", "0.05", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    tiny = report["presets"]["tiny"]
    assert [m["hard_share"] for m in report["mixes"]] == [0.5, 0.0]
    assert report["mixes"][0]["presets"]["tiny"] == tiny  # the first mix is the headline
    easy = report["mixes"][1]["presets"]["tiny"]
    assert easy["pairs"] == 24 and 0.0 <= easy["prefilter_pass_rate"] <= 1.0
    for key in ("generate_all_pairs_per_s", "verdict_first_pairs_per_s", "prefilter_pairs_per_s",
                "verdict_agreement", "prefilter_recall_loss", "p_match_max_abs_diff_vs_float32"):
        assert key in tiny, key
    assert tiny["pairs"] == 24 and tiny["matches"] == 1
    assert 0.0 <= tiny["verdict_agreement"] <= 1.0 and tiny["prefilter_recall_loss"] >= 0.0
    assert sum(tiny["deployed_decided_by"].values()) == 24


def test_train_minutes_one_for_all_or_one_per_preset():
    from em_spark.bench.scoring import _minutes_per_preset

    assert _minutes_per_preset("5", ["tiny", "small"]) == {"tiny": 5.0, "small": 5.0}
    assert _minutes_per_preset("5,20", ["tiny", "small"]) == {"tiny": 5.0, "small": 20.0}
    with pytest.raises(SystemExit, match="3 budgets for 2 presets"):
        _minutes_per_preset("1,2,3", ["tiny", "small"])


def test_cpu_int8_bench_compares_with_float32(tmp_path):
    out = tmp_path / "int8.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/cpu_int8.py", "--pairs", "16", "--batch-size", "8", "--presets", "tiny",
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    tiny = json.loads(out.read_text())["presets"]["tiny"]
    assert set(tiny["verdicts_per_s"]) == {"float32", "bfloat16", "int8_dynamic"}
    assert all(rate > 0 for rate in tiny["verdicts_per_s"].values())
    assert tiny["max_abs_p_diff_vs_float32"]["float32"] == 0.0
    assert 0.0 <= tiny["max_abs_p_diff_vs_float32"]["int8_dynamic"] < 1.0
