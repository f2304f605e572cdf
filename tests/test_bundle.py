"""The Databricks asset bundle names only things that exist: console script, subcommands,
config files (valid), the wheel build, and a GPU cluster for teach and score."""

from __future__ import annotations

import re
import tomllib
from importlib import import_module
from pathlib import Path

import yaml

from em_spark.cli import build_parser
from em_spark.config import load_config
from em_spark.pipeline import PIPELINE

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "conf" / "databricks"


def _bundle() -> tuple[dict, dict[Path, dict]]:
    root = yaml.safe_load((BUNDLE / "databricks.yml").read_text())
    resources = {}
    for pattern in root["include"]:
        for path in sorted(BUNDLE.glob(pattern)):
            resources[path] = yaml.safe_load(path.read_text())
    assert resources, "the bundle includes no resource files"
    return root, resources


def _var(value: str, variables: dict) -> str:
    return re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]["default"]), str(value))


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)


def test_bundle_names_existing_entry_points_configs_and_wheel():
    root, resources = _bundle()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    scripts = pyproject["project"]["scripts"]
    package = pyproject["project"]["name"].replace("-", "_")
    artifact = root["artifacts"]["em_spark_wheel"]
    assert (BUNDLE / artifact["path"] / "pyproject.toml").resolve() == REPO / "pyproject.toml"
    wheel_dir = re.search(r"--wheel-dir (\S+)", artifact["build"]).group(1)
    variables = root["variables"]
    jobs = [job for res in resources.values() for job in res["resources"]["jobs"].values()]
    assert jobs
    for path, res in resources.items():
        for job in res["resources"]["jobs"].values():
            params = {p["name"] for p in job["parameters"]}
            assert {"catalog", "schema"} <= params
            clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
            tasks = {t["task_key"]: t for t in job["tasks"]}
            assert list(tasks) == PIPELINE
            for i, (key, task) in enumerate(tasks.items()):
                wheel = task["python_wheel_task"]
                assert wheel["package_name"] == package
                module, _, fn = scripts[wheel["entry_point"]].partition(":")
                assert callable(getattr(import_module(module), fn))
                args = wheel["parameters"]
                assert args[0] == key and args[0] in _subcommands()
                config_path = args[args.index("--config") + 1].replace("${workspace.file_path}", str(BUNDLE))
                overrides = [args[j + 1] for j, a in enumerate(args) if a == "--set"]
                assert "lakehouse.catalog={{job.parameters.catalog}}" in overrides
                assert "lakehouse.schema={{job.parameters.schema}}" in overrides
                # the file exists and is a valid config with the job's overrides applied
                resolved = [re.sub(r"\{\{job\.parameters\.(\w+)\}\}", r"param_\1", o) for o in overrides]
                config = load_config(config_path, resolved)
                assert (config.lakehouse.catalog, config.lakehouse.schema_) == ("param_catalog", "param_schema")
                if i:
                    assert task["depends_on"] == [{"task_key": PIPELINE[i - 1]}]
                for lib in task["libraries"]:
                    whl = (path.parent / lib["whl"]).resolve()
                    assert whl.parent == (BUNDLE / artifact["path"] / wheel_dir).resolve()
                cluster = clusters[task["job_cluster_key"]]
                gpu = "gpu" in _var(cluster["spark_version"], variables)
                assert gpu == (key in {"teach", "train", "score"}), key
                if gpu:
                    assert cluster["spark_conf"]["spark.task.resource.gpu.amount"] == "1"
