"""STAND-IN for vLLM, for tests only — NOT vLLM. vLLM cannot be installed here (no GPU).

It has the slice of vLLM's offline API that em_spark.teacher.vllm_backend uses, with the
same names and shapes: ``LLM(model=..., tensor_parallel_size=..., ...)``,
``LLM.chat(conversations, sampling_params=..., use_tqdm=...) -> list[RequestOutput]``
(each with ``prompt_token_ids`` and ``outputs[0].text`` / ``.token_ids``),
``LLM.generate``, ``SamplingParams`` and ``sampling_params.StructuredOutputsParams``.
It answers like an obedient teacher: the label it was given, and an explanation quoting
Entity A's first value. Every call is recorded in ``LLM.calls`` (this process) so tests
can check prompts, batching and sampling settings.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from vllm.sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput"]


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]


@dataclass
class RequestOutput:
    request_id: str
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


class LLM:
    calls: list[dict[str, Any]] = []
    instances: list["LLM"] = []

    def __init__(self, model: str, tensor_parallel_size: int = 1, **kwargs: Any):
        self.model = model
        self.tensor_parallel_size = tensor_parallel_size
        self.kwargs = kwargs
        self.pid = os.getpid()
        LLM.instances.append(self)

    def _answer(self, prompt: str) -> str:
        gold = re.search(r"Label: (MATCH|NOT A MATCH)\s*$", prompt)
        label = "no match" if gold and gold.group(1) == "NOT A MATCH" else "match"
        first = re.search(r"Entity A: COL \S+ VAL (\S+)", prompt)
        quoted = first.group(1) if first else "?"
        verdict = "they refer to the same entity" if label == "match" else "they are different entities"
        return '{"label": "%s", "explanation": "Entity A is \\"%s\\" (stand-in %d), so %s."}' % (label, quoted, self.pid, verdict)

    def chat(self, messages: list[list[dict[str, str]]], sampling_params: SamplingParams | None = None, use_tqdm: bool = True, **kwargs: Any) -> list[RequestOutput]:
        LLM.calls.append({"method": "chat", "messages": messages, "sampling_params": sampling_params})
        return self.generate([c[-1]["content"] for c in messages], sampling_params, use_tqdm=use_tqdm, record=False)

    def generate(self, prompts: list[str], sampling_params: SamplingParams | None = None, use_tqdm: bool = True, record: bool = True, **kwargs: Any) -> list[RequestOutput]:
        if record:
            LLM.calls.append({"method": "generate", "prompts": prompts, "sampling_params": sampling_params})
        out = []
        for i, prompt in enumerate(prompts):
            text = self._answer(prompt)[: (sampling_params.max_tokens * 8) if sampling_params else None]
            out.append(RequestOutput(str(i), prompt, list(range(len(prompt.split()))), [CompletionOutput(0, text, list(range(len(text.split()))))]))
        return out
