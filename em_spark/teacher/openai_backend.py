"""OpenAI-compatible chat-completions backend (vLLM's server, Databricks model serving, ...).

httpx async with bounded concurrency; retries with exponential backoff and full jitter on
429, 5xx, timeouts and refused connections, honouring ``Retry-After``; a per-request
timeout. The API key comes from an environment variable (its NAME is in config) or a
Databricks secret, is held as a ``SecretStr`` and is never logged, stored or put in rows.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Sequence

import httpx
from pydantic import SecretStr

from em_spark.config import OpenAIBackendConf
from em_spark.errors import ConfigError
from em_spark.teacher.base import Completion, TeachRequest
from em_spark.teacher.prompts import ANSWER_SCHEMA

log = logging.getLogger(__name__)

_RETRY_STATUS = {429, 500, 502, 503, 504}


def resolve_api_key(conf: OpenAIBackendConf) -> SecretStr | None:
    """The key from the Databricks secret if configured, else the named env variable."""
    if conf.api_key_secret is not None:
        try:
            from databricks.sdk.runtime import dbutils  # on a Databricks cluster
        except ImportError:  # pragma: no cover - depends on the runtime
            try:
                from databricks.sdk import WorkspaceClient
            except ImportError as exc:
                raise ConfigError("teach.openai.api_key_secret needs databricks-sdk (pip install databricks-sdk)") from exc
            dbutils = WorkspaceClient().dbutils
        value = dbutils.secrets.get(scope=conf.api_key_secret.scope, key=conf.api_key_secret.key)
        return SecretStr(value)
    if conf.api_key_env:
        value = os.environ.get(conf.api_key_env)
        return SecretStr(value) if value else None
    return None


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class OpenAIBackend:
    def __init__(self, conf: OpenAIBackendConf, api_key: SecretStr | None):
        self.conf = conf
        self._api_key = api_key
        self.url = conf.base_url.rstrip("/") + "/chat/completions"

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(url={self.url!r}, model={self.conf.model!r})"

    def complete(self, requests: Sequence[TeachRequest]) -> list[Completion]:
        return asyncio.run(self._complete_all(requests))

    async def _complete_all(self, requests: Sequence[TeachRequest]) -> list[Completion]:
        headers = {"Content-Type": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        limits = httpx.Limits(max_connections=self.conf.max_concurrency, max_keepalive_connections=self.conf.max_concurrency)
        gate = asyncio.Semaphore(self.conf.max_concurrency)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=self.conf.timeout_s) as client:
            return list(await asyncio.gather(*(self._complete_one(client, gate, r) for r in requests)))

    def _body(self, request: TeachRequest) -> dict[str, object]:
        body: dict[str, object] = {
            "model": self.conf.model,
            "messages": list(request.messages),
            "temperature": self.conf.temperature,
            "max_tokens": self.conf.max_tokens,
        }
        if self.conf.json_schema:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "explanation", "schema": ANSWER_SCHEMA, "strict": True},
            }
        return body

    def _backoff_s(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter; Retry-After, when given, is a floor.
        delay = random.uniform(0, min(self.conf.backoff_max_s, self.conf.backoff_base_s * 2**attempt))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.conf.backoff_max_s))
        return delay

    async def _complete_one(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, request: TeachRequest) -> Completion:
        body = self._body(request)
        t0 = time.perf_counter()
        kind, error = "backend", "no attempt made"
        for attempt in range(self.conf.max_retries + 1):
            retry_after = None
            async with gate:
                try:
                    response = await client.post(self.url, json=body)
                except httpx.TimeoutException as exc:
                    kind, error = "timeout", f"no answer within {self.conf.timeout_s}s ({type(exc).__name__})"
                except httpx.TransportError as exc:
                    kind, error = "connect", f"{type(exc).__name__}: {exc}"[:300]
                else:
                    if response.status_code in _RETRY_STATUS:
                        kind = "http_429" if response.status_code == 429 else "http_5xx"
                        error = f"HTTP {response.status_code}: {response.text[:200]}"
                        retry_after = _retry_after_s(response)
                    elif response.status_code >= 400:
                        return self._failed(t0, "http_4xx", f"HTTP {response.status_code}: {response.text[:300]}")
                    else:
                        return self._parse(response, t0)
            if attempt < self.conf.max_retries:
                await asyncio.sleep(self._backoff_s(attempt, retry_after))
        return self._failed(t0, kind, f"{error} (after {self.conf.max_retries + 1} attempts)")

    @staticmethod
    def _failed(t0: float, kind: str, error: str) -> Completion:
        return Completion(None, latency_ms=(time.perf_counter() - t0) * 1000, error_kind=kind, error=error)

    def _parse(self, response: httpx.Response, t0: float) -> Completion:
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._failed(t0, "bad_response", f"response is not JSON: {response.text[:200]!r}")
        if not isinstance(payload, dict):
            return self._failed(t0, "bad_response", f"response is not a JSON object: {str(payload)[:200]}")
        choices = payload.get("choices") or []
        message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str) or not content.strip():
            return self._failed(t0, "empty_choice", f"no content in choices: {json.dumps(choices)[:200]}")
        usage = payload.get("usage") or {}
        return Completion(
            text=content,
            input_tokens=usage.get("prompt_tokens"),
            output_tokens=usage.get("completion_tokens"),
            latency_ms=(time.perf_counter() - t0) * 1000,
        )
