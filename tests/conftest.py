"""One local Spark session (with Delta) for the whole test run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from em_spark.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
# The full benchmark datasets (../shared/datasets, see its MANIFEST.md), which a user's clone
# does not have; EM_SPARK_SHARED_DATASETS points elsewhere (an empty folder: test as a bare clone).
SHARED_DATASETS = Path(os.environ.get("EM_SPARK_SHARED_DATASETS") or REPO.parent / "shared" / "datasets")
# Small cuts of two of them in the same layout, shipped with the tests (tests/data/cut_datasets.py).
FIXTURE_DATASETS = REPO / "tests" / "data" / "datasets"
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


def dataset(name: str, full: bool = False) -> Path:
    """A DeepMatcher-layout dataset folder: the cut under tests/data/datasets; with ``full``,
    the whole dataset under SHARED_DATASETS where there is one (else still the cut)."""
    if full and (SHARED_DATASETS / name / "test.csv").is_file():
        return SHARED_DATASETS / name
    return FIXTURE_DATASETS / name


@pytest.fixture(scope="session")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from em_spark.config import SparkConf
    from em_spark.session import get_spark

    # No class data sharing here (em_spark/jvm_classes.py): this JVM lives for the whole
    # run, and had it claimed the archive of a fresh environment, every job process the
    # tests start would run without one until the run ends.
    session = get_spark(
        SparkConf(master="local[2]", app_name="em-spark-tests", conf=TEST_SPARK_CONF, share_jvm_classes=False)
    )
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
