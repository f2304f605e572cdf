"""The notebooks run top to bottom against the results tables (one kernel, its own Spark)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import yaml
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from conftest import TEST_SPARK_CONF
from results_tables import results_lake

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["review_matches", "blocking_diagnostics", "model_evaluation"]


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            out.extend(str(v) for v in o.get("data", {}).values())
    return "\n".join(out)


def test_notebooks_are_committed_without_outputs():
    for name in NOTEBOOKS:
        nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name


def test_notebooks_run_against_the_tables(spark, tmp_path_factory, tmp_path):
    config, _lake, _runs = results_lake(spark, tmp_path_factory)
    nb_config = config.to_dict()
    nb_config["spark"] = {"master": "local[1]", "conf": {**TEST_SPARK_CONF, "spark.driver.memory": "1g"}}
    config_file = tmp_path / "notebook.yaml"
    config_file.write_text(yaml.safe_dump(nb_config))
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(REPO), env={**os.environ, "EM_SPARK_CONFIG": str(config_file)})
    texts = {}
    try:
        for name in NOTEBOOKS:
            nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
            NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(REPO)}}).execute()
            texts[name] = _text(nb)
    finally:
        km.shutdown_kernel(now=True)
    assert "Cafe Luna" in texts["review_matches"] and "left:L1" in texts["review_matches"]
    assert "labeled pairs decided wrongly" in texts["review_matches"]
    assert "2 labeled matches never proposed" in texts["blocking_diagnostics"]
    assert "0.6" in texts["blocking_diagnostics"]  # recall of the union of blockers
    assert "0.571" in texts["model_evaluation"] or "0.5714" in texts["model_evaluation"]
    assert json.loads((Path(config.reports_dir) / "evaluate" / "metrics.json").read_text())["pairs"] == 8
