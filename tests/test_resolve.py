"""Resolve: components on chains, stars and cycles in few rounds; stable entity ids."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from pyspark.sql import functions as F

from em_spark.pipeline import run_job
from em_spark.resolve import components
from results_tables import results_lake


def _union_find(edges: list[tuple[str, str]]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}


def _shapes() -> list[tuple[str, str]]:
    """One graph holding a shuffled chain of 1024 nodes, a star, a cycle, a pair and a
    random graph: one Spark run covers every shape."""
    rng = random.Random(7)
    edges = []
    chain = [f"chain:{i:05d}" for i in range(1024)]
    rng.shuffle(chain)  # the smallest key sits somewhere in the middle of the chain
    edges += list(zip(chain, chain[1:]))
    edges += [("star:50", f"star:{i:02d}") for i in range(50) if i != 50]  # hub is not the smallest
    cycle = [f"cycle:{i}" for i in (5, 3, 8, 1, 9, 2)]
    edges += list(zip(cycle, cycle[1:] + cycle[:1]))
    edges += [("pair:b", "pair:a")]
    edges += [(f"rand:{rng.randrange(300):03d}", f"rand:{rng.randrange(300):03d}") for _ in range(220)]
    return [(min(a, b), max(a, b)) for a, b in edges if a != b]


def test_components_of_chains_stars_cycles_in_log_rounds(spark):
    edges = _shapes()
    df = spark.createDataFrame(sorted(set(edges)), "a string, b string")
    assigned, rounds = components(df, local_edges=0)  # the distributed rounds
    got = {r["node"]: r["root"] for r in assigned.collect()}
    assert got == _union_find(edges)
    assert {got[f"chain:{i:05d}"] for i in range(1024)} == {"chain:00000"}
    assert {got[f"star:{i:02d}"] for i in range(50)} == {"star:00"}
    assert {got[f"cycle:{i}"] for i in (1, 2, 3, 5, 8, 9)} == {"cycle:1"}
    assert got["pair:b"] == "pair:a"
    # a chain of n nodes must not take n rounds: alternating large/small star is O(log n)
    assert rounds <= 2 * math.ceil(math.log2(len(got))), rounds


def test_small_graphs_are_solved_in_the_driver_with_the_same_roots(spark):
    edges = _shapes()
    df = spark.createDataFrame(sorted(set(edges)), "a string, b string")
    assigned, rounds = components(df, local_edges=len(set(edges)))
    assert rounds == 0
    assert {r["node"]: r["root"] for r in assigned.collect()} == _union_find(edges)
    # one edge more than the limit: the rounds
    chain = spark.createDataFrame([("n:1", "n:2"), ("n:2", "n:3"), ("n:3", "n:4")], "a string, b string")
    assigned, rounds = components(chain, local_edges=2)
    assert rounds > 0 and {r["root"] for r in assigned.collect()} == {"n:1"}
    empty, rounds = components(spark.createDataFrame([], "a string, b string"))
    assert (empty.count(), rounds) == (0, 0)


def test_entities_cover_every_record_with_stable_ids(spark, tmp_path_factory):
    config, lake, runs = results_lake(spark, tmp_path_factory)
    entities = {(r.source, r.record_id): r.entity_id for r in lake.read("entities").collect()}
    assert len(entities) == lake.read("records").count() == 16  # singletons included
    # accepted matches: L1-R1, L2-R2, L4-R4 (a false match, still accepted), L6-R7
    for left, right in (("L1", "R1"), ("L2", "R2"), ("L4", "R4"), ("L6", "R7")):
        assert entities[("left", left)] == entities[("right", right)] == f"left:{left}"
    assert entities[("left", "L3")] == "left:L3" and entities[("right", "R3")] == "right:R3"
    assert runs["resolve"].counts["entities"] == 12 and runs["resolve"].counts["singletons"] == 8
    stats = json.loads(Path(runs["resolve"].checks["clusters_report"]).read_text())
    assert stats["size_histogram"] == {"1": 8, "2": 4}
    assert stats["largest_clusters"][0] == {"entity_id": "left:L1", "size": 2}

    # a re-run assigns the same ids and commits nothing
    version = lake.version("entities")
    again = run_job("resolve", config, lake)
    assert again.counts["changed_rows"] == 0
    assert lake.version("entities") == version
    assert {(r.source, r.record_id): r.entity_id for r in lake.read("entities").collect()} == entities
    assert lake.read("entities").where(F.col("run_id") == again.run_id).count() == 0
