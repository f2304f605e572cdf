"""Small records / labels / candidates / predictions tables for the results tests
(evaluate, resolve, SQL views, notebooks), written through ``Lakehouse.merge``.

The labeled test split, with its hand-computed outcome (pairs Ln-Rn):
  1: label 1, match 0.9          -> tp        5: label 0, no_match 0.1  -> tn
  2: label 1, match 0.8          -> tp        6: label 0, no_match 0.2  -> tn
  3: label 1, no_match 0.4       -> fn        7: label 1, never proposed -> fn (or excluded)
  4: label 0, match 0.7          -> fp        8: label 0, failed (error) -> tn
Unlabeled: (L6, R7) match 0.95 with markup in its rationale; (R5's name holds markup).
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import SparkSession

from em_spark.tables import CANDIDATES, LABELS, PREDICTIONS, RECORDS, Lakehouse, pair_id

NOW = datetime(2026, 11, 27, 12, 0, 0)
RUN = "fixture"

NAMES = ["Cafe Luna", "Golden Dragon", "Blue Moon Diner", "Pasta Bella", "Taco Town", "Sushi Zen", "Le Bistro", "Burger Barn"]
CITIES = ["san francisco", "new york", "chicago", "boston", "austin", "seattle", "denver", "miami"]
MARKUP = '<img src=x onerror="document.title=\'pwned\'"><script>window.pwned=1</script>'

# (n, label or None, verdict or None (= not proposed), p_match, blockers, rationale)
PAIRS = [
    (1, 1, "match", 0.9, ["token", "topk"], 'Both are "Cafe Luna" in san francisco, phone 415-555-0101.'),
    (2, 1, "match", 0.8, ["token"], 'Same name "Golden Dragon" and the same city.'),
    (3, 1, "no_match", 0.4, ["topk"], None),
    (4, 0, "match", 0.7, ["token"], "Both are Pasta Bella, a match."),
    (5, 0, "no_match", 0.1, ["token"], None),
    (6, 0, "no_match", 0.2, ["sorted"], None),
    (7, 1, None, None, None, None),
    (8, 0, "error", None, ["token"], None),
]
UNLABELED_MATCH = ("L6", "R7", 0.95, f"They match: {MARKUP} & more")
TRAIN_LABELS = [("L1", "R2", 0), ("L5", "R6", 1)]  # L5-R6: a positive blocking missed


def _record(source: str, rid: str, i: int) -> dict:
    name = NAMES[i % len(NAMES)]
    if (source, rid) == ("right", "R5"):
        name = MARKUP
    attrs = {"name": name, "city": CITIES[i % len(CITIES)], "phone": f"415-555-01{i:02d}"}
    return {
        "source": source, "record_id": rid, "attributes": attrs, "record_hash": f"h-{source}-{rid}",
        "run_id": RUN, "ingested_at": NOW,
    }


def write_fixture_tables(spark: SparkSession, lake: Lakehouse) -> None:
    records = [_record("left", f"L{i}", i - 1) for i in range(1, 9)]
    records += [_record("right", f"R{i}", i - 1) for i in range(1, 9)]
    labels, candidates, predictions = [], [], []
    for n, label, verdict, p, blockers, rationale in PAIRS:
        left, right = f"L{n}", f"R{n}"
        pid = pair_id(left, right)
        labels.append({"pair_id": pid, "left_id": left, "right_id": right, "label": label, "split": "test", "run_id": RUN})
        if verdict is None:
            continue
        candidates.append({"pair_id": pid, "left_id": left, "right_id": right, "blockers": blockers, "score": 1.0, "run_id": RUN})
        predictions.append(_prediction(left, right, p, verdict, rationale))
    for left, right, label in TRAIN_LABELS:
        labels.append({"pair_id": pair_id(left, right), "left_id": left, "right_id": right, "label": label, "split": "train", "run_id": RUN})
    left, right, p, rationale = UNLABELED_MATCH
    candidates.append({"pair_id": pair_id(left, right), "left_id": left, "right_id": right, "blockers": ["token"], "score": 1.0, "run_id": RUN})
    predictions.append(_prediction(left, right, p, "match", rationale))

    lake.merge("records", spark.createDataFrame(records, RECORDS))
    lake.merge("labels", spark.createDataFrame(labels, LABELS))
    lake.merge("candidates", spark.createDataFrame(candidates, CANDIDATES))
    lake.merge("predictions", spark.createDataFrame(predictions, PREDICTIONS))


def _prediction(left: str, right: str, p: float | None, verdict: str, rationale: str | None) -> dict:
    failed = verdict == "error"
    return {
        "pair_id": pair_id(left, right), "left_id": left, "right_id": right, "p_match": p,
        "verdict": verdict, "rationale": rationale, "rationale_by": "student" if rationale else None,
        "decided_by": "student", "status": "failed" if failed else "ok", "error": "RuntimeError: <boom>" if failed else None,
        "model_uri": "models:/fixture/1", "run_id": RUN, "scored_at": NOW,
    }


# --- one lake for the whole test run (evaluate, resolve, SQL, notebooks read it) ----------

_BUILT: dict[str, tuple] = {}


def results_lake(spark: SparkSession, tmp_path_factory) -> tuple:
    """(config, lake, runs): the fixture tables plus one evaluate and one resolve run,
    built once per test session (Delta commits are the slow part of these tests)."""
    if "lake" not in _BUILT:
        from conftest import make_config

        from em_spark.pipeline import run_job

        root = tmp_path_factory.mktemp("results") / "lakehouse"
        root.mkdir()
        config = make_config(root, reports_dir=str(root / "_reports"))
        lake = Lakehouse.from_config(spark, config)
        write_fixture_tables(spark, lake)
        runs = {job: run_job(job, config, lake) for job in ("evaluate", "resolve")}
        _BUILT["lake"] = (config, lake, runs)
    return _BUILT["lake"]
