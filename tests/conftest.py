"""One local Spark session (with Delta) for the whole test run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from em_spark.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
DEMO_DATA = REPO / "em_spark" / "data" / "demo"

TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.driver.memory": "3g",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.databricks.delta.snapshotPartitions": "1",
}


@pytest.fixture(scope="session")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from em_spark.config import SparkConf
    from em_spark.session import get_spark

    session = get_spark(SparkConf(master="local[2]", app_name="em-spark-tests", conf=TEST_SPARK_CONF))
    yield session
    session.stop()


def make_config(root: Path, **sections) -> Config:
    """A config whose tables live under ``root`` (a tmp folder)."""
    base = {
        "lakehouse": {"root": str(root)},
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
        "spark": {"master": "local[2]", "conf": TEST_SPARK_CONF},
    }
    base.update(sections)
    return load_config(base=base)


@pytest.fixture
def lake_root(tmp_path: Path) -> Path:
    root = tmp_path / "lakehouse"
    root.mkdir()
    return root
