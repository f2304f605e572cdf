"""A job runs unchanged through a local Spark Connect session (Databricks serverless and
shared clusters speak Connect). It runs in a subprocess: a Connect server cannot start
inside this test run's classic session."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import DEMO_DATA, REPO


def test_ingest_job_runs_over_spark_connect(tmp_path):
    root = tmp_path / "lakehouse"
    script = f"""
import sys
from em_spark.cli import main
code = main([
    "ingest",
    "--set", "spark.remote=local[2]",
    "--set", "spark.conf={{spark.sql.shuffle.partitions: '2', spark.ui.enabled: 'false'}}",
    "--set", "lakehouse.root={root}",
    "--set", "ingest.left={{path: '{DEMO_DATA / 'tableA.csv'}'}}",
    "--set", "ingest.right={{path: '{DEMO_DATA / 'tableB.csv'}'}}",
])
from pyspark.sql import SparkSession
spark = SparkSession.getActiveSession()
assert type(spark).__module__.startswith("pyspark.sql.connect"), type(spark)
n = spark.sql("SELECT count(*) AS n FROM delta.`{root / 'records'}`").collect()[0]["n"]
print("RECORDS", n)
sys.exit(code)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RECORDS 864" in proc.stdout
    assert (root / "records" / "_delta_log").is_dir()
