"""Teach benchmark: the rules teacher over a dataset's train pairs, as `em-spark teach` runs it.

Ingests DATASET (tableA/tableB/train.csv) into a fresh temporary lakehouse, runs the teach
job (local Spark, Delta, committed chunks), and reports pairs/s and the share of rows
with status ok. Baseline measured in the same run: the same rules teacher called
directly in one Python process on the same pairs (no Spark, no Delta), so the ratio shows
what the distributed, resumable job costs on top of the explanation work itself.

    .venv/bin/python benchmarks/teach_rules.py ../shared/datasets/Textual-Abt-Buy --out teach.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from em_spark.config import load_config
from em_spark.pipeline import run_job
from em_spark.session import get_spark
from em_spark.tables import Lakehouse
from em_spark.teacher.rules import explain_pair
from em_spark.teacher.validate import check_explanation


def direct_baseline(dataset: Path) -> dict[str, float]:
    def table(name: str) -> dict[str, dict[str, str]]:
        with open(dataset / name, encoding="utf-8", newline="") as f:
            return {r.pop("id"): r for r in csv.DictReader(f)}

    left, right = table("tableA.csv"), table("tableB.csv")
    with open(dataset / "train.csv", encoding="utf-8", newline="") as f:
        pairs = [(left[r["ltable_id"]], right[r["rtable_id"]], int(r["label"])) for r in csv.DictReader(f)]
    t0 = time.perf_counter()
    ok = 0
    for a, b, label in pairs:
        text = explain_pair(a, b, label)
        ok += check_explanation(text, label, a, b, min_chars=20, max_chars=1200, min_grounding=0.5).status == "ok"
    seconds = time.perf_counter() - t0
    return {"pairs": len(pairs), "seconds": round(seconds, 2), "pairs_per_s": round(len(pairs) / seconds, 1), "ok_share": ok / len(pairs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--out", type=Path, default=Path("teach_rules.json"))
    ap.add_argument("--chunk-rows", type=int, default=2000)
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args(argv)
    dataset = args.dataset.resolve()
    with tempfile.TemporaryDirectory(prefix="em-teach-bench-") as tmp:
        root = Path(tmp) / "lakehouse"
        config = load_config(
            base={
                "mode": "link",
                "lakehouse": {"root": str(root)},
                "reports_dir": str(Path(tmp) / "reports"),
                "spark": {"master": args.master},
                "ingest": {
                    "left": {"path": str(dataset / "tableA.csv")},
                    "right": {"path": str(dataset / "tableB.csv")},
                    "labels": [{"path": str(dataset / "train.csv"), "split": "train"}],
                },
                "teach": {"backend": "rules", "chunk_rows": args.chunk_rows},
            }
        )
        lake = Lakehouse.from_config(get_spark(config.spark), config)
        run_job("ingest", config, lake)
        t0 = time.perf_counter()
        run = run_job("teach", config, lake)
        wall = time.perf_counter() - t0
        report = json.loads(Path(run.checks["report"]).read_text())
        rows = lake.read("explanations")
        n_rows, n_pairs = rows.count(), lake.read("labels").count()
        distinct = rows.select("pair_id").distinct().count()
        examples = [r.asDict() for r in rows.select("label", "explanation", "grounding").limit(3).collect()]
    baseline = direct_baseline(dataset)
    ok = report["status"].get("ok", 0)
    result = {
        "dataset": dataset.name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {sys.version.split()[0]}, master {args.master}",
        "labeled_pairs": n_pairs,
        "rows": n_rows,
        "distinct_pairs": distinct,
        "ok": ok,
        "ok_share": round(ok / n_pairs, 4),
        "status": report["status"],
        "failures": report["failures"],
        "job_seconds": round(wall, 1),
        "job_pairs_per_s": round(n_rows / wall, 1),
        "report_pairs_per_s": report["pairs_per_s"],
        "direct_baseline": baseline,
        "job_vs_direct": round((n_rows / wall) / baseline["pairs_per_s"], 3),
        "examples": examples,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
