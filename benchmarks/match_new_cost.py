"""match-new vs a full run: the cost of matching 1% new records into existing tables.

On a DeepMatcher-layout dataset (tableA / tableB): ingest 99% of tableB with all of
tableA, then time a full run (ingest -> block -> score -> resolve) on it; then time
``match-new`` with the held-out 1% of tableB. The student is an untrained tiny preset with
the prefilter off (every candidate goes through the student, the expensive case); both
sides use the same model, blockers and Spark settings. Any folder with tableA.csv and
tableB.csv works, e.g. the synthetic tables of ``benchmarks/synthetic.py``.

    .venv/bin/python benchmarks/match_new_cost.py \
        --dataset ../shared/datasets/Structured-DBLP-ACM --out bench_match_new.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from em_spark.config import load_config
from em_spark.incremental import NewRecords, match_new
from em_spark.pipeline import run_job
from em_spark.serialize import SerializerSettings, serialize_record
from em_spark.session import get_spark
from em_spark.student.inference import save_student
from em_spark.student.presets import build_preset
from em_spark.tables import Lakehouse


def _split_csv(src: Path, keep: Path, new: Path, new_share: float) -> int:
    with src.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cut = len(rows) - max(1, round(len(rows) * new_share))
    for path, part in ((keep, rows[:cut]), (new, rows[cut:])):
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(part)
    return len(rows) - cut


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--new-share", type=float, default=0.01)
    parser.add_argument("--out", default="bench_match_new.json")
    args = parser.parse_args(argv)

    data = Path(args.dataset)
    work = Path(tempfile.mkdtemp(prefix="em_match_new_bench_"))
    root = work / "lakehouse"
    n_new = _split_csv(data / "tableB.csv", work / "tableB_keep.csv", work / "tableB_new.csv", args.new_share)
    with (data / "tableA.csv").open(newline="", encoding="utf-8") as fh:
        corpus = [serialize_record({k: v for k, v in r.items() if k != "id"}) for r in csv.DictReader(fh)]
    model, tokenizer = build_preset("tiny", corpus[:5000])
    save_student(model, tokenizer, work / "model", 0.5, SerializerSettings(), None, extra={})
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    config = load_config(base={
        "lakehouse": {"root": str(root)},
        "reports_dir": str(work / "reports"),
        "mlflow": {"tracking_uri": f"sqlite:///{work / 'mlflow.db'}"},
        "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false",
                                                  "spark.ui.showConsoleProgress": "false", "spark.driver.memory": "4g"}},
        "ingest": {"left": {"path": str(data / "tableA.csv")}, "right": {"path": str(work / "tableB_keep.csv")}},
        "score": {"model_uri": str(work / "model"), "prefilter": False, "rationale": "none"},
    })
    lake = Lakehouse.from_config(get_spark(config.spark), config)
    full = {}
    # A full run re-reads every record, as match-new reads (and validates) the new ones.
    for job in ("ingest", "block", "score", "resolve"):
        t0 = time.monotonic()
        run = run_job(job, config, lake)
        full[job] = round(time.monotonic() - t0, 1)
    candidates_full = lake.read("candidates").count()
    t0 = time.monotonic()
    run = match_new(config, NewRecords(str(work / "tableB_new.csv"), source="right"), lake)
    incremental_s = time.monotonic() - t0
    full_s = sum(full.values())
    result = {
        "benchmark": "match_new_cost",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, local[2]",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "dataset": data.name,
        "new_records": n_new,
        "full_run_seconds": round(full_s, 1),
        "full_run_by_job": full,
        "full_run_candidates": candidates_full,
        "match_new_seconds": round(incremental_s, 1),
        "match_new_counts": run.counts,
        "ratio_match_new_to_full": round(incremental_s / full_s, 3),
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
