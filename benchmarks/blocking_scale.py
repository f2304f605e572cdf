"""Blocking at scale on synthetic tables: wall time, records/s, peak memory, PC.

For each size, generates the tables (benchmarks/synthetic.py) unless present, then runs
``em-spark bench blocking`` in a child process and samples the resident memory of its
whole process tree (Python driver, Spark JVM, Python workers) to report the peak.

    nohup .venv/bin/python benchmarks/blocking_scale.py --records 100000 300000 \
        --out benchmarks/results/blocking_scale.json > /tmp/scale.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import generate  # noqa: E402

# Spark inside 8 GiB in all: a 4 GiB driver heap (local mode: executors live in it).
SPARK_CONFIG = """
spark:
  master: local[2]
  conf:
    spark.driver.memory: 4g
    spark.sql.shuffle.partitions: "16"
    spark.sql.adaptive.enabled: "true"
    spark.ui.enabled: "false"
    spark.ui.showConsoleProgress: "false"
    spark.sql.execution.arrow.pyspark.enabled: "true"
"""


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_one(records: int, data_root: Path, work: Path, timeout: int, overrides: list[str]) -> dict:
    folder = data_root / f"synthetic-{records}"
    if not (folder / "gold.csv").is_file():
        print(f"generating {records} records into {folder}", flush=True)
        print(generate(records, folder), flush=True)
    config = work / "scale.yaml"
    config.write_text(SPARK_CONFIG)
    out = work / f"bench-{records}.json"
    cmd = [sys.executable, "-m", "em_spark.cli", "-q", "bench", "blocking", "--dataset", str(folder),
           "--config", str(config), "--no-baseline", "--out", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    t0 = time.monotonic()
    proc = psutil.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        output, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        for child in proc.children(recursive=True):
            child.kill()
        proc.kill()
        output, code = "timed out", -1
    done.set()
    sampler.join()
    wall = time.monotonic() - t0
    result = {"records": records, "exit_code": code, "wall_seconds": round(wall, 1),
              "peak_rss_gib": round(peak / 2**30, 2), "output_tail": output[-1500:]}
    if code == 0:
        bench = json.loads(out.read_text())
        result.update({k: bench[k] for k in ("pair_completeness", "reduction_ratio", "candidates",
                                              "candidates_per_left", "seconds", "blockers", "keys")})
        result["records_per_second_blocking"] = round(records / bench["seconds"], 1)
        result["records_per_second_wall"] = round(records / wall, 1)
    return result


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, nargs="+", required=True)
    p.add_argument("--data", default="/tmp/em-spark-synthetic")
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    work = Path(args.data) / "work"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.records:
        r = run_one(n, Path(args.data), work, args.timeout, args.overrides)
        print({k: v for k, v in r.items() if k not in ("output_tail", "blockers", "keys")}, flush=True)
        results.append(r)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"machine": "2 cores, shared", "overrides": args.overrides,
                                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                              "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
