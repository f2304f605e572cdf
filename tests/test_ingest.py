"""Ingest rules on real local Spark + Delta: bad input -> clear error, no table version."""

from __future__ import annotations

from pathlib import Path

import yaml

from em_spark.cli import main
from em_spark.pipeline import run_job
from em_spark.tables import Lakehouse
from tests.conftest import DEMO_DATA, TEST_SPARK_CONF


def write_config(root: Path, left: Path, right: Path | None, labels: list[dict] | None = None, **extra) -> Path:
    cfg = {
        "lakehouse": {"root": str(root)},
        "spark": {"master": "local[2]", "conf": TEST_SPARK_CONF},
        "mode": "link" if right is not None else "dedupe",
        "ingest": {"left": {"path": str(left)}, "labels": labels or []},
    }
    if right is not None:
        cfg["ingest"]["right"] = {"path": str(right)}
    cfg.update(extra)
    path = root.parent / "em.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def demo_labels() -> list[dict]:
    return [{"path": str(DEMO_DATA / f"{s}.csv"), "split": s} for s in ("train", "valid", "test")]


def test_ingest_demo_and_rerun_is_idempotent(spark, lake_root):
    cfg = write_config(lake_root, DEMO_DATA / "tableA.csv", DEMO_DATA / "tableB.csv", demo_labels())
    assert main(["ingest", "--config", str(cfg)]) == 0
    from em_spark.config import load_config

    lake = Lakehouse.from_config(spark, load_config(cfg))
    records = lake.read("records")
    assert records.where("source = 'left'").count() == 533
    assert records.where("source = 'right'").count() == 331
    assert lake.read("labels").count() == 946
    first = sorted((r.source, r.record_id, r.record_hash) for r in records.collect())

    assert main(["ingest", "--config", str(cfg)]) == 0
    again = sorted((r.source, r.record_id, r.record_hash) for r in lake.read("records").collect())
    assert again == first
    assert lake.read("labels").count() == 946
    runs = lake.read("runs").where("job = 'ingest'").collect()
    assert len(runs) == 2 and {r.status for r in runs} == {"succeeded"}
    assert runs[0].counts["records_left"] == 533


def _bad_ingest(lake_root, capsys, left_text: str, labels_text: str | None = None, right_text: str | None = None):
    left = lake_root.parent / "left.csv"
    left.write_bytes(left_text.encode("utf-8"))
    right = None
    if right_text is not None:
        right = lake_root.parent / "right.csv"
        right.write_bytes(right_text.encode("utf-8"))
    labels = None
    if labels_text is not None:
        lp = lake_root.parent / "pairs.csv"
        lp.write_text(labels_text)
        labels = [{"path": str(lp), "split": "train"}]
    cfg = write_config(lake_root, left, right, labels)
    code = main(["ingest", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not (lake_root / "records" / "_delta_log").exists() or _records_versions(lake_root) == 0
    assert not (lake_root / "labels").exists()
    return err.strip().splitlines()[-1]


def _records_versions(root: Path) -> int:
    log = root / "records" / "_delta_log"
    return len([p for p in log.glob("*.json")]) - 1


def test_duplicated_id_names_the_id(spark, lake_root, capsys):
    line = _bad_ingest(lake_root, capsys, "id,name\n1,a\n2,b\n2,c\n")
    assert "duplicated id '2'" in line and "left.csv" in line


def test_missing_id_column(spark, lake_root, capsys):
    line = _bad_ingest(lake_root, capsys, "key,name\n1,a\n")
    assert "id column 'id' not found" in line


def test_null_ids(spark, lake_root, capsys):
    line = _bad_ingest(lake_root, capsys, "id,name\n1,a\n,b\n")
    assert "null or empty ids" in line


def test_empty_table(spark, lake_root, capsys):
    line = _bad_ingest(lake_root, capsys, "id,name\n")
    assert "empty" in line


def test_label_not_binary(spark, lake_root, capsys):
    line = _bad_ingest(lake_root, capsys, "id,name\n1,a\n2,b\n", "ltable_id,rtable_id,label\n1,2,yes\n")
    assert "must be 0 or 1" in line and "'yes'" in line


def test_label_unknown_id(spark, lake_root, capsys):
    line = _bad_ingest(lake_root, capsys, "id,name\n1,a\n2,b\n", "ltable_id,rtable_id,label\n1,7,1\n")
    assert "unknown left id '7'" in line  # dedupe mode: both sides are the one table


def test_labels_files_are_checked_together_and_the_error_names_the_file(spark, lake_root, capsys):
    left = lake_root.parent / "left.csv"
    left.write_text("id,name\n1,a\n2,b\n3,c\n")
    good, bad = lake_root.parent / "good.csv", lake_root.parent / "bad_rows.csv"
    good.write_text("ltable_id,rtable_id,label\n1,2,1\n")
    bad.write_text("ltable_id,rtable_id,pair_label\n1,3,0\n2,3,maybe\n")
    labels = [
        {"path": str(good), "split": "train"},
        {"path": str(bad), "split": "test", "label_column": "pair_label"},
    ]
    assert main(["ingest", "--config", str(write_config(lake_root, left, None, labels))]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(bad) in line and "column 'pair_label' must be 0 or 1, got 'maybe'" in line
    assert not (lake_root / "labels").exists()


def test_link_columns_must_align(spark, lake_root, capsys):
    line = _bad_ingest(lake_root, capsys, "id,name\n1,a\n", right_text="id,title\n1,a\n")
    assert "columns differ" in line and "rename" in line


def test_quoted_fields_and_embedded_newlines(spark, lake_root):
    left = lake_root.parent / "left.csv"
    left.write_text('id,name,desc\n1,"Acme, Inc.","line one\nline two"\n2,"say ""hi""",x\n')
    cfg = write_config(lake_root, left, None)
    from em_spark.config import load_config

    config = load_config(cfg)
    lake = Lakehouse.from_config(spark, config)
    run_job("ingest", config, lake)
    rows = {r.record_id: r.attributes for r in lake.read("records").collect()}
    assert rows["1"]["name"] == "Acme, Inc."
    assert rows["1"]["desc"] == "line one\nline two"
    assert rows["2"]["name"] == 'say "hi"'
