"""A local causal LM (hub id or local path) with batched generate(), CPU or GPU.

Prompts go through the tokenizer's chat template when it has one, else a plain
"role: content" transcript. Left padding, so every row's answer starts right after its
prompt. Greedy decoding (the teacher should be deterministic).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from em_spark.config import TransformersBackendConf
from em_spark.teacher.base import Completion, Message, TeachRequest


def plain_transcript(messages: Sequence[Message]) -> str:
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nassistant:"


class TransformersBackend:
    def __init__(self, conf: TransformersBackendConf):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.conf = conf
        self.torch = torch
        device = conf.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        dtype = "auto" if conf.dtype == "auto" else getattr(torch, conf.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(conf.model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(conf.model, dtype=dtype).to(device).eval()

    def prompt_text(self, messages: Sequence[Message]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return plain_transcript(messages)

    def complete(self, requests: Sequence[TeachRequest]) -> list[Completion]:
        out: list[Completion] = []
        size = self.conf.batch_size
        for start in range(0, len(requests), size):
            out += self._batch(requests[start : start + size])
        return out

    def _batch(self, requests: Sequence[TeachRequest]) -> list[Completion]:
        t0 = time.perf_counter()
        prompts = [self.prompt_text(r.messages) for r in requests]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        with self.torch.inference_mode():
            generated = self.model.generate(
                **enc,
                max_new_tokens=self.conf.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = generated[:, enc["input_ids"].shape[1] :]
        per_row_ms = (time.perf_counter() - t0) * 1000 / len(requests)
        out = []
        for i in range(len(requests)):
            row = new_tokens[i]
            # Tokens after the first end-of-sequence are padding.
            eos = (row == self.tokenizer.eos_token_id).nonzero()
            n_out = int(eos[0]) + 1 if len(eos) else int(row.shape[0])
            text = self.tokenizer.decode(row[:n_out], skip_special_tokens=True)
            out.append(
                Completion(
                    text=text,
                    input_tokens=int(enc["attention_mask"][i].sum()),
                    output_tokens=n_out,
                    latency_ms=per_row_ms,
                )
            )
        return out
