"""SQL: the tables and the review views, `em-spark sql`, and the README's example queries."""

from __future__ import annotations

import re
from pathlib import Path

from em_spark.cli import main
from em_spark.sql import register_views
from results_tables import MARKUP, results_lake

RESULTS_DOC = Path(__file__).resolve().parents[1] / "docs" / "RESULTS.md"


def test_review_views(spark, tmp_path_factory):
    _config, lake, _runs = results_lake(spark, tmp_path_factory)
    names = register_views(lake)
    assert {"records", "labels", "candidates", "predictions", "entities", "match_review", "entity_members"} <= set(names)
    rows = {r.left_id + "-" + r.right_id: r for r in spark.sql("SELECT * FROM match_review").collect()}
    assert len(rows) == 8  # one per prediction
    first = rows["L1-R1"]
    assert (first.left_name, first.right_name, first.verdict, first.label, first.split) == (
        "Cafe Luna", "Cafe Luna", "match", 1, "test")
    assert first.p_match == 0.9 and "Cafe Luna" in first.rationale
    assert first.left_attributes["city"] == "san francisco"
    assert rows["L5-R5"].right_name == MARKUP
    assert rows["L6-R7"].label is None  # unlabeled
    members = {(r.source, r.record_id): r for r in spark.sql("SELECT * FROM entity_members").collect()}
    assert len(members) == 16
    assert members[("right", "R1")].entity_id == "left:L1" and members[("right", "R1")].entity_size == 2
    assert members[("left", "L3")].entity_size == 1 and members[("left", "L3")].name == "Blue Moon Diner"


def test_example_queries_of_the_docs_run(spark, tmp_path_factory):
    _config, lake, _runs = results_lake(spark, tmp_path_factory)
    register_views(lake)
    queries = re.findall(r"```sql\n(.*?)```", RESULTS_DOC.read_text(), re.S)
    assert len(queries) == 5
    results = [spark.sql(q).collect() for q in queries]
    assert all(results), "every example query returns rows on the fixture tables"
    largest = results[2]
    assert largest[0].entity_size == 2 and sorted(largest[0].names) == ["Cafe Luna", "Cafe Luna"]
    missed = {(r.left_id, r.right_id) for r in results[3]}
    assert missed == {("L7", "R7"), ("L5", "R6")}


def test_sql_command_prints_results(spark, tmp_path_factory, capsys):
    config, _lake, _runs = results_lake(spark, tmp_path_factory)
    code = main(["sql", "--set", f"lakehouse.root={config.lakehouse.root}",
                 "SELECT entity_id, entity_size FROM entity_members WHERE record_id = 'R2'"])
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(r"\|\s*left:L2\s*\|\s*2\s*\|", out), out
    code = main(["sql", "--set", f"lakehouse.root={config.lakehouse.root}", "SELECT nope FROM match_review"])
    assert code == 2
    assert "nope" in capsys.readouterr().err
