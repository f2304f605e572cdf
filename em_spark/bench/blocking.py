"""``em-spark bench blocking``: block one dataset folder and measure it against its gold.

The folder has the DeepMatcher layout (tableA.csv, tableB.csv, train/valid/test.csv with
ltable_id, rtable_id, label). Gold = the positive pairs of all three splits. ``--dedupe``
blocks tableA.csv with itself and counts a gold pair whichever way round it is written
(pairs naming an id that is not in tableA are left out of the gold, and counted).
Columns that hold the answer (WDC ``cluster_id``) never reach a blocker.

Beside em-spark's blocking, the same run measures a plain baseline: TF-IDF character
3-gram cosine top-k from tableA (scikit-learn), as in docs/ANCHORS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from em_spark.blocking.core import plan_blocking
from em_spark.blocking.encoder import with_learned_encoder
from em_spark.blocking.report import blocking_report
from em_spark.config import Config, SourceConf, load_config
from em_spark.errors import InputError
from em_spark.ingest import LEFT, RIGHT, load_records, read_source
from em_spark.session import get_spark

ANSWER_COLUMNS = ["cluster_id"]
SPLITS = ("train", "valid", "test")
BASELINE_KS = (5, 10, 20)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="em-spark bench blocking", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="dataset folder (tableA.csv, tableB.csv, splits)")
    p.add_argument("--dedupe", action="store_true", help="block tableA.csv with itself")
    p.add_argument("--config", help="YAML config (its block section is used)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF top-k baseline")
    return p.parse_args(list(argv))


def load_dataset(
    spark: SparkSession, folder: Path, dedupe: bool
) -> tuple[DataFrame, DataFrame, dict[str, int], DataFrame]:
    """(records, gold pairs oriented like candidates with their split, notes, labeled
    pairs) of a dataset folder."""
    for name in ("tableA.csv",) + (() if dedupe else ("tableB.csv",)) + tuple(f"{s}.csv" for s in SPLITS):
        if not (folder / name).is_file():
            raise InputError(f"{folder}: {name} not found (expected the DeepMatcher layout)")
    records = load_records(spark, SourceConf(path=str(folder / "tableA.csv"), exclude=ANSWER_COLUMNS), LEFT, "bench")
    if not dedupe:
        right = load_records(spark, SourceConf(path=str(folder / "tableB.csv"), exclude=ANSWER_COLUMNS), RIGHT, "bench")
        records = records.unionByName(right)
    pairs = None
    for split in SPLITS:
        part = read_source(spark, str(folder / f"{split}.csv"), "csv").withColumn("split", F.lit(split))
        pairs = part if pairs is None else pairs.unionByName(part)
    assert pairs is not None
    labels = pairs.select(
        F.trim("ltable_id").alias("left_id"),
        F.trim("rtable_id").alias("right_id"),
        F.trim("label").cast("int").alias("label"),
        "split",
    )
    positive = labels.where(F.col("label") == 1).select(
        F.col("left_id").alias("l"), F.col("right_id").alias("r"), "split"
    )
    notes: dict[str, int] = {}
    if dedupe:
        ids = records.select(F.col("record_id").alias("id"))
        inside = positive.join(ids.withColumnRenamed("id", "l"), "l", "left_semi").join(
            ids.withColumnRenamed("id", "r"), "r", "left_semi"
        )
        notes["gold_pairs_outside_tableA"] = (
            positive.select("l", "r").distinct().count() - inside.select("l", "r").distinct().count()
        )
        notes["gold_self_pairs"] = inside.where(F.col("l") == F.col("r")).select("l", "r").distinct().count()
        gold = inside.where(F.col("l") != F.col("r")).select(
            F.least("l", "r").alias("left_id"), F.greatest("l", "r").alias("right_id"), "split"
        )
    else:
        gold = positive.select(F.col("l").alias("left_id"), F.col("r").alias("right_id"), "split")
    return records, gold.distinct(), notes, labels


def tfidf_baseline(records: DataFrame, gold: DataFrame, dedupe: bool) -> dict[str, Any]:
    """PC of TF-IDF char-3-gram cosine top-k from the left table, k in BASELINE_KS.

    Record-scale data (the benchmark tables) are collected to the driver on purpose: this
    is the single-machine reference, not em-spark's method.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    t0 = time.monotonic()
    rows = records.select(
        "source", "record_id", F.concat_ws(" ", F.map_values("attributes")).alias("text")
    ).collect()
    left = [(r["record_id"], (r["text"] or "").lower()) for r in rows if r["source"] == LEFT]
    right = left if dedupe else [(r["record_id"], (r["text"] or "").lower()) for r in rows if r["source"] == RIGHT]
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), sublinear_tf=True, dtype=np.float32)
    vec.fit([t for _, t in left] + ([] if dedupe else [t for _, t in right]))
    xl, xr = vec.transform([t for _, t in left]), vec.transform([t for _, t in right])
    right_ids = np.array([i for i, _ in right])
    k_max = max(BASELINE_KS)
    ranked: list[np.ndarray] = []
    for start in range(0, xl.shape[0], 512):
        sims = (xl[start : start + 512] @ xr.T).toarray()
        if dedupe:
            for row in range(sims.shape[0]):
                sims[row, start + row] = -1.0  # never a record with itself
        top = np.argpartition(-sims, min(k_max, sims.shape[1] - 1), axis=1)[:, :k_max]
        order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
        ranked.append(np.take_along_axis(top, order, axis=1))
    best = np.vstack(ranked)
    gold_set = {(r["left_id"], r["right_id"]) for r in gold.collect()}
    out: dict[str, Any] = {"method": "TF-IDF char-3gram cosine top-k from tableA (scikit-learn)"}
    for k in BASELINE_KS:
        found = set()
        for i, (lid, _) in enumerate(left):
            for rid in right_ids[best[i, :k]]:
                found.add((min(lid, rid), max(lid, rid)) if dedupe else (lid, rid))
        out[f"k{k}"] = {
            "pair_completeness": round(len(found & gold_set) / len(gold_set), 4) if gold_set else None,
            "candidates": len(found),
            "candidates_per_left": round(len(found) / len(left), 2),
        }
    out["seconds"] = round(time.monotonic() - t0, 2)
    return out


def completeness_by_split(candidates: DataFrame, gold_by_split: DataFrame) -> dict[str, float]:
    """Pair completeness on each split's positives alone: with a learned encoder only the
    splits it did not learn from are a fair measure."""
    found = gold_by_split.join(candidates.select("left_id", "right_id", F.lit(1).alias("hit")), ["left_id", "right_id"], "left")
    rows = found.groupBy("split").agg(F.count("*").alias("gold"), F.count("hit").alias("found")).collect()
    return {r["split"]: round(r["found"] / r["gold"], 4) for r in sorted(rows, key=lambda r: r["split"])}


def run_bench(spark: SparkSession, folder: Path, config: Config, dedupe: bool, baseline: bool) -> dict[str, Any]:
    mode = "dedupe" if dedupe else "link"
    records, gold_by_split, notes, labels = load_dataset(spark, folder, dedupe)
    records = records.cache()
    gold_by_split = gold_by_split.cache()
    gold = gold_by_split.select("left_id", "right_id").distinct()
    records.count()
    t0 = time.monotonic()
    conf, encoder = with_learned_encoder(records, labels, config.block, mode)
    plan = plan_blocking(records, conf, mode)
    candidates = plan.candidates.cache()
    n = candidates.count()
    seconds = time.monotonic() - t0
    report = blocking_report(plan, candidates, gold)
    result: dict[str, Any] = {
        "dataset": folder.name,
        "mode": mode,
        "pair_completeness": report["pair_completeness"],
        "reduction_ratio": report["reduction_ratio"],
        "candidates": n,
        "candidates_per_left": report["candidates_per_left"],
        "seconds": round(seconds, 2),
        "pair_completeness_by_split": completeness_by_split(candidates, gold_by_split),
        "encoder_fine_tuning": encoder,
        "gold_pairs": report["gold_pairs"],
        "records": report["records"],
        "blockers": report["blockers"],
        "per_record": {side: {k: v for k, v in s.items() if k != "histogram"} for side, s in report["per_record"].items()},
        "keys": {name: {k: v for k, v in info.items() if k != "largest_kept"} for name, info in report["keys"].items()},
        "notes": notes,
        "block_config": config.block.model_dump(mode="json"),
        "machine": f"{platform.machine()}, {_cores()} cores, Spark {spark.version}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if baseline:
        result["baseline"] = tfidf_baseline(records, gold, dedupe)
    candidates.unpersist()
    records.unpersist()
    gold_by_split.unpersist()
    return result


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    folder = Path(args.dataset)
    if not folder.is_dir():
        raise InputError(f"--dataset {folder}: not a folder")
    config = load_config(args.config, args.overrides)
    spark = get_spark(config.spark)
    result = run_bench(spark, folder, config, args.dedupe, not args.no_baseline)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    base = result.get("baseline", {})
    print(
        f"{folder.name} ({result['mode']}): PC {result['pair_completeness']} at "
        f"{result['candidates_per_left']} candidates/left, RR {result['reduction_ratio']}, "
        f"{result['seconds']} s"
        + (f"; baseline PC@10 {base['k10']['pair_completeness']}" if base else "")
        + f" -> {out}"
    )
    return 0
