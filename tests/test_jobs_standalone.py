"""The README's job-by-job sequence as spark-submit and Databricks run it: every job in a
process of its own, from a working directory that is neither the config's nor the
tracking store's. No job may depend on state an earlier one left in its process, and none
may write into the working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import DEMO_DATA, TEST_SPARK_CONF

JOBS = ("ingest", "block", "teach", "train", "score", "evaluate", "resolve")


def test_each_job_in_its_own_process_from_another_directory(tmp_path: Path) -> None:
    config_dir, store_dir, lake_dir, cwd = (tmp_path / d for d in ("conf", "store", "lake", "elsewhere"))
    for folder in (config_dir, store_dir, cwd):
        folder.mkdir()
    config = {
        "mode": "link",
        "lakehouse": {"root": str(lake_dir)},
        "reports_dir": str(lake_dir / "_reports"),
        "mlflow": {"tracking_uri": f"sqlite:///{store_dir / 'mlflow.db'}", "registered_model": "standalone"},
        "spark": {"master": "local[2]", "conf": TEST_SPARK_CONF},
        "ingest": {
            "left": {"path": str(DEMO_DATA / "tableA.csv")},
            "right": {"path": str(DEMO_DATA / "tableB.csv")},
            "labels": [{"path": str(DEMO_DATA / f"{s}.csv"), "split": s} for s in ("train", "valid", "test")],
        },
        # What is tested is where each job finds its inputs, not the amount of work: few
        # candidates (one best partner a record) and a short training.
        "block": {"topk": {"k": 1}},
        "train": {"max_epochs": 1, "budget_minutes": 0.25},
    }
    config_file = config_dir / "em.yaml"
    config_file.write_text(yaml.safe_dump(config))
    cli = Path(sys.executable).parent / "em-spark"
    # A child inherits nothing MLflow-specific from this test process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    for job in JOBS:
        done = subprocess.run(
            [str(cli), job, "--config", str(config_file)],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, f"{job} failed:\n{done.stderr[-4000:]}"
    assert sorted(p.name for p in cwd.iterdir()) == [], "a job wrote into the working directory"
    assert sorted(p.name for p in store_dir.iterdir()) == ["mlartifacts", "mlflow.db"]
    assert (lake_dir / "predictions" / "_delta_log").is_dir()
    assert (lake_dir / "entities" / "_delta_log").is_dir()
