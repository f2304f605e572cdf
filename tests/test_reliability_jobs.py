"""Every job run before its input exists: one clear line, exit 2, and no table created
or changed (only the ``runs`` row that records the failed run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from em_spark.cli import main
from em_spark.config import load_config
from em_spark.tables import CONTRACTS, Lakehouse
from tests.conftest import TEST_SPARK_CONF


@pytest.fixture
def empty_lake(spark, tmp_path) -> tuple[Path, Lakehouse]:
    folder = tmp_path
    cfg = {
        "lakehouse": {"root": str(folder / "lakehouse")},
        "mlflow": {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"},
        "spark": {"master": "local[2]", "conf": TEST_SPARK_CONF},
        "reports_dir": str(folder / "reports"),
    }
    path = folder / "em.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, Lakehouse.from_config(spark, load_config(path))


# job -> what its one-line error must name
MISSING_INPUT = {
    "ingest": "ingest.left",
    "block": "records",
    "teach": "labels",
    "train": "labels",
    "score": "candidates",
    "evaluate": "labels",
    "resolve": "predictions",
}


@pytest.mark.parametrize("job", list(MISSING_INPUT))
def test_job_without_its_input_fails_clearly_and_writes_nothing(empty_lake, capsys, job):
    path, lake = empty_lake
    code = main([job, "--config", str(path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"em-spark {job}: ")]
    assert code == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"em-spark {job}: error: "), err[-3000:]
    assert MISSING_INPUT[job] in lines[0], lines[0]
    assert [name for name in CONTRACTS if name != "runs" and lake.exists(name)] == []
    (run,) = lake.read("runs").where(f"job = '{job}'").collect()
    assert run.status == "failed" and run.error
