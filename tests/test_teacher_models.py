"""Model backends: a tiny random causal LM through transformers, and the vLLM backend
against a stand-in module with vLLM's offline API (vLLM itself runs only on a GPU; the
real test at the end is skipped elsewhere)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from em_spark.config import TeachConf, TransformersBackendConf, VllmBackendConf
from em_spark.teacher.core import Pair, TeachSettings, build_request, teach_pairs
from em_spark.teacher.prompts import ANSWER_SCHEMA, load_prompt

STAND_IN = Path(__file__).parent / "vllm_stand_in"

PAIRS = [
    Pair("p0", "a0", "b0", {"name": "sony turntable pslx350h", "price": "149.0"}, {"name": "sony ps-lx350h turntable", "price": "145.0"}, 1),
    Pair("p1", "a1", "b1", {"name": "bose speaker am53bk", "price": "399.0"}, {"name": "sony pslx350h", "price": "149.0"}, 0),
    Pair("p2", "a2", "b2", {"name": "canon eos 40d", "price": ""}, {"name": "canon eos 40d body", "price": "899"}, 1),
    Pair("p3", "a3", "b3", {"name": "panasonic kx-tg4500b phone"}, {"name": "panasonic kx-ts108w"}, 0),
    Pair("p4", "a4", "b4", {"name": "linksys ezxs88w switch"}, {"name": "linksys ezxs88w 8-port switch"}, 1),
]


def _settings(conf: TeachConf) -> TeachSettings:
    return TeachSettings(conf=conf, template=load_prompt("rationalize-v1"), teacher="t", run_id="r")


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory) -> Path:
    """A GPT-2 with random weights and a byte-level BPE trained here: no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-lm")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [m for p in PAIRS for m in (json.dumps(p.left), json.dumps(p.right))] * 5 + [load_prompt("rationalize-v1").system]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    fast.save_pretrained(path)
    config = GPT2Config(vocab_size=len(fast), n_positions=2048, n_embd=32, n_layer=2, n_head=2, eos_token_id=fast.eos_token_id, bos_token_id=fast.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def test_transformers_backend_batches_with_left_padding(tiny_causal_lm):
    from em_spark.teacher.transformers_backend import TransformersBackend

    conf = TeachConf(backend="transformers", demonstrations="none", transformers=TransformersBackendConf(model=str(tiny_causal_lm), device="cpu", batch_size=3, max_new_tokens=6))
    settings = _settings(conf)
    backend = TransformersBackend(conf.transformers)
    requests = [build_request(p, settings) for p in PAIRS]
    batched = backend.complete(requests)
    assert len(batched) == 5
    for request, completion in zip(requests, batched):
        assert completion.text is not None and 1 <= completion.output_tokens <= 6
        prompt = backend.prompt_text(request.messages)
        assert prompt.startswith("<system>") and prompt.endswith("<assistant>")
        assert completion.input_tokens == len(backend.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    # padding must not change an answer: each request alone gives the same greedy text
    alone = [backend.complete([r])[0].text for r in requests[:3]]
    assert alone == [c.text for c in batched[:3]]
    # through the job's row logic: random weights give no parseable answer -> invalid rows, kept
    rows = teach_pairs(PAIRS[:2], settings)
    assert [r["status"] for r in rows] == ["invalid", "invalid"] and all(r["raw_output"] is not None for r in rows)


@pytest.fixture
def vllm_stand_in(monkeypatch):
    monkeypatch.syspath_prepend(str(STAND_IN))
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    import vllm

    assert "STAND-IN" in vllm.__doc__
    vllm.LLM.calls.clear()
    vllm.LLM.instances.clear()
    yield vllm
    # Leave no stand-in behind: later tests must not mistake it for an installed vLLM.
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


def test_vllm_backend_prompts_batching_sampling_and_parsing(vllm_stand_in):
    from em_spark.teacher.vllm_backend import VllmBackend

    conf = TeachConf(
        backend="vllm", batch_size=16,
        vllm=VllmBackendConf(model="org/teacher-7b", tensor_parallel_size=2, batch_size=2, max_tokens=200, own_process=False, engine_kwargs={"enforce_eager": True}),
    )  # fmt: skip
    settings = _settings(conf)
    backend = VllmBackend(conf.vllm)
    (engine,) = vllm_stand_in.LLM.instances
    assert (engine.model, engine.tensor_parallel_size, engine.kwargs["enforce_eager"]) == ("org/teacher-7b", 2, True)
    rows = teach_pairs(PAIRS, settings, backend)
    calls = vllm_stand_in.LLM.calls
    assert [len(c["messages"]) for c in calls] == [2, 2, 1]  # batches of vllm.batch_size
    assert all(c["method"] == "chat" for c in calls)
    first = calls[0]["messages"][0]
    assert first[0]["role"] == "system" and first[-1]["content"].endswith("Label: MATCH")
    params = calls[0]["sampling_params"]
    assert (params.temperature, params.max_tokens) == (0.0, 200)
    assert params.structured_outputs.json == ANSWER_SCHEMA
    assert [r["status"] for r in rows] == ["ok"] * 5, rows
    assert [r["label"] for r in rows] == [p.label for p in PAIRS]
    assert all(r["input_tokens"] > 0 and r["output_tokens"] > 0 for r in rows)


def test_vllm_engine_runs_in_its_own_spawned_process(vllm_stand_in, monkeypatch):
    from em_spark.teacher.vllm_backend import VllmBackend

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(STAND_IN), os.environ.get("PYTHONPATH", "")]))
    conf = TeachConf(backend="vllm", demonstrations="none", vllm=VllmBackendConf(model="org/teacher-7b", own_process=True, json_schema=False))
    backend = VllmBackend(conf.vllm)
    try:
        assert backend.engine.pid != os.getpid()  # the engine (and CUDA) never live in this process
        completions = backend.complete([build_request(p, _settings(conf)) for p in PAIRS[:2]])
        assert [json.loads(c.text)["label"] for c in completions] == ["match", "no match"]
        assert f"stand-in {backend.engine.pid}" in completions[0].text
        assert vllm_stand_in.LLM.instances == []  # nothing was built in this process
    finally:
        backend.engine.close()
    assert not backend.engine.process.is_alive()


def _gpu_and_vllm() -> bool:
    if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_and_vllm(), reason="needs vllm and a CUDA GPU (not available here)")
def test_real_vllm_on_gpu():  # pragma: no cover - runs only where vLLM and a GPU exist
    model = os.environ.get("EM_SPARK_VLLM_TEST_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
    from em_spark.teacher.vllm_backend import VllmBackend

    conf = TeachConf(backend="vllm", demonstrations="none", vllm=VllmBackendConf(model=model, max_tokens=128, gpu_memory_utilization=0.5))
    backend = VllmBackend(conf.vllm)
    try:
        completions = backend.complete([build_request(p, _settings(conf)) for p in PAIRS])
    finally:
        backend.engine.close()
    assert all(c.text for c in completions)
    assert all(json.loads(c.text)["label"] in ("match", "no match") for c in completions)  # guided JSON


def test_no_stand_in_left_behind():
    assert "vllm" not in sys.modules or "STAND-IN" not in (sys.modules["vllm"].__doc__ or "")
