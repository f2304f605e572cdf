"""The openai backend against a real chat-completions server on loopback, with faults."""

from __future__ import annotations

import socket

import pytest
from pydantic import SecretStr

from em_spark.config import OpenAIBackendConf, TeachConf
from em_spark.teacher.core import Pair, TeachSettings, build_request, result_row
from em_spark.teacher.openai_backend import OpenAIBackend, resolve_api_key
from em_spark.teacher.prompts import load_prompt
from tests.fake_openai_server import FakeChatServer


def _conf(url: str, **kw) -> OpenAIBackendConf:
    base = dict(base_url=url, model="test-model", timeout_s=2.0, max_retries=3, backoff_base_s=0.01, backoff_max_s=2.0)
    base.update(kw)
    return OpenAIBackendConf(**base)


def _settings(conf: OpenAIBackendConf) -> TeachSettings:
    return TeachSettings(
        conf=TeachConf(backend="openai", openai=conf, demonstrations="none"),
        template=load_prompt("rationalize-v1"),
        teacher="openai:test-model",
        run_id="r1",
    )


def _pair(i: int, title: str, label: int = 1) -> Pair:
    left = {"title": f"{title} sony turntable pslx350h", "price": "149.0"}
    right = {"title": "sony pslx350h belt drive turntable", "price": "149.0"}
    return Pair(f"p{i}", f"l{i}", f"r{i}", left, right, label)


def _run(server: FakeChatServer, pairs: list[Pair], **kw) -> list[dict]:
    conf = _conf(server.base_url, **kw)
    settings = _settings(conf)
    backend = OpenAIBackend(conf, SecretStr("sk-test"))
    completions = backend.complete([build_request(p, settings) for p in pairs])
    return [result_row(p, c, settings, created_at=None) for p, c in zip(pairs, completions)]  # type: ignore[arg-type]


def test_faults_are_retried_or_recorded():
    names = ["plain", "FAULT_500x2", "FAULT_429", "FAULT_SLOW", "FAULT_BADJSON", "FAULT_EMPTY", "FAULT_CONTRADICT", "FAULT_500x9"]
    pairs = [_pair(i, n, label=i % 2) for i, n in enumerate(names)]
    with FakeChatServer(slow_s=3.0) as server:
        rows = {r["pair_id"]: r for r in _run(server, pairs)}
        attempts = {n: server.attempts[next(k for k in server.attempts if n in k)] for n in names}
        arrivals_429 = next(v for k, v in server.arrivals.items() if "FAULT_429" in k)
    status = {n: rows[f"p{i}"]["status"] for i, n in enumerate(names)}
    kind = {n: (rows[f"p{i}"]["error"] or "").split(":")[0] for i, n in enumerate(names)}
    assert status["plain"] == "ok" and attempts["plain"] == 1
    assert rows["p0"]["input_tokens"] > 0 and rows["p0"]["output_tokens"] > 0
    # 500 twice, then answered
    assert status["FAULT_500x2"] == "ok" and attempts["FAULT_500x2"] == 3
    # 429 waits for Retry-After (1 s) although the backoff base is 10 ms
    assert status["FAULT_429"] == "ok" and attempts["FAULT_429"] == 2
    assert arrivals_429[1] - arrivals_429[0] >= 0.95
    # slower than the 2 s timeout on every attempt: retried, then failed as a timeout
    assert status["FAULT_SLOW"] == "failed" and kind["FAULT_SLOW"] == "timeout" and attempts["FAULT_SLOW"] == 4
    # malformed JSON and an empty choice are recorded, not retried
    assert (status["FAULT_BADJSON"], kind["FAULT_BADJSON"], attempts["FAULT_BADJSON"]) == ("failed", "bad_response", 1)
    assert (status["FAULT_EMPTY"], kind["FAULT_EMPTY"], attempts["FAULT_EMPTY"]) == ("failed", "empty_choice", 1)
    # an answer that argues the other label is kept as invalid, with the gold label
    r = rows["p6"]
    assert (r["status"], r["label"]) == ("invalid", 0) and r["error"].startswith("contradicts_label")
    # retries are bounded
    assert status["FAULT_500x9"] == "failed" and kind["FAULT_500x9"] == "http_5xx" and attempts["FAULT_500x9"] == 4


def test_concurrency_stays_within_its_bound():
    pairs = [_pair(i, f"item{i}") for i in range(24)]
    with FakeChatServer(delay_s=0.15) as server:
        rows = _run(server, pairs, max_concurrency=3)
        assert server.max_in_flight == 3  # reached, never exceeded
        assert server.total_requests == 24
        assert server.auth_headers == {"Bearer sk-test"}
        body = server.bodies[0]
    assert {r["status"] for r in rows} == {"ok"}
    assert body["model"] == "test-model" and body["temperature"] == 0.0
    assert body["messages"][0]["role"] == "system" and "Label: MATCH" in body["messages"][-1]["content"]


def test_json_schema_is_sent_when_asked():
    with FakeChatServer() as server:
        _run(server, [_pair(0, "x")], json_schema=True)
        fmt = server.bodies[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["required"] == ["label", "explanation"]


def test_endpoint_down_fails_each_request_after_retries():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = _conf(f"http://127.0.0.1:{port}/v1", max_retries=2)
    settings = _settings(conf)
    completions = OpenAIBackend(conf, None).complete([build_request(_pair(0, "x"), settings)])
    assert completions[0].text is None and completions[0].error_kind == "connect"
    assert "after 3 attempts" in completions[0].error


def test_api_key_from_env_name_and_never_in_repr(monkeypatch):
    monkeypatch.setenv("EM_TEST_TEACHER_KEY", "sk-sentinel-123")
    conf = _conf("http://127.0.0.1:1/v1", api_key_env="EM_TEST_TEACHER_KEY")
    key = resolve_api_key(conf)
    assert key is not None and key.get_secret_value() == "sk-sentinel-123"
    assert "sk-sentinel" not in repr(OpenAIBackend(conf, key)) and "sk-sentinel" not in repr(key)
    assert "sk-sentinel" not in conf.model_dump_json()
    monkeypatch.delenv("EM_TEST_TEACHER_KEY")
    assert resolve_api_key(conf) is None


@pytest.mark.parametrize("bad", [{"max_concurrency": 0}, {"timeout_s": 0}, {"api_key": "sk-x"}])
def test_openai_config_is_validated(bad):
    with pytest.raises(Exception):
        OpenAIBackendConf(**bad)
