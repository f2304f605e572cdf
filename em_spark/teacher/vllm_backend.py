"""vLLM's offline engine (``LLM.chat`` with ``SamplingParams``) on a GPU executor.

One engine per Python worker (cached by :func:`em_spark.teacher.backends.get_backend`).
By default the engine lives in its OWN process started with the ``spawn`` method: a
PySpark worker is a forked process, and vLLM initialising CUDA there (or forking again
after CUDA is up) fails with "Cannot re-initialize CUDA in forked subprocess". The
worker talks to it over a pipe; the engine process exits when the pipe closes.
JSON-schema guided decoding uses ``StructuredOutputsParams`` (newer vLLM) or
``GuidedDecodingParams`` (older), whichever the installed vLLM has.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from typing import Any

from em_spark.config import VllmBackendConf
from em_spark.teacher.base import Completion, Message, TeachRequest
from em_spark.teacher.prompts import ANSWER_SCHEMA

log = logging.getLogger(__name__)

# (text, input_tokens, output_tokens)
_Answer = tuple[str, int | None, int | None]


def sampling_params(vllm: Any, conf: VllmBackendConf) -> Any:
    kwargs: dict[str, Any] = {"temperature": conf.temperature, "max_tokens": conf.max_tokens}
    if conf.json_schema:
        sp_module = importlib.import_module("vllm.sampling_params")
        if hasattr(sp_module, "StructuredOutputsParams"):
            kwargs["structured_outputs"] = sp_module.StructuredOutputsParams(json=ANSWER_SCHEMA)
        elif hasattr(sp_module, "GuidedDecodingParams"):
            kwargs["guided_decoding"] = sp_module.GuidedDecodingParams(json=ANSWER_SCHEMA)
        else:
            log.warning("this vLLM has no JSON-schema guided decoding; answers are parsed as text")
    return vllm.SamplingParams(**kwargs)


class _Engine:
    """The engine itself: ``LLM`` + ``SamplingParams``, in whatever process builds it."""

    def __init__(self, conf: VllmBackendConf):
        vllm = importlib.import_module("vllm")
        kwargs = {
            "model": conf.model,
            "tensor_parallel_size": conf.tensor_parallel_size,
            "gpu_memory_utilization": conf.gpu_memory_utilization,
            "dtype": conf.dtype,
            **conf.engine_kwargs,
        }
        if conf.max_model_len is not None:
            kwargs["max_model_len"] = conf.max_model_len
        self.llm = vllm.LLM(**kwargs)
        self.params = sampling_params(vllm, conf)

    def answer(self, conversations: list[list[Message]]) -> list[_Answer]:
        outputs = self.llm.chat(conversations, sampling_params=self.params, use_tqdm=False)
        answers = []
        for output in outputs:
            first = output.outputs[0]
            prompt_ids = getattr(output, "prompt_token_ids", None)
            answers.append(
                (first.text, len(prompt_ids) if prompt_ids is not None else None, len(first.token_ids))
            )
        return answers


def _engine_process(conn: Any, conf_json: str) -> None:
    """Entry point of the spawned engine process: answer batches until the pipe closes."""
    # vLLM's own workers (tensor parallelism) must not fork after CUDA starts either.
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    try:
        engine = _Engine(VllmBackendConf.model_validate_json(conf_json))
        conn.send(("ready", os.getpid()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            conversations = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", engine.answer(conversations)))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _EngineProcess:
    def __init__(self, conf: VllmBackendConf):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_engine_process, args=(child, conf.model_dump_json()), name="em-spark-vllm")
        self.process.start()
        child.close()
        status, value = self.conn.recv()
        if status != "ready":
            self.process.join(timeout=10)
            raise RuntimeError(f"vLLM engine failed to start: {value}")
        self.pid = int(value)
        atexit.register(self.close)

    def answer(self, conversations: list[list[Message]]) -> list[_Answer]:
        self.conn.send(conversations)
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(value)
        return value

    def close(self) -> None:
        self.conn.close()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()


class VllmBackend:
    def __init__(self, conf: VllmBackendConf):
        self.conf = conf
        self.engine: _Engine | _EngineProcess = _EngineProcess(conf) if conf.own_process else _Engine(conf)

    def complete(self, requests: Sequence[TeachRequest]) -> list[Completion]:
        out: list[Completion] = []
        for start in range(0, len(requests), self.conf.batch_size):
            batch = requests[start : start + self.conf.batch_size]
            t0 = time.perf_counter()
            try:
                answers = self.engine.answer([list(r.messages) for r in batch])
            except Exception as exc:  # noqa: BLE001 - the batch fails, the job records it
                out += [Completion(None, error_kind="backend", error=f"vLLM: {exc}"[:500]) for _ in batch]
                continue
            per_row_ms = (time.perf_counter() - t0) * 1000 / len(batch)
            out += [Completion(text, n_in, n_out, per_row_ms) for text, n_in, n_out in answers]
        return out
