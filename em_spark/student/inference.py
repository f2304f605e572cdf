"""The student at inference time: load, verdict in one forward pass, greedy rationale.

Imports torch and transformers but never pyspark: the GPU machine and the scoring UDFs
call this module directly. A saved student is one folder (``<dir>/student/``) holding the
Hugging Face model, its tokenizer and ``em_student.json`` (threshold, serializer settings,
attribute order, target texts), so scoring reproduces training exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from em_spark.errors import InputError
from em_spark.mlflow_store import MlflowStore
from em_spark.saved_model import STUDENT_DIR, STUDENT_META_FILE, prefilter_folder, student_metadata
from em_spark.serialize import SerializerSettings, serialize_pair

MATCH_TEXT = "match"
NO_MATCH_TEXT = "no match"
FORMAT_VERSION = 1
# A decoding loop repeats a clause; no sequence of this many tokens is generated twice.
# Shorter ones recur in the rules teacher's own texts (a word quoted in "share" and again
# in "otherwise differ"): with the demo's tokenizer, 3-13% of its test-pair explanations
# on four benchmark sets repeat an 8-token sequence. Decoding within candidates needs no
# guard (a candidate cannot loop).
NO_REPEAT_NGRAM = 12
_VERDICT = re.compile(r"^\s*(no\s+match|match)\b[\s:;,.\-]*", re.IGNORECASE)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_verdict(text: str) -> tuple[str | None, str]:
    """``"no match: prices differ"`` -> ``("no_match", "prices differ")``; unreadable -> None."""
    found = _VERDICT.match(text or "")
    if found is None:
        return None, (text or "").strip()
    verdict = "match" if found.group(1).lower() == MATCH_TEXT else "no_match"
    return verdict, text[found.end() :].strip()


def label_start_ids(tokenizer: Any) -> tuple[int, int]:
    """First token ids of "match" and "no match" as the decoder would produce them."""
    match_ids = tokenizer(MATCH_TEXT, add_special_tokens=False)["input_ids"]
    no_match_ids = tokenizer(NO_MATCH_TEXT, add_special_tokens=False)["input_ids"]
    if not match_ids or not no_match_ids or match_ids[0] == no_match_ids[0]:
        raise InputError(
            f"tokenizer gives '{MATCH_TEXT}' and '{NO_MATCH_TEXT}' the same first token; "
            "p_match needs distinct ones"
        )
    return match_ids[0], no_match_ids[0]


# A student may carry a verdict head on its encoder (the minilm-l6 preset): p_match is then
# read from the encoder alone, and the decoder writes the rationale. The head is a
# submodule of the Hugging Face model, saved with its weights, flagged in its config.
VERDICT_HEAD = "verdict_head"
VERDICT_HEAD_FLAG = "em_verdict_head"


def add_verdict_head(model: Any) -> None:
    """Give ``model`` a verdict head: a logit from its encoder's pooled first token."""
    hidden = model.get_encoder().config.hidden_size
    setattr(model, VERDICT_HEAD, torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(hidden, 1)))
    setattr(model.config, VERDICT_HEAD_FLAG, True)


def has_verdict_head(model: Any) -> bool:
    return getattr(model, VERDICT_HEAD, None) is not None


def verdict_logits(model: Any, encoder_outputs: Any) -> torch.Tensor:
    """The verdict head's match logit per row, from the encoder's outputs (its pooler's
    output where it has one: BERT's [CLS] through a dense layer and tanh)."""
    pooled = getattr(encoder_outputs, "pooler_output", None)
    if pooled is None:
        pooled = encoder_outputs.last_hidden_state[:, 0]
    return getattr(model, VERDICT_HEAD)(pooled).squeeze(-1)


def _load_seq2seq(folder: Path, dtype: torch.dtype) -> Any:
    """The saved model, with its verdict head when its config says it has one."""
    from transformers import AutoModelForSeq2SeqLM
    from transformers.utils import logging as hf_logging

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if not config.get(VERDICT_HEAD_FLAG):
        return AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=dtype)
    verbosity = hf_logging.get_verbosity()
    # Transformers does not know the head: "some weights were not used" is expected.
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    from safetensors import safe_open

    add_verdict_head(model)
    prefix = VERDICT_HEAD + "."
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        state = {k[len(prefix):]: weights.get_tensor(k) for k in weights.keys() if k.startswith(prefix)}
    if not state:
        raise InputError(f"{folder}: the config names a verdict head but model.safetensors has no {prefix}* weights")
    head = getattr(model, VERDICT_HEAD)
    head.load_state_dict(state)
    head.to(dtype)
    return model


def save_student(
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    threshold: float,
    settings: SerializerSettings,
    attributes: Sequence[str] | None,
    extra: dict[str, Any],
    max_input_tokens: int = 256,
) -> Path:
    """Write ``<out_dir>/student/`` (model, tokenizer, em_student.json); return that folder."""
    folder = Path(out_dir) / STUDENT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    meta = {
        "format": FORMAT_VERSION,
        "threshold": float(threshold),
        "settings": settings.to_dict(),
        "attributes": list(attributes) if attributes is not None else None,
        "max_input_tokens": int(max_input_tokens),
        "targets": {"match": MATCH_TEXT, "no_match": NO_MATCH_TEXT},
        "extra": extra,
    }
    (folder / STUDENT_META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    return folder


def pick_device(device: str | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX512-BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """Auto: bf16 on a GPU that has it, fp32 on a CPU.

    On a CPU with AMX, bf16 measured 2.8-3.1x faster verdicts and 1.7-1.9x faster
    generation than fp32 (docs/BENCHMARKS.md), but its p_match depends on how pairs are
    batched (within 0.01): the score job's batches and a served model's differ, and a pair
    near the threshold could get two verdicts. fp32 gives one answer everywhere; bf16 on a
    CPU stays an explicit choice (``score.dtype: bfloat16``).
    """
    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.float32
    if dtype not in _DTYPES:
        raise InputError(f"dtype {dtype!r}: expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids and their attention mask (training and inference alike)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


class StudentPredictor:
    """A loaded student: serialize pairs, read verdicts (p_match), generate rationales."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        threshold: float,
        settings: SerializerSettings,
        attributes: list[str] | None,
        max_input_tokens: int = 256,
        extra: dict[str, Any] | None = None,
        prefilter_path: Path | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.threshold = float(threshold)
        self.settings = settings
        self.attributes = attributes
        self.max_input_tokens = int(max_input_tokens)
        self.extra = dict(extra or {})
        # The folder of the feature model saved with this model (em_spark.features), if any.
        self.prefilter_path = prefilter_path
        self._quote_index: Any = None
        self.match_id, self.no_match_id = label_start_ids(tokenizer)
        self.decoder_start_id = int(model.config.decoder_start_token_id)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def load(
        cls, uri: str, device: str | None = None, dtype: str | None = None, store: MlflowStore | None = None
    ) -> "StudentPredictor":
        """``store``: the MLflow store an MLflow ``uri`` lives in (jobs always pass it)."""
        from transformers import AutoTokenizer

        folder, meta = student_metadata(uri, store)
        try:
            settings = SerializerSettings.from_dict(meta["settings"])
        except InputError as exc:
            raise InputError(f"{folder}: {exc}") from None
        dev = pick_device(device)
        model = _load_seq2seq(folder, pick_dtype(dtype, dev))
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return cls(
            model.to(dev),
            tokenizer,
            threshold=meta["threshold"],
            settings=settings,
            attributes=meta.get("attributes"),
            max_input_tokens=meta.get("max_input_tokens", 256),
            extra=meta.get("extra"),
            prefilter_path=prefilter_folder(folder),
        )

    def serialize_pairs(self, lefts: Sequence[Mapping], rights: Sequence[Mapping]) -> list[str]:
        """Each pair as the model was trained to read it (its similarity hints included)."""
        return [serialize_pair(left, right, self.attributes, self.settings) for left, right in zip(lefts, rights)]

    def _batches(self, texts: Sequence[str], batch_size: int) -> Iterator[tuple[np.ndarray, dict]]:
        """Tokenized batches in input-length order (less padding); yields original indices."""
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_input_tokens, add_special_tokens=True
        )["input_ids"]
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = pad_batch([encoded[i] for i in idx], self.tokenizer.pad_token_id)
            yield idx, {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def p_match(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """P(match): from the verdict head where the model has one, else P("match" | first
        decoder step), renormalized over the two verdict starts."""
        out = np.zeros(len(texts), dtype=np.float64)
        with torch.inference_mode():
            for idx, batch in self._batches(texts, batch_size):
                if has_verdict_head(self.model):
                    encoded = self.model.get_encoder()(**batch)
                    out[idx] = torch.sigmoid(verdict_logits(self.model, encoded).float()).cpu().numpy()
                    continue
                start = torch.full(
                    (len(idx), 1), self.decoder_start_id, dtype=torch.long, device=self.device
                )
                logits = self.model(**batch, decoder_input_ids=start, use_cache=False).logits[:, 0, :]
                pair = logits[:, [self.match_id, self.no_match_id]].float()
                out[idx] = torch.softmax(pair, dim=-1)[:, 0].cpu().numpy()
        return out

    @property
    def verdict_by(self) -> str:
        """Which model the train job chose for verdicts on validation: student or features."""
        return str(self.extra.get("verdict_by", "student"))

    def generate(
        self,
        texts: Sequence[str],
        max_new_tokens: int = 48,
        batch_size: int = 64,
        verdict: str | None = None,
        sources: Sequence[Sequence[str]] | None = None,
        candidates: Sequence[Sequence[str]] | None = None,
    ) -> list[str]:
        """Greedy decoding with the KV cache: "match ..." / "no match ..." per text.

        ``verdict`` ("match" / "no_match") makes every output start with that verdict's
        words, so the rationale explains a verdict decided elsewhere (at the tuned
        threshold, or by the feature model) instead of arguing with it. ``sources``: per
        text, the values its quotes may come from (the pair's attribute values); with
        them, decoding cannot quote anything else; ``candidates``: per text, the texts the
        rationale must be one of (:mod:`em_spark.student.constrained`).
        Without ``candidates``, no n-gram of ``NO_REPEAT_NGRAM`` tokens is generated twice.
        """
        prefix = [self.decoder_start_id]
        words = ""
        if verdict is not None:
            words = MATCH_TEXT if verdict == "match" else NO_MATCH_TEXT
            prefix += self.tokenizer(words, add_special_tokens=False)["input_ids"]
        for name, given in (("sources", sources), ("candidates", candidates)):
            if given is not None and len(given) != len(texts):
                raise InputError(f"generate: {len(given)} {name} for {len(texts)} texts")
        out: list[str] = [""] * len(texts)
        with torch.inference_mode():
            for idx, batch in self._batches(texts, batch_size):
                batch["decoder_input_ids"] = torch.tensor([prefix] * len(idx), device=self.device)
                processors, clauses = None, None
                if sources is not None or candidates is not None:
                    from transformers import LogitsProcessorList

                    from em_spark.student.constrained import ClauseConstraint, QuoteConstraint

                    processors = LogitsProcessorList()
                    if sources is not None:
                        processors.append(QuoteConstraint(self.quote_index, [sources[i] for i in idx], len(prefix)))
                    if candidates is not None:
                        clauses = ClauseConstraint(self.tokenizer, [candidates[i] for i in idx], len(prefix))
                        processors.append(clauses)
                generated = self.model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    use_cache=True,
                    no_repeat_ngram_size=0 if candidates is not None else NO_REPEAT_NGRAM,
                    logits_processor=processors,
                )
                decoded = self.tokenizer.batch_decode(
                    generated, skip_special_tokens=True, clean_up_tokenization_spaces=False
                )
                for row, (i, text) in enumerate(zip(idx, decoded)):
                    chosen = clauses.chosen(row, generated[row].tolist()) if clauses is not None else None
                    out[i] = f"{words} {chosen}" if chosen is not None and verdict is not None else text.strip()
        return out

    @property
    def quote_index(self) -> Any:
        """The tokenizer's token texts indexed for constrained quotes (built on first use)."""
        if self._quote_index is None:
            from em_spark.student.constrained import QuoteIndex

            self._quote_index = QuoteIndex(self.tokenizer)
        return self._quote_index
