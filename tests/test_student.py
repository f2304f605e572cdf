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
from em_spark.serialize import serialize_pair, serialize_record
from em_spark.student.inference import StudentPredictor, label_start_ids, parse_verdict, save_student
from em_spark.errors import InputError
from em_spark.features import HINT_VOCABULARY, fit_prefilter, verdict_offsets
from em_spark.student.optim import learning_rate_factor
from em_spark.student.presets import build_preset
from em_spark.student.pretraining import corrupt_spans, noise_mask, sentinel_ids
from em_spark.student.tracking import StudentPyfunc
from em_spark.student.training import (
    PairExample,
    build_targets,
    feature_model_inputs,
    serializer_settings,
    train_student,
)
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
        # the training loop alone, on hand-serialized pairs (the score hint needs a fitted matcher)
        "train.feature_score_hint=false",
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
    assert "<extra_id_0>" in again.get_vocab()
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


def test_span_corruption_hides_spans_behind_sentinels_and_lists_them_in_the_target():
    rng = np.random.default_rng(0)
    for length in (2, 3, 10, 40, 127):
        for _ in range(20):
            mask = noise_mask(length, 0.15, 3.0, 100, rng)
            assert 1 <= mask.sum() < length and not mask[0]  # some noise, a clean start
            assert mask.sum() == min(max(round(0.15 * length), 1), length - 1)
    ids = list(range(1000, 1040))
    sentinels = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    for _ in range(20):
        mask = noise_mask(len(ids), 0.3, 2.0, len(sentinels), rng)
        inputs, target = corrupt_spans(ids, mask, sentinels, eos_id=1)
        assert inputs[-1] == target[-1] == 1
        spans = int((mask[1:] & ~mask[:-1]).sum())
        assert 1 <= spans <= len(sentinels) and len(inputs) == len(ids) - mask.sum() + spans + 1
        # the input with each sentinel replaced by its span from the target is the original
        fills, current = {}, None
        for token in target[:-1]:
            if token in sentinels:
                current = fills.setdefault(token, [])
            else:
                current.append(token)
        assert [t for token in inputs[:-1] for t in fills.get(token, [token])] == ids


def test_pretraining_runs_before_fine_tuning_and_lowers_its_loss(tmp_path):
    conf = load_config(overrides=[
        "train.max_epochs=1", "train.batch_size=8", "train.threads=1", "train.max_target_tokens=8",
        "train.mode=label_only", "train.feature_score_hint=false",
        "train.pretrain.minutes=1", "train.pretrain.max_epochs=3", "train.pretrain.warmup_steps=2",
        "train.pretrain.batch_size=16",
    ]).train
    settings = serializer_settings(conf)
    examples = [PairExample(serialize_pair(l, r, None, settings), y) for l, r, y in _pairs("train", 16)]
    corpus = [serialize_record(r) for r in list(_table("tableA.csv").values())[:160]]
    result = train_student(examples, examples[:8], conf, corpus, tmp_path)
    pre = result.pretrain
    assert pre is not None and pre.sequences == 160 and pre.steps == 30 and pre.epochs == 3.0
    assert pre.last_loss < 0.8 * pre.first_loss
    assert result.steps == 2 and result.history  # then fine-tuning ran, on its own budget
    assert len(sentinel_ids(result.tokenizer)) == 100
    with pytest.raises(InputError, match="no sentinel tokens"):
        sentinel_ids(type("NoSentinels", (), {"get_vocab": lambda self: {"a": 0}})())


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
    # The MLflow pyfunc reads serialized pairs from a text column too.
    pyfunc = StudentPyfunc()
    pyfunc.predictor = predictor
    out = pyfunc.predict(None, pd.DataFrame({"text": texts}))
    assert np.allclose(out["p_match"], p, atol=1e-5)
    assert out["verdict"].tolist() == ["match" if x >= predictor.threshold else "no_match" for x in p]


def test_inference_imports_without_pyspark():
    import subprocess

    code = "import sys, em_spark.student.inference; assert 'pyspark' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_auto_dtype_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    import torch

    from em_spark.student import inference

    cpu = torch.device("cpu")
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    assert inference.pick_dtype(None, cpu) == torch.bfloat16
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    assert inference.pick_dtype(None, cpu) == torch.float32
    assert inference.pick_dtype("float32", cpu) == torch.float32


def test_feature_model_inputs_are_out_of_fold_and_need_both_labels_twice():
    conf = load_config(overrides=["train.prefilter=true", "train.feature_score_hint=true"]).train
    every = _pairs("train", 10_000)
    train = [p for p in every if p[2] == 1][:20] + [p for p in every if p[2] == 0][:40]
    valid = _pairs("valid", 10_000)[-30:] + _pairs("valid", 10)
    matcher = fit_prefilter(train, valid)
    train_inputs, valid_inputs = feature_model_inputs(conf, matcher, train, valid)
    assert len(train_inputs.hints) == len(train) and len(valid_inputs.hints) == len(valid)
    assert valid_inputs.hints == matcher.score_hints([p[0] for p in valid], [p[1] for p in valid])
    assert valid_inputs.offsets == [0.0] * len(valid)  # the hint alone: no offset
    with_offset = load_config(overrides=["train.feature_offset=true"]).train
    # enough pairs that the fold models are not constant (leaves of 40 pairs)
    train, valid = _pairs("train", 10_000), _pairs("valid", 10_000)
    matcher = fit_prefilter(train, valid)
    train_inputs, valid_inputs = feature_model_inputs(with_offset, matcher, train, valid)
    assert train_inputs.hints == [None] * len(train)
    valid_p = matcher.predict_proba([p[0] for p in valid], [p[1] for p in valid])
    assert np.allclose(valid_inputs.offsets, verdict_offsets(valid_p))
    # out of fold: not the matcher's own (near-certain) scores of its training pairs
    own = verdict_offsets(matcher.predict_proba([p[0] for p in train], [p[1] for p in train]))
    assert not np.allclose(train_inputs.offsets, own)
    off_inputs = feature_model_inputs(load_config().train, matcher, train, valid)
    assert off_inputs[0].hints == [None] * len(train) and off_inputs[1].offsets == [0.0] * len(valid)
    one_match = [p for p in train if p[2] == 0][:10] + [p for p in train if p[2] == 1][:1]
    with pytest.raises(InputError, match="1 matching and 10 non-matching"):
        feature_model_inputs(conf, matcher, one_match, valid)


def test_feature_offset_student_adds_the_feature_logit_in_training_and_scoring(tmp_path):
    from em_spark.scorer import ScoringModel, ScoringPolicy, score_pairs

    conf = load_config(overrides=[
        "train.feature_offset=true", "train.max_epochs=1", "train.batch_size=8", "train.eval_every_steps=2",
        "train.patience=10", "train.budget_minutes=2", "train.threads=1", "train.max_target_tokens=24",
    ]).train
    settings = serializer_settings(conf)
    train_pairs, valid_pairs = _pairs("train", 100), _pairs("valid", 40)  # both labels in each
    matcher = fit_prefilter(_pairs("train", 10_000), _pairs("valid", 10_000))
    train_inputs, valid_inputs = feature_model_inputs(conf, matcher, train_pairs, valid_pairs)

    def examples(pairs, inputs):
        return [PairExample(serialize_pair(l, r, None, settings), y, explain_pair(l, r, y), o)
                for (l, r, y), o in zip(pairs, inputs.offsets)]

    corpus = [serialize_record(r) for r in _table("tableA.csv").values()]
    valid = examples(valid_pairs, valid_inputs)
    result = train_student(examples(train_pairs, train_inputs), valid, conf, corpus, tmp_path / "base")
    assert result.history and 0.0 <= result.valid_f1 <= 1.0

    save_student(result.model, result.tokenizer, tmp_path / "model", result.threshold, settings, None,
                 {"feature_offset": True}, max_input_tokens=conf.max_input_tokens)
    matcher.save(tmp_path / "model" / "prefilter")
    model = ScoringModel.load(str(tmp_path / "model"), device="cpu")
    assert "the student's verdict offset" in model.feature_model_uses(ScoringPolicy(use_prefilter=False))
    student = model.student
    lefts, rights = [p[0] for p in valid_pairs], [p[1] for p in valid_pairs]
    texts = student.serialize_pairs(lefts, rights)
    offsets = student.verdict_offsets(lefts, rights)
    assert np.allclose(offsets, valid_inputs.offsets)
    with pytest.raises(InputError, match="feature_offset"):
        student.p_match(texts)
    # the offset moves the verdict logit: p = sigmoid(the student's own logit + offset)
    own = student.p_match(texts, offsets=np.zeros(len(texts)))
    shifted = student.p_match(texts, offsets=offsets)
    expected = 1 / (1 + np.exp(-(np.log(own) - np.log1p(-own) + offsets)))
    assert np.allclose(shifted, expected, atol=1e-5)
    scored = score_pairs(model, lefts, rights, ScoringPolicy(rationale="none", use_prefilter=False))
    assert (scored["status"] == "ok").all() and np.allclose(scored["p_match"], shifted, atol=1e-6)
