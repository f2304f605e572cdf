"""Resolve: connected components of accepted matches -> ``entities``.

Every record is a node keyed ``<source>:<record_id>`` (the source has no ':', so the key
is unambiguous); every prediction with verdict ``match`` is an edge. Components come from
alternating large-star / small-star rounds (Kiveris et al., "Connected Components in
MapReduce and Beyond", SoCC 2014) in plain DataFrames: O(log n) rounds, so a chain of a
million records takes tens of rounds, not a million. Each round's edges are
``localCheckpoint``-ed so the plan does not grow with the rounds. A graph of at most
``LOCAL_EDGES`` edges (the demo's, a day's new matches) is solved in the driver instead, in
one collect (scipy's connected components): the same roots, without the rounds' dozens of
small Spark jobs.

An entity id is the smallest node key of its component: the same on every re-run, and an
incremental update (``em_spark.incremental``) can merge components by taking the minimum.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from em_spark.config import Config
from em_spark.runs import Run
from em_spark.tables import Lakehouse

log = logging.getLogger(__name__)

KEY_SEP = ":"


def node_key(source: Column | str, record_id: Column | str) -> Column:
    s = F.col(source) if isinstance(source, str) else source
    r = F.col(record_id) if isinstance(record_id, str) else record_id
    return F.concat(s, F.lit(KEY_SEP), r)


def right_source(mode: str) -> str:
    """The source of a pair's right record: dedupe pairs two records of the one table."""
    return "left" if mode == "dedupe" else "right"


def match_edges(predictions: DataFrame, mode: str, min_p_match: float | None = None) -> DataFrame:
    """Accepted matches as undirected edges ``(a, b)`` of node keys, ``a < b``, no self loops."""
    accepted = predictions.where(F.col("verdict") == "match")
    if min_p_match is not None:
        accepted = accepted.where(F.col("p_match") >= F.lit(min_p_match))
    left = node_key(F.lit("left"), F.col("left_id"))
    right = node_key(F.lit(right_source(mode)), F.col("right_id"))
    return (
        accepted.select(F.least(left, right).alias("a"), F.greatest(left, right).alias("b"))
        .where(F.col("a") != F.col("b"))
        .distinct()
    )


def _large_star(edges: DataFrame) -> DataFrame:
    """Each node links its larger neighbours to the smallest node of its neighbourhood."""
    both = edges.select(F.col("a").alias("u"), F.col("b").alias("v")).unionByName(
        edges.select(F.col("b").alias("u"), F.col("a").alias("v"))
    )
    smallest = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    return (
        both.where(F.col("v") > F.col("u"))
        .join(smallest, "u")
        .select(F.col("m").alias("a"), F.col("v").alias("b"))
        .distinct()
    )


def _small_star(edges: DataFrame) -> DataFrame:
    """Each node and its smaller neighbours link to the smallest of them."""
    smallest = edges.groupBy(F.col("b").alias("u")).agg(F.min("a").alias("m"))
    linked = edges.join(smallest, edges["b"] == smallest["u"])
    # (v, m) for each smaller neighbour v != m, and (u, m) for the node itself.
    neighbours = linked.where(F.col("a") != F.col("m")).select(F.col("m").alias("a"), F.col("a").alias("b"))
    itself = smallest.select(F.col("m").alias("a"), F.col("u").alias("b"))
    return neighbours.unionByName(itself).distinct()


def _is_star_forest(edges: DataFrame) -> bool:
    """True when every node has one smaller neighbour, which has none itself: each
    component is then one star around its smallest node. One Spark job."""
    several = edges.groupBy("b").agg(F.count(F.lit(1)).alias("n")).where(F.col("n") > 1).select("b")
    nested = edges.select("a").join(edges.select(F.col("b").alias("a")), "a", "left_semi")
    return several.unionByName(nested.select(F.col("a").alias("b"))).limit(1).count() == 0


# Up to this many edges (a few MB of keys), components are found in the driver.
LOCAL_EDGES = 200_000


def components(edges: DataFrame, max_rounds: int = 100, local_edges: int = LOCAL_EDGES) -> tuple[DataFrame, int]:
    """``(node, root)`` for every node on an edge (root = the component's smallest node),
    and the number of rounds taken (0: solved in the driver, at most ``local_edges``
    edges). ``edges`` has columns ``a < b``."""
    if local_edges > 0:
        few = edges.select("a", "b").limit(local_edges + 1).toArrow()
        if few.num_rows <= local_edges:
            return _local_components(edges.sparkSession, few), 0
    current = edges.select("a", "b").localCheckpoint(eager=True)
    rounds = 0
    while True:
        if rounds >= max_rounds:
            raise RuntimeError(f"resolve: components did not converge in {max_rounds} rounds")
        rounds += 1
        current = _small_star(_large_star(current)).localCheckpoint(eager=True)
        if _is_star_forest(current):
            break
    log.info("resolve: components converged in %d rounds", rounds)
    roots = current.select("a").distinct()
    assigned = current.select(F.col("b").alias("node"), F.col("a").alias("root")).unionByName(
        roots.select(F.col("a").alias("node"), F.col("a").alias("root"))
    )
    return assigned, rounds


def _local_components(spark: SparkSession, edges: pa.Table) -> DataFrame:
    """:func:`components` of a small edge list, in the driver."""
    if edges.num_rows == 0:
        return spark.createDataFrame([], "node string, root string")
    a = edges.column("a").to_numpy(zero_copy_only=False).astype(object)
    b = edges.column("b").to_numpy(zero_copy_only=False).astype(object)
    nodes, index = np.unique(np.concatenate([a, b]), return_inverse=True)  # sorted keys
    n = len(nodes)
    graph = coo_matrix((np.ones(len(a)), (index[: len(a)], index[len(a) :])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    # Nodes are sorted, so a component's smallest index is its smallest key.
    first = np.full(label.max() + 1, n)
    np.minimum.at(first, label, np.arange(n))
    assigned = pa.table({"node": pa.array(nodes, pa.string()), "root": pa.array(nodes[first[label]], pa.string())})
    return spark.createDataFrame(assigned)


def entity_rows(records: DataFrame, assigned: DataFrame, run_id: str) -> DataFrame:
    """``entities`` rows for ``records``; a record on no edge is its own entity."""
    keyed = records.select("source", "record_id", node_key("source", "record_id").alias("node"))
    return keyed.join(assigned, "node", "left").select(
        "source",
        "record_id",
        F.coalesce(F.col("root"), F.col("node")).alias("entity_id"),
        F.lit(run_id).alias("run_id"),
    )


def changed_entity_rows(lake: Lakehouse, rows: DataFrame) -> DataFrame:
    """The rows of ``rows`` that are new or whose entity id differs from the table's."""
    if not lake.exists("entities"):
        return rows
    current = lake.read("entities").select("source", "record_id", "entity_id")
    return rows.join(current, ["source", "record_id", "entity_id"], "left_anti")


def cluster_stats(entities: DataFrame, largest: int) -> dict[str, Any]:
    """Sizes (a histogram), counts and the largest clusters, for the review report."""
    sizes = entities.groupBy("entity_id").agg(F.count(F.lit(1)).alias("size")).cache()
    histogram = {
        int(r["size"]): int(r["entities"])
        for r in sizes.groupBy("size").agg(F.count(F.lit(1)).alias("entities")).collect()
    }
    top = [
        {"entity_id": r["entity_id"], "size": int(r["size"])}
        for r in sizes.orderBy(F.desc("size"), "entity_id").limit(largest).collect()
    ]
    sizes.unpersist()
    records = sum(size * n for size, n in histogram.items())
    return {
        "records": records,
        "entities": sum(histogram.values()),
        "singletons": histogram.get(1, 0),
        "multi_record_entities": sum(n for size, n in histogram.items() if size > 1),
        "records_in_multi_record_entities": sum(size * n for size, n in histogram.items() if size > 1),
        "max_size": max(histogram, default=0),
        "size_histogram": dict(sorted(histogram.items())),
        "largest_clusters": top,
    }


def write_cluster_report(config: Config, stats: dict[str, Any], name: str = "clusters.json") -> Path:
    out = Path(config.reports_dir) / "resolve"
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(stats, indent=2, sort_keys=True), encoding="utf-8")
    return path


def run_resolve(lake: Lakehouse, config: Config, run: Run) -> None:
    conf = config.resolve
    lake.require("records", "predictions")
    records = lake.read("records").select("source", "record_id")
    edges = match_edges(lake.read("predictions"), config.mode, conf.min_p_match)
    assigned, rounds = components(edges, conf.max_rounds)
    rows = entity_rows(records, assigned, run.run_id).localCheckpoint(eager=True)
    changed = changed_entity_rows(lake, rows).localCheckpoint(eager=True)
    n_changed = changed.count()
    # Unchanged rows keep the run id that assigned them, so a re-run commits nothing.
    if n_changed:
        lake.merge("entities", changed)
    stats = cluster_stats(rows, conf.largest_clusters)
    stats["rounds"] = rounds
    stats["changed_rows"] = n_changed
    report = write_cluster_report(config, stats)
    run.count("records", stats["records"])
    run.count("entities", stats["entities"])
    run.count("singletons", stats["singletons"])
    run.count("max_entity_size", stats["max_size"])
    run.count("rounds", rounds)
    run.count("changed_rows", n_changed)
    run.check("clusters_report", str(report))
