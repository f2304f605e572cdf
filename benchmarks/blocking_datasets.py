"""Block every complete dataset of ../shared/datasets with ONE configuration.

Runs ``em-spark bench blocking`` (em_spark.bench.blocking.run_bench) on each dataset in
one Spark session and writes one JSON with every result plus a Markdown table.

    .venv/bin/python benchmarks/blocking_datasets.py --out benchmarks/results/blocking_datasets.json
    # a variant: --set block.topk.k=5 ; only some datasets: --only Structured-Beer
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from em_spark.bench.blocking import run_bench  # noqa: E402
from em_spark.config import load_config  # noqa: E402
from em_spark.session import get_spark  # noqa: E402

# The complete datasets (MANIFEST.md): the PARTIAL-tableB ones are not valid for blocking.
COMPLETE = [
    "Textual-Abt-Buy",
    "Structured-Amazon-Google",
    "Structured-Walmart-Amazon",
    "Dirty-Walmart-Amazon",
    "Structured-DBLP-ACM",
    "Dirty-DBLP-ACM",
    "Structured-Beer",
    "Structured-Fodors-Zagats",
    "WDC-Block-small",
    "WDC-Products-80cc20rnd050un",
]
DEEPBLOCKER = {"Textual-Abt-Buy": "87.2% (21.6k cand.)", "Structured-Amazon-Google": "97.1% (68.2k cand.)"}


def markdown(results: list[dict]) -> str:
    lines = [
        "| dataset | PC | PC valid / test | cand./left | candidates | RR | s | baseline PC k=5/10/20 | DeepBlocker |",
        "|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        b = r.get("baseline", {})
        base = " / ".join(str(b[f"k{k}"]["pair_completeness"]) for k in (5, 10, 20)) if b else ""
        by_split = r.get("pair_completeness_by_split", {})
        held_out = " / ".join(f"{by_split[s]:.3f}" for s in ("valid", "test") if s in by_split)
        lines.append(
            f"| {r['dataset']}{' (dedupe)' if r['mode'] == 'dedupe' else ''} | {r['pair_completeness']:.3f} | {held_out} | "
            f"{r['candidates_per_left']:.1f} | {r['candidates']} | {r['reduction_ratio']:.4f} | {r['seconds']:.0f} | "
            f"{base} | {DEEPBLOCKER.get(r['dataset'], '')} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(REPO.parent / "shared" / "datasets"))
    p.add_argument("--config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--only", action="append", help="dataset name (repeatable)")
    p.add_argument("--dedupe-wdc", action="store_true", help="also block WDC-Products tableA alone (dedupe)")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    config = load_config(args.config, args.overrides)
    spark = get_spark(config.spark)
    runs = [(name, False) for name in (args.only or COMPLETE)]
    if args.dedupe_wdc:
        runs.append(("WDC-Products-80cc20rnd050un", True))
    results = []
    t0 = time.monotonic()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, dedupe in runs:
        result = run_bench(spark, Path(args.root) / name, config, dedupe, not args.no_baseline)
        results.append(result)
        print(f"{name}{' dedupe' if dedupe else ''}: PC {result['pair_completeness']} "
              f"cand/left {result['candidates_per_left']} {result['seconds']} s", flush=True)
        # Written after every dataset, so a run cut short keeps what it measured.
        summary = {"overrides": args.overrides, "total_seconds": round(time.monotonic() - t0, 1),
                   "results": results, "table": markdown(results)}
        out.write_text(json.dumps(summary, indent=2, sort_keys=True), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
