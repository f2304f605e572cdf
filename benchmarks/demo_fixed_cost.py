"""Fixed cost of the jobs on a small table: the demo's jobs outside training, timed.

The embedded demo dataset (Fodors-Zagats, 533 x 331 records, 946 labels, 4,942
candidates). Training runs once, untimed, to give score a model; then two measurements:

- per process: every job in an ``em-spark <job> --config FILE`` process of its own, as
  spark-submit and Databricks run them (Python imports, JVM start and Delta jar
  resolution included), plus one process that only starts the Spark session;
- in process: the jobs one after another in one process on one session, as
  ``em-spark demo`` runs them, each job timed alone (Spark jobs counted too, a figure the
  machine's load does not inflate); the session start apart.

ingest, block and teach run on a fresh lakehouse, score, evaluate and resolve on a copy
of the one training left. ``--baseline DIR`` also measures the code under DIR (e.g. an
earlier commit: ``git worktree add /tmp/base <rev>``) in the same run, each job of one
right after the same job of the other, and reports the ratios. The load average is
recorded next to every figure: other work on the machine inflates the seconds.

    .venv/bin/python benchmarks/demo_fixed_cost.py --out benchmarks/results/demo_fixed_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import yaml

FRESH = ["ingest", "block", "teach"]  # on a fresh lakehouse, in this order
TRAINED = ["score", "evaluate", "resolve"]  # on a copy of the lakehouse after training
JOBS = FRESH + TRAINED
SESSION_ONLY = (
    "import sys; from em_spark.config import load_config; from em_spark.session import get_spark; "
    "from em_spark.tables import Lakehouse; "
    "c = load_config(sys.argv[1]); Lakehouse.from_config(get_spark(c.spark), c).exists('records')"
)


def load_average() -> float:
    path = Path("/proc/loadavg")
    return float(path.read_text().split()[0]) if path.exists() else float("nan")


def write_config(folder: Path, fast: bool) -> Path:
    """The demo's config with its lakehouse in ``folder/lake``."""
    from em_spark.demo import demo_base

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "em.yaml"
    path.write_text(yaml.safe_dump(demo_base(str(folder / "lake"), fast)), encoding="utf-8")
    return path


def copy_trained(trained: Path, folder: Path, fast: bool) -> Path:
    """A copy of the trained lakehouse (its MLflow store included) under ``folder``."""
    shutil.copytree(trained / "lake", folder / "lake")
    return write_config(folder, fast)


def _env(code: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if code:
        env["PYTHONPATH"] = code + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(argv: list[str], cwd: Path, code: str | None) -> dict[str, float]:
    load = load_average()
    t0 = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=_env(code), capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return {"seconds": round(seconds, 2), "load_before": load, "load_after": load_average()}


def _cli() -> list[str]:
    return [sys.executable, "-m", "em_spark.cli"]


def train_once(work: Path, fast: bool) -> Path:
    """ingest, block, teach, train in their own processes (untimed): the trained lakehouse."""
    folder = work / "trained"
    config = write_config(folder, fast)
    for job in FRESH + ["train"]:
        _run([*_cli(), job, "--config", str(config)], work, None)
    return folder


def per_process(work: Path, trained: Path, fast: bool, versions: dict[str, str | None]) -> dict[str, dict]:
    """Each job in its own process; per job, every version right after the other."""
    configs = {}
    for name in versions:
        configs[(name, "fresh")] = write_config(work / f"process-{name}-fresh", fast)
        configs[(name, "trained")] = copy_trained(trained, work / f"process-{name}-trained", fast)
    out: dict[str, dict] = {name: {"jobs": {}} for name in versions}
    for job in JOBS:
        for name, code in versions.items():
            config = configs[(name, "fresh" if job in FRESH else "trained")]
            out[name]["jobs"][job] = _run([*_cli(), job, "--config", str(config)], work, code)
    for name, code in versions.items():
        config = configs[(name, "fresh")]
        out[name]["session_start_process"] = _run([sys.executable, "-c", SESSION_ONLY, str(config)], work, code)
        out[name]["total_outside_training"] = round(sum(j["seconds"] for j in out[name]["jobs"].values()), 2)
    return out


def in_process(work: Path, trained: Path, fast: bool) -> dict[str, object]:
    """The jobs in one process on one session, as ``em-spark demo`` runs them."""
    from em_spark import console
    from em_spark.config import load_config
    from em_spark.pipeline import run_job
    from em_spark.session import get_spark
    from em_spark.tables import Lakehouse

    fresh = load_config(str(write_config(work / "inprocess-fresh", fast)))
    after_training = load_config(str(copy_trained(trained, work / "inprocess-trained", fast)))
    console.use_log_dir(fresh.lakehouse.root)
    t0 = time.monotonic()
    spark = get_spark(fresh.spark)
    session = round(time.monotonic() - t0, 2)
    context = spark.sparkContext
    jobs = {}
    for job in JOBS:
        config = fresh if job in FRESH else after_training
        lake = Lakehouse.from_config(spark, config)
        context.setJobGroup(f"bench-{job}", job)
        load = load_average()
        t0 = time.monotonic()
        run_job(job, config, lake)
        seconds = round(time.monotonic() - t0, 2)
        spark_jobs = len(context.statusTracker().getJobIdsForGroup(f"bench-{job}"))
        jobs[job] = {"seconds": seconds, "spark_jobs": spark_jobs, "load_before": load, "load_after": load_average()}
    return {
        "session_start": session,
        "jobs": jobs,
        "total_outside_training": round(sum(j["seconds"] for j in jobs.values()), 2),
        "spark_jobs_outside_training": sum(j["spark_jobs"] for j in jobs.values()),
    }


def in_process_child(work: Path, trained: Path, fast: bool, code: str | None) -> dict[str, object]:
    """:func:`in_process` in a process of its own (running the code under ``code``)."""
    folder = Path(tempfile.mkdtemp(prefix="inprocess-", dir=work))
    argv = [sys.executable, __file__, "--in-process-child", str(folder), "--trained", str(trained)]
    done = subprocess.run(
        [*argv, *(["--fast"] if fast else [])], cwd=work, env=_env(code), capture_output=True, text=True, timeout=3600
    )
    if done.returncode != 0:
        raise SystemExit(f"in-process run failed:\n{done.stderr[-3000:]}")
    # The last JSON line (the JVM may have written to stdout before it).
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def ratios(result: dict[str, dict], key: str) -> dict[str, float]:
    """baseline seconds / current seconds per job and in total (> 1: the current is faster)."""
    base, now = result["baseline"][key], result["current"][key]
    out = {job: round(base["jobs"][job]["seconds"] / now["jobs"][job]["seconds"], 2) for job in JOBS}
    out["total_outside_training"] = round(base["total_outside_training"] / now["total_outside_training"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/demo_fixed_cost.json")
    parser.add_argument("--fast", action="store_true", help="one training epoch (training is not counted)")
    parser.add_argument("--baseline", help="a folder holding the em_spark and udfs packages to compare with")
    parser.add_argument("--in-process-child", help=argparse.SUPPRESS)
    parser.add_argument("--trained", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.in_process_child:
        print(json.dumps(in_process(Path(args.in_process_child), Path(args.trained), args.fast)))
        return 0

    versions: dict[str, str | None] = {"current": None}
    if args.baseline:
        versions["baseline"] = str(Path(args.baseline).resolve())
    result: dict[str, object] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pyspark": version("pyspark"),
            "delta_spark": version("delta-spark"),
        },
        "fast_training": args.fast,
        "jobs": JOBS,
    }
    work = Path(tempfile.mkdtemp(prefix="em-fixed-cost-"))
    try:
        trained = train_once(work, args.fast)
        measured: dict[str, dict] = {name: {} for name in versions}
        for name, code in versions.items():
            measured[name]["in_process"] = in_process_child(work, trained, args.fast, code)
            print(name, "in process", json.dumps(measured[name]["in_process"]), flush=True)
        for name, figures in per_process(work, trained, args.fast, versions).items():
            measured[name]["per_process"] = figures
            print(name, "per process", json.dumps(figures), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(measured)
    if args.baseline:
        result["baseline_over_current"] = {key: ratios(measured, key) for key in ("in_process", "per_process")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
