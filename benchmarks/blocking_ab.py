"""A/B of the default blocking on the synthetic records: two versions of the code, run
alternately, each run in a process of its own, on the same machine in one run.

Each run times ``plan_blocking`` from the cached, ingested records to the cached
candidates (left_id, right_id, score), as ``benchmarks/peer_splink.py`` does, and records
the candidates and a digest of them (the XOR of their hashes with the score), so that a
change that should not change the candidates shows that it did not. The machine's load
average is recorded next to every run; compare the pair ratios, not seconds across runs.

    .venv/bin/python benchmarks/blocking_ab.py --records 1000000 --baseline /tmp/base --pairs 3 \\
      --out benchmarks/results/blocking_ab_1m.json

``--baseline DIR``: a folder holding the em_spark package to compare with
(``git archive <rev> em_spark udfs | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import json, sys, time
from pathlib import Path
from pyspark.sql import functions as F
from em_spark.bench.blocking import load_dataset
from em_spark.blocking.core import plan_blocking
from em_spark.config import BlockConf
import em_spark
try:  # both versions on the same JVM setup: no class data sharing (em_spark/jvm_classes.py)
    from em_spark import jvm_classes
    jvm_classes.archive_option = lambda *args, **kwargs: None
except ImportError:
    pass
sys.path.append(sys.argv[2])
from peer_splink import spark_session
spark = spark_session(False, Path(sys.argv[3]))
records = load_dataset(spark, Path(sys.argv[1]), dedupe=False)[0].cache()
records.count()
t0 = time.monotonic()
candidates = plan_blocking(records, BlockConf(), "link").candidates.select("left_id", "right_id", "score").cache()
n = candidates.count()
seconds = time.monotonic() - t0
digest = candidates.select(F.bit_xor(F.xxhash64("left_id", "right_id", "score"))).collect()[0][0]
print(json.dumps({"seconds": round(seconds, 2), "candidates": n, "digest": digest, "code": em_spark.__file__}))
"""


def load_average() -> float:
    path = Path("/proc/loadavg")
    return float(path.read_text().split()[0]) if path.exists() else float("nan")


def run_once(folder: Path, code: str | None, work: Path) -> dict:
    """One blocking run in a new process; ``code``: the folder put first on its path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if code:
        env["PYTHONPATH"] = code
    load = load_average()
    # The working folder holds no em_spark: the Python workers import the same code.
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(HERE), str(work / "checkpoints")],
        cwd=work, env=env, capture_output=True, text=True, timeout=3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"blocking run failed ({code or 'current'}):\n{done.stderr[-3000:]}")
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    return result | {"load_before": load, "load_after": load_average()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--data", default="/tmp/em-peer", help="where the synthetic records are (generated if missing)")
    parser.add_argument("--baseline", required=True, help="a folder holding the em_spark package to compare with")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/blocking_ab.json")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    from peer_splink import dataset

    folder = dataset(args.records, Path(args.data), labels=0.005)
    versions = {"baseline": str(Path(args.baseline).resolve()), "current": None}
    runs: dict[str, list[dict]] = {name: [] for name in versions}
    with tempfile.TemporaryDirectory(prefix="em-blocking-ab-") as work:
        for pair in range(args.pairs):
            for name, code in versions.items():
                runs[name].append(run_once(folder, code, Path(work)))
                print(name, pair, json.dumps(runs[name][-1]), flush=True)
    ratios = [c["seconds"] / b["seconds"] for b, c in zip(runs["baseline"], runs["current"])]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "records": args.records,
        "cpus": os.cpu_count(),
        "runs": runs,
        "current_over_baseline": [round(r, 3) for r in ratios],
        "mean_ratio": round(statistics.mean(ratios), 3),
        "mean_seconds": {name: round(statistics.mean(r["seconds"] for r in rs), 2) for name, rs in runs.items()},
        "same_candidates": len({r["digest"] for rs in runs.values() for r in rs}) == 1,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}: current / baseline {result['mean_ratio']} (pairs {result['current_over_baseline']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
