"""The blocking report: what blocking kept, what it cost, what the caps dropped.

Only aggregates reach the driver (counts, quantiles, the top keys), never candidates.
"""

from __future__ import annotations

import json
from functools import reduce
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from em_spark.blocking.core import BlockingPlan
from em_spark.blocking.prepared import Prepared

TOP_KEYS = 10


def gold_pairs(labels: DataFrame) -> DataFrame:
    """Positive labeled pairs (left_id, right_id) of every split."""
    return labels.where(F.col("label") == 1).select("left_id", "right_id").distinct()


def blocking_report(
    plan: BlockingPlan, candidates: DataFrame, gold: DataFrame | None, n: int | None = None
) -> dict[str, Any]:
    """Report over materialized ``candidates`` (cache them first: several passes read them).

    ``gold`` (left_id, right_id), oriented like the candidates, gives pair completeness;
    ``n``: the number of candidates, where the caller has counted them already. Four
    queries: candidates per record, per blocker (with completeness), and the keys' totals
    and largest keys of every key blocker.
    """
    prep = plan.prepared
    assert prep is not None
    if n is None:
        n = candidates.count()
    total = prep.total_pairs
    per_blocker, completeness = _per_blocker(candidates, gold)
    report: dict[str, Any] = {
        "mode": prep.mode,
        "records": {"left": prep.n_left, "right": prep.n_right} if prep.mode == "link" else {"all": prep.n_left},
        "candidates": n,
        "all_pairs": total,
        "reduction_ratio": round(1.0 - n / total, 6) if total else None,
        "candidates_per_left": round(n / prep.n_left, 3) if prep.n_left else None,
        "per_record": _per_record(candidates, prep),
        "blockers": per_blocker,
        "keys": _key_reports(plan.key_stats, plan.caps),
    }
    report.update(completeness)
    return report


def _per_record(candidates: DataFrame, prep: Prepared) -> dict[str, Any]:
    """Distribution of candidates per record, records without any candidate included
    (both sides' histograms from one query)."""
    # Dedupe: a record takes part as either side of its unordered pairs.
    right_side = "right" if prep.mode == "link" else "left"
    ids = candidates.select(F.lit("left").alias("side"), F.col("left_id").alias("id")).unionAll(
        candidates.select(F.lit(right_side).alias("side"), F.col("right_id").alias("id"))
    )
    n_records = {"left": prep.n_left, "right": prep.n_right} if prep.mode == "link" else {"left": prep.n_left}
    per = ids.groupBy("side", "id").agg(F.count("*").alias("n"))
    histograms: dict[str, dict[int, int]] = {side: {} for side in n_records}
    for r in per.groupBy("side", "n").agg(F.count("*").alias("records")).collect():
        histograms[r["side"]][int(r["n"])] = int(r["records"])
    out: dict[str, Any] = {}
    for side, histogram in histograms.items():
        with_any = sum(histogram.values())
        if n_records[side] > with_any:
            histogram[0] = n_records[side] - with_any
        out[side] = _summary(histogram)
    return out


def _summary(histogram: dict[int, int]) -> dict[str, Any]:
    """Mean, quantiles and max from a {candidates: records} histogram."""
    total = sum(histogram.values())
    if not total:
        return {"records": 0}
    ordered = sorted(histogram.items())
    quantiles: dict[str, int] = {}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        seen = 0
        for value, count in ordered:
            seen += count
            if seen >= q * total:
                quantiles[name] = value
                break
    return {
        "records": total,
        "mean": round(sum(v * c for v, c in ordered) / total, 3),
        **quantiles,
        "max": ordered[-1][0],
        "without_candidates": histogram.get(0, 0),
        "histogram": {str(v): c for v, c in ordered},
    }


def _per_blocker(candidates: DataFrame, gold: DataFrame | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per blocker: candidates it produced, those only it produced, gold pairs it found;
    and the pair completeness. One query: the candidates full-outer-joined with ``gold``,
    one row per pair and blocker; a gold pair no blocker found is a row with no blocker."""
    pairs = candidates.select("left_id", "right_id", "blockers")
    if gold is not None:
        pairs = pairs.join(gold.withColumn("gold", F.lit(1)), ["left_id", "right_id"], "full_outer")
    else:
        pairs = pairs.withColumn("gold", F.lit(None).cast("int"))
    exploded = pairs.select(
        F.posexplode_outer("blockers").alias("position", "blocker"), F.size("blockers").alias("k"), "gold"
    )
    is_gold = F.coalesce("gold", F.lit(0))
    rows = exploded.groupBy("blocker").agg(
        F.count("*").alias("candidates"),
        F.sum(F.when(F.col("k") == 1, 1).otherwise(0)).alias("only_this"),
        F.sum(is_gold).alias("gold_found"),
        # Each gold candidate once: at its first blocker.
        F.sum(F.when(F.col("position") == 0, is_gold).otherwise(0)).alias("gold_pairs_found"),
    ).collect()
    blockers = {
        r["blocker"]: {k: int(r[k]) for k in ("candidates", "only_this", "gold_found")}
        for r in sorted((r for r in rows if r["blocker"] is not None), key=lambda r: r["blocker"])
    }
    if gold is None:
        for info in blockers.values():
            del info["gold_found"]
        return blockers, {"pair_completeness": None, "gold_pairs": 0}
    found = sum(int(r["gold_pairs_found"]) for r in rows if r["blocker"] is not None)
    missed = sum(int(r["candidates"]) for r in rows if r["blocker"] is None)
    n_gold = found + missed
    return blockers, {
        "pair_completeness": round(found / n_gold, 6) if n_gold else None,
        "gold_pairs": n_gold,
        "gold_found": found,
    }


def _key_reports(key_stats: dict[str, DataFrame], caps: dict[str, int]) -> dict[str, Any]:
    """Per key blocker: the largest keys kept and dropped, and what the cap dropped (every
    blocker's totals in one query, their largest keys in another)."""
    if not key_stats:
        return {}
    tagged = [
        stats.select(F.lit(name).alias("blocker"), "key", "records", "pairs", "dropped")
        for name, stats in key_stats.items()
    ]
    everything = reduce(DataFrame.unionByName, tagged)
    totals = everything.groupBy("blocker", "dropped").agg(
        F.count("*").alias("keys"), F.sum("pairs").alias("pairs")
    ).collect()
    tops = [
        t.where(F.col("dropped") == flag).orderBy(F.desc("records"), "key").limit(TOP_KEYS)
        for t in tagged
        for flag in (False, True)
    ]
    largest = reduce(DataFrame.unionByName, tops).collect()
    report: dict[str, Any] = {}
    for name in key_stats:
        by_flag = {bool(r["dropped"]): r for r in totals if r["blocker"] == name}
        kept, dropped = by_flag.get(False), by_flag.get(True)

        def top(flag: bool) -> list[dict[str, Any]]:
            rows = [r for r in largest if r["blocker"] == name and bool(r["dropped"]) == flag]
            rows.sort(key=lambda r: (-r["records"], r["key"]))
            return [{"key": r["key"], "records": int(r["records"]), "pairs": int(r["pairs"])} for r in rows]

        report[name] = {
            "cap_records": caps.get(name),
            "keys_kept": int(kept["keys"]) if kept else 0,
            "pairs_from_kept_keys": int(kept["pairs"]) if kept else 0,
            "keys_dropped": int(dropped["keys"]) if dropped else 0,
            "pairs_avoided": int(dropped["pairs"]) if dropped else 0,
            "largest_kept": top(False),
            "largest_dropped": top(True),
        }
    return report


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """report.json and report.png (candidates per left record; candidates per blocker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "report.json"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    hist = report["per_record"]["left"].get("histogram", {})
    ax1.bar([int(k) for k in hist], list(hist.values()), width=1.0, color="#4477aa")
    ax1.set_xlabel("candidates per left record")
    ax1.set_ylabel("records")
    pc = report.get("pair_completeness")
    ax1.set_title(
        f"{report['candidates']} candidates, RR {report['reduction_ratio']}"
        + (f", PC {pc:.3f}" if pc is not None else "")
    )
    names = list(report["blockers"])
    made = [report["blockers"][b]["candidates"] for b in names]
    only = [report["blockers"][b]["only_this"] for b in names]
    ax2.barh(names, made, color="#88ccee", label="candidates")
    ax2.barh(names, only, color="#117733", label="only from this blocker")
    ax2.set_xlabel("pairs")
    ax2.legend(loc="lower right")
    fig.tight_layout()
    png_path = folder / "report.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return json_path, png_path
