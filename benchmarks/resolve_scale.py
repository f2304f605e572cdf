"""Resolve at scale: N records, ~N match edges, through the real ``resolve`` job.

The graph mixes what resolution meets in practice with a worst case for round counts:
90% of the records in clusters of 6 (a chain plus one chord: a cycle), 10% in ONE chain
whose record ids are shuffled (label propagation would need ~N/10 rounds there). Record
ids are a permutation of the index, so component minima sit anywhere.

Baseline in the same run: union-find in Python on the driver over the collected edges
(what the job must never do at scale, but the fastest single-machine reference), and a
check that both give the same components.

    .venv/bin/python benchmarks/resolve_scale.py --records 1000000 --out bench_resolve.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from em_spark.config import SparkConf, load_config
from em_spark.pipeline import run_job
from em_spark.session import get_spark
from em_spark.tables import PREDICTIONS, RECORDS, Lakehouse, pair_id_col

CLUSTER = 6
PRIME = 7919  # coprime with powers of ten: i -> (i * PRIME + 13) mod n permutes the ids


def _rid(i, n: int):
    return F.format_string("r%09d", (i * F.lit(PRIME) + F.lit(13)) % F.lit(n))


def build_graph(spark: SparkSession, n: int) -> tuple[DataFrame, DataFrame]:
    """(records, predictions) DataFrames of the synthetic graph (dedupe mode)."""
    clustered = (n * 9 // 10) // CLUSTER * CLUSTER
    ids = spark.range(n).select(F.col("id").alias("i"))
    now = F.current_timestamp()
    records = ids.select(
        F.lit("left").alias("source"),
        _rid(F.col("i"), n).alias("record_id"),
        F.create_map(F.lit("name"), F.concat(F.lit("entity "), F.col("i").cast("string"))).alias("attributes"),
        F.sha2(F.col("i").cast("string"), 256).alias("record_hash"),
        F.lit("bench").alias("run_id"),
        now.alias("ingested_at"),
    )
    e = spark.range(n).select(F.col("id").alias("i"))
    # clusters: chain i -> i+1 inside each cluster, plus a chord first -> last
    chain = e.where((F.col("i") < clustered) & (F.col("i") % CLUSTER != CLUSTER - 1)).select(
        F.col("i").alias("x"), (F.col("i") + 1).alias("y")
    )
    chord = e.where((F.col("i") < clustered) & (F.col("i") % CLUSTER == 0)).select(
        F.col("i").alias("x"), (F.col("i") + CLUSTER - 1).alias("y")
    )
    # the long chain over the remaining records, in index order (ids are shuffled)
    tail = e.where((F.col("i") >= clustered) & (F.col("i") < n - 1)).select(
        F.col("i").alias("x"), (F.col("i") + 1).alias("y")
    )
    edges = chain.unionByName(chord).unionByName(tail)
    a, b = _rid(F.col("x"), n), _rid(F.col("y"), n)
    lo, hi = F.least(a, b), F.greatest(a, b)
    predictions = edges.select(
        pair_id_col(lo, hi).alias("pair_id"),
        lo.alias("left_id"),
        hi.alias("right_id"),
        F.lit(0.9).alias("p_match"),
        F.lit("match").alias("verdict"),
        F.lit(None).cast("string").alias("rationale"),
        F.lit("bench").alias("decided_by"),
        F.lit("ok").alias("status"),
        F.lit(None).cast("string").alias("error"),
        F.lit(None).cast("string").alias("model_uri"),
        F.lit("bench").alias("run_id"),
        now.alias("scored_at"),
    )
    return records, predictions


def write_table(lake: Lakehouse, name: str, df: DataFrame, schema) -> None:
    """Setup only (not timed): a plain Delta append into the contract table."""
    ref = lake.ensure(name)
    df.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields]).write.format("delta").mode(
        "append"
    ).save(ref.path)


def union_find_components(edges: list[tuple[str, str]]) -> int:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    nodes = set(parent) | {v for e in edges for v in e}
    return len({find(x) for x in nodes})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--out", default="bench_resolve.json")
    parser.add_argument("--root", default=None, help="lakehouse folder (default: a temp folder, removed)")
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args(argv)

    root = Path(args.root or tempfile.mkdtemp(prefix="em_resolve_bench_")) / "lakehouse"
    spark_conf = {
        "spark.sql.shuffle.partitions": str(args.partitions),
        "spark.driver.memory": "6g",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.databricks.delta.snapshotPartitions": "2",
    }
    config = load_config(base={
        "mode": "dedupe",
        "lakehouse": {"root": str(root)},
        "reports_dir": str(root / "_reports"),
        "spark": {"master": "local[2]", "conf": spark_conf},
    })
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = get_spark(SparkConf(master="local[2]", conf=spark_conf))
    lake = Lakehouse.from_config(spark, config)
    t0 = time.monotonic()
    records, predictions = build_graph(spark, args.records)
    write_table(lake, "records", records, RECORDS)
    write_table(lake, "predictions", predictions, PREDICTIONS)
    edges = lake.read("predictions").count()
    setup_s = time.monotonic() - t0

    t0 = time.monotonic()
    run = run_job("resolve", config, lake)
    resolve_s = time.monotonic() - t0

    t0 = time.monotonic()
    pairs = lake.read("predictions").select("left_id", "right_id").toPandas()
    collect_s = time.monotonic() - t0
    t0 = time.monotonic()
    uf_components = union_find_components(list(zip(pairs["left_id"], pairs["right_id"])))
    union_find_s = time.monotonic() - t0
    entities_on_edges = (
        lake.read("entities").groupBy("entity_id").count().where("count > 1").count()
    )
    result = {
        "benchmark": "resolve_scale",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, local[2]; shared with other engineers' jobs",
        "records": args.records,
        "match_edges": edges,
        "resolve_seconds": round(resolve_s, 1),
        "rounds": run.counts["rounds"],
        "entities": run.counts["entities"],
        "max_entity_size": run.counts["max_entity_size"],
        "multi_record_entities": entities_on_edges,
        "baseline_union_find_seconds": round(union_find_s, 1),
        "baseline_collect_seconds": round(collect_s, 1),
        "baseline_multi_record_components": uf_components,
        "components_agree": uf_components == entities_on_edges,
        "ratio_resolve_to_union_find_with_collect": round(resolve_s / (union_find_s + collect_s), 2),
        "setup_seconds": round(setup_s, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))
    if args.root is None:
        shutil.rmtree(root.parent, ignore_errors=True)
    return 0 if result["components_agree"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
