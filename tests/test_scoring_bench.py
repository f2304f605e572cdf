"""The GPU scoring benchmark runs without pyspark (smoke sizes, on the CPU here)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

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
