"""Pick and build a backend from config; one instance per Python worker and settings.

Building a backend can be expensive (a vLLM engine, a local LLM), so instances are
cached in this importable module: a Spark Python worker that runs many tasks builds its
backend once.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import SecretStr

from em_spark.config import TeachConf
from em_spark.teacher.base import Backend

_CACHE: dict[str, Backend] = {}


def teacher_name(conf: TeachConf) -> str:
    """The ``teacher`` column value: the configured name or backend[:model]."""
    if conf.teacher:
        return conf.teacher
    if conf.backend == "rules":
        return "rules"
    return f"{conf.backend}:{getattr(conf, conf.backend).model}"


def build_backend(conf: TeachConf, order: Sequence[str] | None, api_key: SecretStr | None = None) -> Backend:
    if conf.backend == "rules":
        from em_spark.teacher.rules import RulesBackend

        return RulesBackend(order)
    if conf.backend == "openai":
        from em_spark.teacher.openai_backend import OpenAIBackend

        return OpenAIBackend(conf.openai, api_key)
    if conf.backend == "transformers":
        from em_spark.teacher.transformers_backend import TransformersBackend

        return TransformersBackend(conf.transformers)
    from em_spark.teacher.vllm_backend import VllmBackend

    return VllmBackend(conf.vllm)


def get_backend(conf: TeachConf, order: Sequence[str] | None, api_key: SecretStr | None = None) -> Backend:
    """The backend for these settings; local models (transformers, vLLM) are built once."""
    if conf.backend in ("rules", "openai"):  # cheap to build; the key may change between runs
        return build_backend(conf, order, api_key)
    key = f"{conf.model_dump_json()}|{list(order) if order is not None else None}"
    if key not in _CACHE:
        _CACHE[key] = build_backend(conf, order, api_key)
    return _CACHE[key]
