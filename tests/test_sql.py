"""SQL: the tables and the review views, `em-spark sql`, and the README's example queries."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from em_spark.cli import main
from em_spark.sql import register_views
from conftest import make_config
from em_spark.tables import PREDICTIONS, RECORDS, Lakehouse
from results_tables import MARKUP, _prediction, _record, results_lake

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
    assert re.search(r"^entity_id\s*\|\s*entity_size$", out, re.M), out
    assert re.search(r"^left:L2\s*\|\s*2$", out, re.M), out
    assert out.rstrip().endswith("(1 row)"), out
    code = main(["sql", "--set", f"lakehouse.root={config.lakehouse.root}", "SELECT nope FROM match_review"])
    assert code == 2
    assert "nope" in capsys.readouterr().err


# 500 characters with what a CSV or a table cell must survive: commas, quotes, a line break,
# non-ASCII; Spark's show() cut every value at 20 characters.
LONG_RATIONALE = ('Both are "Cafe Luna", 415-555-0101; café\nsame street, ' * 10)[:500]


def test_sql_formats_print_whole_values(spark, tmp_path, capsys):
    assert len(LONG_RATIONALE) == 500
    root = tmp_path / "lakehouse"
    config = make_config(root)
    lake = Lakehouse.from_config(spark, config)
    lake.merge("records", spark.createDataFrame([_record("left", "L1", 0), _record("right", "R1", 0)], RECORDS))
    lake.merge("predictions", spark.createDataFrame([_prediction("L1", "R1", 0.9, "match", LONG_RATIONALE)], PREDICTIONS))
    query = "SELECT pair_id, p_match, verdict, rationale, left_attributes, label FROM match_review"

    def sql(*args: str, q: str = query) -> str:
        assert main(["sql", "--set", f"lakehouse.root={root}", *args, q]) == 0
        return capsys.readouterr().out

    lines = sql("--format", "json").splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert row["rationale"] == LONG_RATIONALE
    assert (row["p_match"], row["verdict"], row["label"]) == (0.9, "match", None)
    assert row["left_attributes"]["name"] == "Cafe Luna"

    rows = list(csv.DictReader(io.StringIO(sql("--format", "csv"))))
    assert len(rows) == 1
    assert rows[0]["rationale"] == LONG_RATIONALE
    assert (rows[0]["p_match"], rows[0]["verdict"], rows[0]["label"]) == ("0.9", "match", "")
    assert json.loads(rows[0]["left_attributes"])["city"] == "san francisco"

    table = sql()  # the default: a plain table, each row on one line, nothing cut
    assert LONG_RATIONALE.replace("\n", "\\n") in table.splitlines()[2]
    assert "..." not in table and table.rstrip().endswith("(1 row)")
    records = "SELECT source, record_id FROM records ORDER BY source"
    assert sql("--limit", "1", q=records).splitlines()[-1] == "(1 row; more not shown: --limit N, or --limit 0 for all)"
    assert [json.loads(line)["source"] for line in sql("--format", "json", "--limit", "1", q=records).splitlines()] == ["left"]
    assert sql("--limit", "0", q=records).rstrip().endswith("(2 rows)")
