"""Scoring: the core (policy, prefilter, failures) and the job on real local Spark + Delta.

The student is the offline ``tiny`` preset, untrained (random weights): these tests are
about plumbing, so verdicts are made at a threshold chosen from its own p_match values.
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from pyspark.sql import Row

from em_spark.errors import InputError
from em_spark.faults import ENV, InjectedFailure
from em_spark.features import fit_prefilter
from em_spark.pipeline import run_job
from em_spark.match_model import MatchModel, choose_verdict_model
from em_spark.rationale import check_rationale
from em_spark.scoring.batch import ScoringPolicy, score_pairs
from em_spark.serialize import SerializerSettings, serialize_record
from em_spark.saved_model import feature_schema_check
from em_spark.student.inference import parse_verdict, save_student
from em_spark.student.presets import build_preset
from em_spark.tables import CANDIDATES, RECORDS, Lakehouse, pair_id
from tests.conftest import make_config
from tests.test_features import _table, demo_pairs

HUGE = "very long description " * 5000  # ~110 KB
MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A saved student (tiny preset) with its feature model, as the train job lays it out."""
    out = tmp_path_factory.mktemp("model")
    records = list(_table(Path(__file__).parent.parent / "em_spark/data/demo/tableA.csv").values())
    # Untrained: its verdicts follow its random weights, so they are seeded (the job test
    # needs some student matches, whatever ran before in the process).
    torch.manual_seed(0)
    model, tokenizer = build_preset("tiny", [serialize_record(r) for r in records])
    save_student(model, tokenizer, out, 0.5, SerializerSettings(), None, extra={})
    fit_prefilter(demo_pairs("train"), demo_pairs("valid")).save(out / "prefilter")
    return out


@pytest.fixture(scope="module")
def scoring_model(model_dir) -> MatchModel:
    return MatchModel.load(str(model_dir), device="cpu")


def _pairs(n: int) -> tuple[list[dict], list[dict], np.ndarray]:
    pairs = demo_pairs("test")[:n]
    return [p[0] for p in pairs], [p[1] for p in pairs], np.array([p[2] for p in pairs])


@pytest.mark.parametrize("rationale", ["none", "matches", "uncertain", "all"])
def test_rationale_policy_is_respected(scoring_model, rationale):
    lefts, rights, _ = _pairs(12)
    student_only = MatchModel(scoring_model.student, None, scoring_model.uri)
    texts = student_only.student.serialize_pairs(lefts, rights)
    p = student_only.student.p_match(texts)
    threshold = float(np.median(p))  # half the pairs are "matches"
    band = float(np.abs(p - threshold).max()) / 2
    policy = ScoringPolicy(rationale, band, MAX_NEW_TOKENS, threshold=threshold)
    out = score_pairs(student_only, lefts, rights, policy)
    expected = {
        "none": np.zeros(len(p), bool),
        "matches": p >= threshold,
        "uncertain": np.abs(p - threshold) <= band,
        "all": np.ones(len(p), bool),
    }[rationale]
    assert (out["status"] == "ok").all() and (out["decided_by"] == "student").all()
    np.testing.assert_allclose(out["p_match"], p, rtol=1e-6)
    assert (out["verdict"] == np.where(p >= threshold, "match", "no_match")).all()
    assert out["rationale"].notna().to_numpy().tolist() == expected.tolist()
    assert 0 < expected.sum() < len(p) or rationale in ("none", "all")


def test_prefilter_settles_obvious_non_matches(scoring_model):
    lefts, rights, labels = _pairs(60)
    out = score_pairs(scoring_model, lefts, rights, ScoringPolicy("all", max_new_tokens=MAX_NEW_TOKENS))
    by_prefilter = (out["decided_by"] == "prefilter").to_numpy()
    assert by_prefilter.sum() > len(out) / 2  # most demo pairs are obvious non-matches
    assert (out.loc[by_prefilter, "verdict"] == "no_match").all()
    assert (out.loc[by_prefilter, "p_match"] < scoring_model.feature_model.prefilter_threshold).all()
    assert out.loc[by_prefilter, "rationale"].isna().all()  # "all" = all the student scored
    assert out.loc[~by_prefilter, "rationale"].notna().all()
    assert not by_prefilter[labels == 1].any()  # no demo match is filtered away


def test_a_failing_pair_fails_alone(scoring_model, monkeypatch):
    lefts, rights, _ = _pairs(6)
    lefts[2] = {"name": "BOOM"}
    rights[4] = None  # record not found
    student = scoring_model.student
    real = student.p_match

    def p_match(texts, batch_size=64):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("model exploded")
        return real(texts, batch_size)

    monkeypatch.setattr(student, "p_match", p_match)
    plain = MatchModel(student, None, scoring_model.uri)
    out = score_pairs(plain, lefts, rights, ScoringPolicy("none"))
    assert out["status"].tolist() == ["ok", "ok", "failed", "ok", "failed", "ok"]
    assert out.loc[2, "verdict"] == "error" and "model exploded" in out.loc[2, "error"]
    assert out.loc[2, "decided_by"] == "student"
    assert out.loc[4, "error"] == "right record not found in records" and out.loc[4, "decided_by"] == "input"
    assert out.loc[[0, 1, 3, 5], "p_match"].notna().all()


def test_rationales_start_with_the_verdict_they_explain(scoring_model):
    lefts, rights, _ = _pairs(6)
    student = scoring_model.student
    texts = student.serialize_pairs(lefts, rights)
    for said in ("match", "no_match"):
        outputs = student.generate(texts, max_new_tokens=MAX_NEW_TOKENS, verdict=said)
        assert [parse_verdict(o)[0] for o in outputs] == [said] * len(texts), outputs


def test_feature_model_gives_verdicts_when_the_train_job_chose_it(scoring_model):
    lefts, rights, labels = _pairs(60)
    student = copy.copy(scoring_model.student)
    student.extra = {**student.extra, "verdict_by": "features"}
    model = MatchModel(student, scoring_model.feature_model, scoring_model.uri)
    assert model.verdict_by == "features"
    features, prefilter_scores = scoring_model.feature_model.scores(lefts, rights)
    out = score_pairs(model, lefts, rights, ScoringPolicy("matches", max_new_tokens=MAX_NEW_TOKENS))
    settled = prefilter_scores < scoring_model.feature_model.prefilter_threshold
    assert (out["decided_by"] == np.where(settled, "prefilter", "features")).all()
    np.testing.assert_allclose(out["p_match"], np.where(settled, prefilter_scores, features))
    expected = np.where(~settled & (features >= scoring_model.feature_model.f1_threshold), "match", "no_match")
    assert (out["verdict"] == expected).all() and 0 < (expected == "match").sum()
    assert (out["rationale"].notna() == (expected == "match")).all()  # the student explains matches
    # without its feature model a student keeps the verdicts
    assert MatchModel(student, None, model.uri).verdict_by == "student"


def test_match_model_save_load_round_trip(scoring_model, tmp_path):
    lefts, rights, _ = _pairs(20)
    again = MatchModel.load(str(scoring_model.save(tmp_path / "copy")), device="cpu")
    assert (again.threshold, again.verdict_by) == (scoring_model.threshold, scoring_model.verdict_by)
    assert again.feature_model is not None and again.feature_model.attributes == scoring_model.feature_model.attributes
    p, by = scoring_model.predict_proba(lefts, rights)
    p2, by2 = again.predict_proba(lefts, rights)
    np.testing.assert_allclose(p2, p, atol=1e-6)
    assert by2 == by and again.predict(lefts, rights) == scoring_model.predict(lefts, rights)
    verdicts = ["match", "no_match"] * 10
    assert again.explain(lefts, rights, verdicts, max_new_tokens=24) == scoring_model.explain(
        lefts, rights, verdicts, max_new_tokens=24
    )


def test_verdict_model_choice():
    feature_model = type("FeatureModel", (), {"valid_metrics": {"f1": 0.8}})()
    assert choose_verdict_model("auto", 0.3, feature_model) == "features"
    assert choose_verdict_model("auto", 0.8, feature_model) == "student"  # a tie keeps the student
    assert choose_verdict_model("auto", 0.3, None) == "student"
    assert choose_verdict_model("student", 0.3, feature_model) == "student"
    assert choose_verdict_model("features", 0.9, feature_model) == "features"


def test_every_rationale_passes_the_checker_and_names_its_writer(scoring_model):
    """An untrained student writes nonsense: the checker must catch every text, and the
    rules explanation that replaces it must pass, for both verdicts."""
    lefts, rights, _ = _pairs(24)
    lefts[0] = {"name": "", "addr": None}
    rights[1] = {"name": "123", "addr": "456"}
    student = scoring_model.student
    threshold = float(np.median(student.p_match(student.serialize_pairs(lefts, rights))))
    out = score_pairs(MatchModel(student, None, scoring_model.uri), lefts, rights,
                      ScoringPolicy("all", max_new_tokens=24, threshold=threshold))
    assert out["rationale"].notna().all() and set(out["verdict"]) == {"match", "no_match"}
    # decoded within true explanations, the untrained student's rationales pass; one cut
    # at the token limit falls back to the rules
    assert set(out["rationale_by"]) <= {"student", "rules"}
    for i, row in out.iterrows():
        checked = check_rationale(row.rationale, row.verdict, lefts[i], rights[i], scoring_model.student.attributes)
        assert checked.ok, (row.rationale, str(checked))


def test_empty_and_huge_records_score(scoring_model):
    lefts = [{}, {"name": "spago", "addr": HUGE}, {"name": None, "city": ""}]
    rights = [{}, {"name": "spago", "addr": HUGE[:500]}, {"name": "spago"}]
    for model in (scoring_model, MatchModel(scoring_model.student, None, scoring_model.uri)):
        out = score_pairs(model, lefts, rights, ScoringPolicy("all", max_new_tokens=MAX_NEW_TOKENS))
        assert (out["status"] == "ok").all(), out["error"].tolist()
        assert out["p_match"].notna().all()


# --- the job, on Spark ----------------------------------------------------------------


def _seed_tables(lake: Lakehouse, n_pairs: int, rename: str = "") -> list[str]:
    """Demo records (+ an empty one and a 100 KB one) and candidates; returns pair ids.
    ``rename``: a prefix for every attribute name (records of another schema)."""
    now = datetime(2026, 1, 1)
    rows = []
    for source, file in (("left", "tableA.csv"), ("right", "tableB.csv")):
        table = _table(Path(__file__).parent.parent / "em_spark/data/demo" / file)
        if source == "left":
            table["empty"] = {}
            table["huge"] = {"name": "spago", "addr": HUGE}
        for rid, attrs in table.items():
            attrs = {f"{rename}{k}": v for k, v in attrs.items()}
            rows.append(Row(source=source, record_id=rid, attributes=attrs, record_hash="h", run_id="seed", ingested_at=now))
    lake.merge("records", lake.spark.createDataFrame(rows, RECORDS))
    import csv

    with (Path(__file__).parent.parent / "em_spark/data/demo/test.csv").open() as fh:
        ids = [(r["ltable_id"], r["rtable_id"]) for r in csv.DictReader(fh)][: n_pairs - 3]
    ids += [("empty", "0"), ("huge", "1"), ("0", "no-such-record")]
    cands = [Row(pair_id=pair_id(l, r), left_id=l, right_id=r, blockers=["test"], score=None, run_id="seed") for l, r in ids]
    lake.merge("candidates", lake.spark.createDataFrame(cands, CANDIDATES))
    return [c.pair_id for c in cands]


def _config(root: Path, model_dir: Path, **score):
    base = {"model_uri": str(model_dir), "max_new_tokens": MAX_NEW_TOKENS, "partitions": 2, "threshold": 0.5}
    base.update(score)
    return make_config(root, score=base)


def _predictions(lake: Lakehouse) -> dict[str, Row]:
    return {r.pair_id: r for r in lake.read("predictions").collect()}


def test_score_job_one_prediction_per_candidate_and_rerun_is_idempotent(spark, lake_root, model_dir):
    config = _config(lake_root, model_dir)
    lake = Lakehouse.from_config(spark, config)
    ids = _seed_tables(lake, 24)
    run = run_job("score", config, lake)
    first = _predictions(lake)
    assert sorted(first) == sorted(ids)  # exactly one row per candidate
    assert run.checks["predictions_per_candidate"].startswith("ok: 24 predictions, 24 candidates")
    assert run.checks["feature_schema"] == "ok: records carry all 5 attributes the feature model compares"
    failed = [p for p in first.values() if p.status == "failed"]
    assert [(p.right_id, p.verdict, p.error) for p in failed] == [
        ("no-such-record", "error", "right record not found in records")
    ]
    ok = [p for p in first.values() if p.status == "ok"]
    assert {p.decided_by for p in ok} == {"prefilter", "student"}
    for p in ok:  # the "matches" policy: a rationale exactly for the student's matches
        assert (p.rationale is not None) == (p.decided_by == "student" and p.verdict == "match")
        assert p.model_uri == str(model_dir) and p.run_id == run.run_id
    # every rationale in the table is true of its records, and names who wrote it
    records = {(r.source, r.record_id): dict(r.attributes) for r in lake.read("records").collect()}
    explained = [p for p in ok if p.rationale is not None]
    assert explained and run.counts["rationales"] == len(explained)
    for p in explained:
        assert p.rationale_by in ("student", "rules")
        left, right = records[("left", p.left_id)], records[("right", p.right_id)]
        assert check_rationale(p.rationale, p.verdict, left, right).ok, p.rationale
    assert all(p.rationale_by is None for p in first.values() if p.rationale is None)
    assert run.counts["rationales_by_rules"] == sum(p.rationale_by == "rules" for p in explained)

    again = run_job("score", config, lake)
    assert again.counts["scored"] == 1  # only the failed pair is retried
    second = _predictions(lake)
    assert {k: v for k, v in second.items() if v.status == "ok"} == {p.pair_id: p for p in ok}


def test_model_loads_once_per_python_worker(spark, lake_root, model_dir):
    from udfs.scoring import UdfSettings

    settings = UdfSettings(str(model_dir), ScoringPolicy())

    def probe(batches):
        import os

        import pandas as pd

        from udfs.scoring import get_model, load_count

        for batch in batches:
            get_model(settings, "cpu")
            yield pd.DataFrame({"pid": [os.getpid()], "loads": [load_count(settings.model_uri)], "rows": [len(batch)]})

    tasks = 12
    out = (
        spark.range(0, tasks * 10, numPartitions=tasks)
        .mapInPandas(probe, "pid long, loads long, rows long")
        .collect()
    )
    pids = {r.pid for r in out}
    assert sum(r.rows for r in out) == tasks * 10
    assert len(pids) < tasks  # Python workers were reused across tasks ...
    assert {r.loads for r in out} == {1}  # ... and none loaded the model twice


def test_crash_after_a_chunk_keeps_it_and_the_rerun_does_the_rest(spark, lake_root, model_dir, monkeypatch):
    config = _config(lake_root, model_dir, chunk_pairs=8, rationale="none")
    lake = Lakehouse.from_config(spark, config)
    _seed_tables(lake, 20)
    monkeypatch.setenv(ENV, "score:1")
    with pytest.raises(InjectedFailure):
        run_job("score", config, lake)
    committed = lake.read("predictions")
    assert 0 < committed.count() < 20  # the first of three chunks
    ok_committed = committed.where("status = 'ok'").count()
    monkeypatch.delenv(ENV)
    run = run_job("score", config, lake)
    assert run.counts["scored"] == 20 - ok_committed  # the rest (and the missing-record retry)
    assert lake.read("predictions").count() == 20
    assert sorted(r.status for r in lake.read("runs").collect()) == ["failed", "succeeded"]

    # a pair that stops being a candidate (re-blocking) loses its prediction on the next run
    gone = lake.read("candidates").select("pair_id").first().pair_id
    spark.sql(f"DELETE FROM {lake.ref('candidates').sql} WHERE pair_id = '{gone}'")
    run = run_job("score", config, lake)
    assert run.counts["stale_deleted"] == 1 and run.counts["scored"] <= 1  # the failed retry
    assert lake.read("predictions").where(f"pair_id = '{gone}'").count() == 0
    assert lake.read("predictions").count() == 19


def test_feature_schema_check_names_what_is_missing():
    attributes = ["name", "addr", "city"]
    assert feature_schema_check(attributes, {"name", "addr", "city", "phone"}, ["the prefilter"]) == (
        "ok: records carry all 3 attributes the feature model compares"
    )
    assert feature_schema_check(attributes, {"Beer_Name"}, []) == "ok: the feature model is not used"
    with pytest.raises(InputError, match=r"lack 1 of the 3 .* \(city; the records have: addr, name\), and it is "
                       r"used for the prefilter: .*score\.prefilter: false"):
        feature_schema_check(attributes, {"name", "addr"}, ["the prefilter"])
    with pytest.raises(InputError, match=r"needs train\.verdict_by: student\)$"):
        feature_schema_check(attributes, {"ABV"}, ["the verdicts (verdict_by: features)"])


def test_score_job_stops_on_records_of_another_schema_before_writing(spark, lake_root, model_dir):
    config = _config(lake_root, model_dir)
    lake = Lakehouse.from_config(spark, config)
    _seed_tables(lake, 6, rename="other_")
    with pytest.raises(InputError, match=r"records lack 5 of the 5 attributes .*the records have: other_addr, other_city"):
        run_job("score", config, lake)
    assert not lake.exists("predictions") or lake.read("predictions").count() == 0
    # Without the prefilter this model uses no feature model: the student reads any schema.
    run = run_job("score", _config(lake_root, model_dir, prefilter=False), lake)
    assert run.checks["feature_schema"] == "ok: the feature model is not used"
    assert lake.read("predictions").count() == 6
