"""The student without Spark: offline presets, targets, a short training run, inference."""

from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

from em_spark.config import load_config
from em_spark.serialize import HINT_VOCABULARY, serialize_pair, serialize_record
from em_spark.student.inference import StudentPredictor, label_start_ids, parse_verdict, save_student
from em_spark.errors import InputError
from em_spark.student.optim import learning_rate_factor
from em_spark.student.presets import build_preset
from em_spark.match_model import MatchModel
from em_spark.student.tracking import MatchModelPyfunc
from em_spark.student.training import PairExample, build_targets, serializer_settings, train_student
from em_spark.teacher.rules import explain_pair
from tests.conftest import DEMO_DATA


def _table(name: str) -> dict[str, dict[str, str]]:
    with open(DEMO_DATA / name, encoding="utf-8", newline="") as fh:
        return {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in csv.DictReader(fh)}


def _pairs(split: str, n: int) -> list[tuple[dict, dict, int]]:
    left, right = _table("tableA.csv"), _table("tableB.csv")
    with open(DEMO_DATA / f"{split}.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # Keep every match among the first rows plus non-matches, so a slice has both labels.
    rows = sorted(rows, key=lambda r: r["label"] != "1")[:n]
    return [(left[r["ltable_id"]], right[r["rtable_id"]], int(r["label"])) for r in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny preset trained for a few steps on a slice of the demo pairs."""
    conf = load_config(overrides=[
        "train.max_epochs=4", "train.batch_size=8", "train.eval_every_steps=4", "train.patience=10",
        "train.budget_minutes=2", "train.threads=1", "train.max_target_tokens=24", "train.warmup_steps=2",
    ]).train
    settings = serializer_settings(conf)
    train_pairs, valid_pairs = _pairs("train", 32), _pairs("valid", 16)

    def examples(pairs):
        return [PairExample(serialize_pair(l, r, None, settings), y, explain_pair(l, r, y)) for l, r, y in pairs]

    corpus = [serialize_record(r) for r in _table("tableA.csv").values()]
    work = tmp_path_factory.mktemp("student")
    result = train_student(examples(train_pairs), examples(valid_pairs), conf, corpus, work / "base")
    return result, conf, settings, examples(valid_pairs), work


def test_preset_builds_offline_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus = [serialize_record(r) for r in _table("tableB.csv").values()]
    model, tokenizer = build_preset("tiny", corpus, tmp_path / "tiny")
    params = sum(p.numel() for p in model.parameters())
    assert 5e6 < params < 15e6
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "tiny").num_parameters() == params
    text = corpus[0]
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert again(text)["input_ids"][-1] == tokenizer.eos_token_id
    match_id, no_match_id = label_start_ids(again)
    assert match_id != no_match_id
    # each similarity-hint word is one piece: its embedding says the feature and the score
    assert all(len(again.tokenize(word)) == 1 for word in HINT_VOCABULARY)
    # ... and their embeddings start ordered by value: r0 is nearer r1 than r5, r5 than r10
    weight = model.get_input_embeddings().weight.detach()
    r = [weight[tokenizer.convert_tokens_to_ids(f"▁r{v}")] for v in range(11)]
    distance = [float((r[0] - r[v]).norm()) for v in range(11)]
    assert distance == sorted(distance) and distance[1] < distance[5] < distance[10]


def test_learning_rate_warms_up_then_decays_to_zero_by_steps_or_budget():
    assert [learning_rate_factor(s, 4, 104, 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate_factor(54, 4, 104, 0.0) == 0.5  # halfway through the planned steps
    # a budget that ends first sets the pace: 80% of it spent leaves 20% of the rate
    assert learning_rate_factor(14, 4, 104, 0.8) == pytest.approx(0.2)
    assert learning_rate_factor(104, 4, 104, 0.1) == 0.0 == learning_rate_factor(10, 4, 104, 1.2)


def test_parse_verdict():
    assert parse_verdict("No match: the prices differ") == ("no_match", "the prices differ")
    assert parse_verdict("match. both share 12ab") == ("match", "both share 12ab")
    assert parse_verdict("matches") == (None, "matches")
    assert parse_verdict("") == (None, "")


def test_build_targets_modes():
    ex = [PairExample(f"t{i}", i % 2, f"reason {i} with five words") for i in range(8)]
    ex.append(PairExample("t8", 1, None))
    explained, fallbacks = build_targets(ex, "explained")
    assert explained[0] == "no match reason 0 with five words" and explained[1].startswith("match reason 1")
    assert fallbacks == 1 and explained[8] == "match"
    assert build_targets(ex, "label_only") == (["no match", "match"] * 4 + ["match"], 0)
    truncated, _ = build_targets(ex, "truncated", truncate_words=2)
    assert truncated[2] == "no match reason 2"
    shuffled, _ = build_targets(ex, "shuffled", seed=1)
    for e, target in zip(ex[:8], shuffled[:8]):
        verdict = "match" if e.label else "no match"
        assert target in {f"{verdict} {o.explanation}" for o in ex[:8] if o.label == e.label}
    assert shuffled[:8] != explained[:8]
    assert sorted(shuffled[:8]) == sorted(explained[:8])


def test_short_training_lowers_loss(trained):
    result, conf, *_ = trained
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) >= 3
    assert losses[-1] < 0.7 * losses[0]
    assert 0.0 <= result.threshold <= 1.0 and result.valid_f1 >= 0.0
    assert result.stopped_by in {"max_epochs", "early_stopping", "budget"}


def test_p_match_agrees_with_first_generated_word(trained, tmp_path):
    result, conf, settings, valid, _ = trained
    folder = save_student(result.model, result.tokenizer, tmp_path, result.threshold, settings, None,
                          {"mode": conf.mode}, max_input_tokens=conf.max_input_tokens)
    assert json.loads((folder / "em_student.json").read_text())["threshold"] == result.threshold
    predictor = StudentPredictor.load(str(tmp_path), device="cpu")
    texts = [e.text for e in valid]
    p = predictor.p_match(texts, batch_size=5)
    assert p.shape == (len(texts),) and np.all((p >= 0) & (p <= 1))
    generated = predictor.generate(texts, max_new_tokens=12, batch_size=5)
    verdicts = [parse_verdict(g)[0] for g in generated]
    readable = [(v, x) for v, x in zip(verdicts, p) if v is not None]
    assert len(readable) >= len(texts) // 2, generated
    for verdict, prob in readable:
        assert (verdict == "match") == (prob > 0.5), (verdict, prob)
    # The same pairs in another order and batch size give the same probabilities.
    again = predictor.p_match(texts[::-1], batch_size=16)[::-1]
    assert np.allclose(again, p, atol=1e-4)
    # The MLflow pyfunc scores records, not serialized texts (the feature model and the
    # rationale checker read the records).
    pyfunc = MatchModelPyfunc()
    pyfunc.model = MatchModel(predictor, None)
    with pytest.raises(InputError, match="expected 'left' and 'right'"):
        pyfunc.predict(None, pd.DataFrame({"text": texts}))


def test_a_model_saved_with_a_removed_option_loads_only_where_it_was_off(trained, tmp_path):
    result, conf, settings, valid, _ = trained
    folder = save_student(result.model, result.tokenizer, tmp_path, result.threshold, settings, None,
                          {"mode": conf.mode}, max_input_tokens=conf.max_input_tokens)
    meta_path = folder / "em_student.json"
    meta = json.loads(meta_path.read_text())
    # saved before the interleaved layout and the score hint were removed, neither in use
    meta["settings"].update(pair_layout="sequential", feature_score_hint=False)
    meta_path.write_text(json.dumps(meta))
    assert StudentPredictor.load(str(tmp_path), device="cpu").settings == settings
    for key, value in (("pair_layout", "interleaved"), ("feature_score_hint", True)):
        meta_path.write_text(json.dumps({**meta, "settings": {**meta["settings"], key: value}}))
        with pytest.raises(InputError, match=f"trained with {key}=.*option since removed"):
            StudentPredictor.load(str(tmp_path), device="cpu")
    meta_path.write_text(json.dumps({**meta, "extra": {"feature_offset": True}}))
    with pytest.raises(InputError, match="train.feature_offset, an option since removed"):
        StudentPredictor.load(str(tmp_path), device="cpu")


def test_inference_imports_without_pyspark():
    import subprocess

    code = "import sys, em_spark.student.inference; assert 'pyspark' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_auto_dtype_is_fp32_on_a_cpu(monkeypatch):
    import torch

    from em_spark.student import inference

    cpu = torch.device("cpu")
    # fp32 on a CPU whatever its hardware: one answer however pairs are batched
    for native in (True, False):
        monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda native=native: native)
        assert inference.pick_dtype(None, cpu) == torch.float32
    assert inference.pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert inference.pick_dtype("float32", cpu) == torch.float32
