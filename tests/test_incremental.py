"""match-new: new records are blocked, scored and resolved alone; a second run is a no-op."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml
from pyspark.sql import functions as F

from conftest import DEMO_DATA, make_config
from em_spark.cli import main
from em_spark.incremental import NewRecords, match_new
from em_spark.pipeline import run_job
from em_spark.serialize import SerializerSettings, serialize_record
from em_spark.student.inference import save_student
from em_spark.student.presets import build_preset
from em_spark.tables import Lakehouse
from test_resolve import _union_find

TABLES = ("records", "candidates", "predictions", "entities")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_match_new_touches_only_new_records_and_is_idempotent(spark, tmp_path, lake_root):
    left, right = _rows(DEMO_DATA / "tableA.csv")[:12], _rows(DEMO_DATA / "tableB.csv")
    left_csv = _write(tmp_path / "left.csv", left)
    right_csv = _write(tmp_path / "right.csv", right[:12])
    # two arrivals on the right that copy left records: blocking must pair them
    arrivals = [{**left[i], "id": f"new-{i}"} for i in (0, 1)]
    new_csv = _write(tmp_path / "new.csv", arrivals)
    # An untrained tiny student with threshold 0: every scored pair is a match, so the
    # new records' pairs merge entities (what the entity update must get right).
    model, tokenizer = build_preset("tiny", [serialize_record(r) for r in left])
    save_student(model, tokenizer, tmp_path / "model", 0.0, SerializerSettings(), None, extra={})
    config = make_config(
        lake_root,
        reports_dir=str(lake_root / "_reports"),
        ingest={"left": {"path": str(left_csv)}, "right": {"path": str(right_csv)}},
        block={"topk": {"enabled": False}},  # token blocking alone: fewer Spark jobs
        score={"model_uri": str(tmp_path / "model"), "prefilter": False, "rationale": "none"},
    )
    lake = Lakehouse.from_config(spark, config)
    for job in ("ingest", "block", "score", "resolve"):
        run_job(job, config, lake)
    before = {r.pair_id: (r.run_id, r.scored_at) for r in lake.read("predictions").collect()}

    run = match_new(config, NewRecords(str(new_csv), source="right"), lake)
    assert run.counts["new_or_changed_records"] == 2 and run.counts["involved_records"] == 2
    new_ids = {r["id"] for r in arrivals}
    predictions = lake.read("predictions").collect()
    assert lake.read("records").count() == 26
    # old predictions untouched; every new one pairs a new record
    assert {p.pair_id: (p.run_id, p.scored_at) for p in predictions if p.pair_id in before} == before
    added = [p for p in predictions if p.pair_id not in before]
    assert added and all(p.right_id in new_ids for p in added)
    assert run.counts["scored"] == len(added)
    assert lake.read("predictions").count() == lake.read("candidates").count()
    # entities: the same as resolving everything from scratch
    edges = [(f"left:{p.left_id}", f"right:{p.right_id}") for p in predictions if p.verdict == "match"]
    roots = _union_find(edges)
    entities = {(r.source, r.record_id): r.entity_id for r in lake.read("entities").collect()}
    assert len(entities) == 26
    for (source, record_id), entity in entities.items():
        key = f"{source}:{record_id}"
        assert entity == roots.get(key, key), key

    # a second run, through the command line, commits nothing
    versions = {t: lake.version(t) for t in TABLES}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()))
    assert main(["match-new", "--config", str(config_file), "--records", str(new_csv), "--source", "right"]) == 0
    assert {t: lake.version(t) for t in TABLES} == versions
    last = lake.read("runs").where(F.col("job") == "match-new").orderBy(F.desc("started_at")).first()
    assert last.status == "succeeded" and last.counts["involved_records"] == 0

    # A changed arrival is re-stored and its pairs re-scored; a stored record whose entity
    # row is missing (a match-new that stopped before its last step) is picked up again.
    lake.spark.sql(f"DELETE FROM {lake.ref('entities').sql} WHERE record_id = 'new-0'")
    changed = [arrivals[0], {**arrivals[1], "name": arrivals[1]["name"] + " revised"}]
    changed_csv = _write(tmp_path / "changed.csv", changed)
    run = match_new(config, NewRecords(str(changed_csv), source="right"), lake)
    assert run.counts["changed_records"] == 1 and run.counts["new_or_changed_records"] == 1
    assert run.counts["involved_records"] == 2
    stored = {r.record_id: r.attributes["name"] for r in lake.read("records").where(F.col("source") == "right").collect()}
    assert stored["new-1"].endswith(" revised")
    rescored = [p for p in lake.read("predictions").collect() if p.right_id == "new-1"]
    assert rescored and all(p.run_id == run.run_id for p in rescored)
    assert lake.read("entities").count() == 26
