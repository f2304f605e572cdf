"""Span-corruption pretraining of the student on unlabeled text (T5's objective).

A preset starts from random weights, so fine-tuning has to teach it the records' words and
the task at once. Before fine-tuning, ``pretrain_span_corruption`` can spend a wall-clock
budget on the serialized records alone — no labels: in each record about 15% of the
tokens, in spans of about 3, are each replaced by one sentinel (``<extra_id_i>``), and the
model learns to write the missing spans back after their sentinels. Every epoch draws new
spans. Works for any seq2seq checkpoint whose tokenizer has T5's sentinels.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from em_spark.config import PretrainConf
from em_spark.errors import InputError
from em_spark.student.inference import pad_batch
from em_spark.student.optim import learning_rate_factor, length_bucketed_batches

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    steps: int
    seconds: float
    epochs: float
    sequences: int
    first_loss: float  # mean over the first 10 steps
    last_loss: float  # mean over the last 10 steps


def _segment(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """``total`` items cut at random into ``parts`` non-empty runs: the run lengths."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))


def noise_mask(length: int, density: float, mean_span: float, max_spans: int, rng: np.random.Generator) -> np.ndarray:
    """Which of ``length`` tokens are masked: about ``density`` of them, in spans of about
    ``mean_span``, clean and noise runs alternating (clean first), at most ``max_spans``."""
    noise = min(max(round(length * density), 1), length - 1)
    spans = min(max(round(noise / mean_span), 1), noise, length - noise, max_spans)
    mask = np.zeros(length, dtype=bool)
    position = 0
    for clean_run, noise_run in zip(_segment(length - noise, spans, rng), _segment(noise, spans, rng)):
        position += clean_run
        mask[position : position + noise_run] = True
        position += noise_run
    return mask


def corrupt_spans(
    ids: Sequence[int], mask: np.ndarray, sentinels: Sequence[int], eos_id: int
) -> tuple[list[int], list[int]]:
    """(input, target): each masked span replaced by the next sentinel in the input; the
    target lists each sentinel followed by its span. Both end with ``eos_id``."""
    inputs: list[int] = []
    target: list[int] = []
    span = -1
    for i, token in enumerate(ids):
        if not mask[i]:
            inputs.append(token)
            continue
        if i == 0 or not mask[i - 1]:
            span += 1
            inputs.append(sentinels[span])
            target.append(sentinels[span])
        target.append(token)
    return inputs + [eos_id], target + [eos_id]


def sentinel_ids(tokenizer: Any) -> list[int]:
    """The ids of ``<extra_id_0>``, ``<extra_id_1>``, ... that the tokenizer has."""
    vocab = tokenizer.get_vocab()
    ids = []
    while f"<extra_id_{len(ids)}>" in vocab:
        ids.append(vocab[f"<extra_id_{len(ids)}>"])
    if not ids:
        raise InputError("train.pretrain: the student's tokenizer has no sentinel tokens (<extra_id_0>, ...); "
                         "span corruption needs a T5-style tokenizer (or set train.pretrain.minutes: 0)")
    return ids


def pretrain_span_corruption(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    conf: PretrainConf,
    device: torch.device,
    seed: int,
    use_bf16: bool = False,
) -> PretrainResult:
    """Train ``model`` in place on span corruption of ``texts`` for ``conf.minutes``
    (or ``conf.max_epochs``); AdamW with warmup, the rate decaying to 0 at the end."""
    sentinels = sentinel_ids(tokenizer)
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=conf.max_tokens - 1)
    sequences = [ids for ids in encoded["input_ids"] if len(ids) >= 2]
    if not sequences:
        raise InputError("train.pretrain: no text of two or more tokens to pretrain on")
    t0 = time.monotonic()
    budget_s = conf.minutes * 60
    rng = random.Random(seed)
    mask_rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(len(sequences) / conf.batch_size)
    total_steps = steps_per_epoch * conf.max_epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=conf.learning_rate, weight_decay=0.01)
    losses: list[float] = []
    model.train()
    epochs = 0.0
    for epoch in range(conf.max_epochs):
        pairs = [
            corrupt_spans(ids, noise_mask(len(ids), conf.noise_density, conf.mean_span_length, len(sentinels), mask_rng),
                          sentinels, tokenizer.eos_token_id)
            for ids in sequences
        ]
        batches = length_bucketed_batches([len(p[0]) for p in pairs], conf.batch_size, rng)
        for b, batch in enumerate(batches):
            ids, attention = pad_batch([pairs[i][0] for i in batch], tokenizer.pad_token_id)
            target, _ = pad_batch([pairs[i][1] for i in batch], tokenizer.pad_token_id)
            target[target == tokenizer.pad_token_id] = -100
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(input_ids=ids.to(device), attention_mask=attention.to(device), labels=target.to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            spent = (time.monotonic() - t0) / budget_s
            for group in optimizer.param_groups:
                group["lr"] = conf.learning_rate * learning_rate_factor(len(losses), conf.warmup_steps, total_steps, spent)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            epochs = epoch + (b + 1) / len(batches)
            if len(losses) % 100 == 0:
                log.info("pretrain: step %d epoch %.2f loss %.4f", len(losses), epochs, np.mean(losses[-100:]))
            if time.monotonic() - t0 > budget_s:
                break
        if time.monotonic() - t0 > budget_s:
            break
    model.eval()
    return PretrainResult(
        steps=len(losses),
        seconds=time.monotonic() - t0,
        epochs=epochs,
        sequences=len(sequences),
        first_loss=float(np.mean(losses[:10])),
        last_loss=float(np.mean(losses[-10:])),
    )
