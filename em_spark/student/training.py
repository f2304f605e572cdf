"""Fine-tuning the student on labeled pairs (pure Python + torch; no pyspark).

Targets are ``match`` / ``no match``, followed by the teacher's explanation in mode
``explained`` (the paper's EA), nothing in ``label_only`` (BL), an explanation of another
pair with the same label in ``shuffled``, or the first k words in ``truncated``.

Class imbalance: matches are rare (about 10% of the DeepMatcher pairs), so each pair's
loss is weighted — matches by ``positive_weight`` (default negatives / positives), the
weighted mean taken per batch. No oversampling: an epoch costs the same in every mode.
Training stops at ``max_epochs``, at the wall-clock budget, or after ``patience``
validations without a better valid F1 (F1 of p_match at its best threshold); the best
weights and their threshold are kept.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from em_spark.config import TrainConf
from em_spark.errors import InputError
from em_spark.features import threshold_for_f1
from em_spark.serialize import SerializerSettings
from em_spark.student.inference import (
    MATCH_TEXT,
    NO_MATCH_TEXT,
    StudentPredictor,
    has_verdict_head,
    pad_batch,
    pick_device,
    verdict_logits,
)
from em_spark.student.optim import learning_rate_factor, length_bucketed_batches
from em_spark.student.presets import load_base_model

log = logging.getLogger(__name__)


@dataclass
class PairExample:
    """One labeled pair: its serialized text, label and explanation (None: none usable)."""

    text: str
    label: int
    explanation: str | None = None


@dataclass
class TrainResult:
    model: Any
    tokenizer: Any
    threshold: float
    valid_f1: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    stopped_by: str = ""
    examples_seen: int = 0
    label_only_fallbacks: int = 0
    positive_weight: float = 1.0
    parameters: int = 0


def serializer_settings(conf: TrainConf) -> SerializerSettings:
    return SerializerSettings(
        max_words_per_attribute=conf.max_words_per_attribute,
        max_words_per_record=conf.max_words_per_record,
        similarity_hints=conf.similarity_hints,
    )


def build_targets(
    examples: Sequence[PairExample], mode: str, truncate_words: int = 8, seed: int = 0
) -> tuple[list[str], int]:
    """Target texts for ``mode`` and how many pairs fell back to the verdict alone."""
    explanations = [e.explanation.strip() if e.explanation else None for e in examples]
    if mode == "shuffled":
        rng = random.Random(seed)
        for label in (0, 1):
            slots = [i for i, e in enumerate(examples) if e.label == label and explanations[i]]
            permuted = [explanations[i] for i in slots]
            rng.shuffle(permuted)
            for i, text in zip(slots, permuted):
                explanations[i] = text
    elif mode == "truncated":
        explanations = [" ".join(t.split()[:truncate_words]) if t else t for t in explanations]
    elif mode != "explained" and mode != "label_only":
        raise InputError(f"train.mode {mode!r}: expected explained, label_only, shuffled or truncated")
    targets, fallbacks = [], 0
    for example, explanation in zip(examples, explanations):
        verdict = MATCH_TEXT if example.label == 1 else NO_MATCH_TEXT
        if mode == "label_only":
            targets.append(verdict)
        elif explanation:
            targets.append(f"{verdict} {explanation}")
        else:
            fallbacks += 1
            targets.append(verdict)
    return targets, fallbacks


def evaluate_f1(predictor: StudentPredictor, valid: Sequence[PairExample], batch_size: int) -> tuple[float, float]:
    """(threshold, F1) of p_match on ``valid`` at the threshold with the best F1."""
    labels = np.asarray([e.label for e in valid], dtype=np.int64)
    scores = predictor.p_match([e.text for e in valid], batch_size=batch_size)
    threshold = threshold_for_f1(labels, scores)
    return threshold, scores_at(labels, scores, threshold)["f1"]


def scores_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """F1, precision and recall of ``scores >= threshold`` against 0/1 ``labels``."""
    predicted = scores >= threshold
    tp = float((predicted & (labels == 1)).sum())
    precision = tp / predicted.sum() if predicted.sum() else 0.0
    recall = tp / labels.sum() if labels.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_student(
    train: Sequence[PairExample],
    valid: Sequence[PairExample],
    conf: TrainConf,
    corpus: Sequence[str],
    work_dir: str | Path,
    attributes: list[str] | None = None,
    on_validation: Callable[[dict[str, float], int], None] | None = None,
) -> TrainResult:
    """Fine-tune ``conf.model`` on ``train``; early-stop and pick the threshold on ``valid``.

    ``corpus``: texts for a preset's tokenizer (the serialized records). ``on_validation`` receives each validation's metrics and the optimizer step
    (MLflow logging).
    """
    if not train or not valid:
        raise InputError(f"training needs train and valid pairs (got {len(train)} / {len(valid)})")
    if not any(e.label == 1 for e in train):
        raise InputError("training pairs have no match (label 1)")
    _seed_everything(conf.seed)
    if conf.threads is not None:
        torch.set_num_threads(conf.threads)
    t0 = time.monotonic()
    budget_s = conf.budget_minutes * 60
    device = pick_device(conf.device)
    use_bf16 = conf.precision == "bf16" or (
        conf.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    model, tokenizer = load_base_model(conf.model, corpus, work_dir)
    model.to(device)
    targets, fallbacks = build_targets(train, conf.mode, conf.truncate_words, conf.seed)
    inputs = tokenizer([e.text for e in train], truncation=True, max_length=conf.max_input_tokens)["input_ids"]
    labels_ids = tokenizer(targets, truncation=True, max_length=conf.max_target_tokens)["input_ids"]
    # The decoder is fed its start token; a BERT tokenizer also puts it ([CLS]) in front
    # of every target, where the verdict word must be first.
    start = model.config.decoder_start_token_id
    labels_ids = [ids[1:] if ids and ids[0] == start else ids for ids in labels_ids]
    n_pos = sum(e.label for e in train)
    pos_weight = conf.positive_weight or max(1.0, (len(train) - n_pos) / n_pos)
    weights = torch.tensor([pos_weight if e.label == 1 else 1.0 for e in train])
    labels = torch.tensor([float(e.label) for e in train])
    with_head = has_verdict_head(model)
    steps_per_epoch = math.ceil(len(train) / (conf.batch_size * conf.grad_accum))

    predictor = StudentPredictor(
        model, tokenizer, 0.5, SerializerSettings(), attributes, max_input_tokens=conf.max_input_tokens
    )
    rng = random.Random(conf.seed)
    result = TrainResult(
        model=model, tokenizer=tokenizer, threshold=0.5, valid_f1=-1.0,
        label_only_fallbacks=fallbacks, positive_weight=pos_weight,
        parameters=sum(p.numel() for p in model.parameters()),
    )
    best_state: dict[str, torch.Tensor] | None = None
    since_best, step, window_loss, window_n = 0, 0, 0.0, 0

    def validate(epoch: float, phase: str) -> bool:
        """Validate, keep the best weights; True when early stopping says stop."""
        nonlocal best_state, since_best, window_loss, window_n
        # Without dropout, as the model will score (eval mode).
        model.eval()
        threshold, f1 = evaluate_f1(predictor, valid, conf.eval_batch_size)
        model.train()
        metrics = {
            "train_loss": window_loss / max(1, window_n),
            "valid_f1": f1,
            "valid_threshold": threshold,
            "epoch": epoch,
            "seconds": time.monotonic() - t0,
            "examples_seen": float(result.examples_seen),
        }
        window_loss, window_n = 0.0, 0
        result.history.append({**metrics, "phase": phase})
        log.info("train (%s): step %d epoch %.2f loss %.4f valid F1 %.4f", phase, step, epoch, metrics["train_loss"], f1)
        if on_validation is not None:
            on_validation(metrics, step)
        if f1 > result.valid_f1:
            result.valid_f1, result.threshold = f1, threshold
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            since_best = 0
        else:
            since_best += 1
        return since_best >= conf.patience

    def record(epoch: float, phase: str) -> bool:
        """The rationale phase's progress: its loss (the verdict does not change in it)."""
        nonlocal window_loss, window_n
        metrics = {"rationale_loss": window_loss / max(1, window_n), "epoch": epoch,
                   "seconds": time.monotonic() - t0, "examples_seen": float(result.examples_seen)}
        window_loss, window_n = 0.0, 0
        result.history.append({**metrics, "phase": phase})
        log.info("train (%s): step %d epoch %.2f loss %.4f", phase, step, epoch, metrics["rationale_loss"])
        if on_validation is not None:
            on_validation(metrics, step)
        return False

    def token_losses(encoded: Any, mask: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per pair: mean loss of its target tokens, loss of its first token)."""
        # the targets shifted right, as the model would from labels= (the loss is ours)
        shifted = model.prepare_decoder_input_ids_from_labels(labels=target)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=shifted).logits
        token_loss = torch.nn.functional.cross_entropy(
            logits.float().transpose(1, 2), target, ignore_index=-100, reduction="none"
        )
        return token_loss.sum(1) / (target != -100).sum(1).clamp(min=1), token_loss[:, 0]

    def encode(ids: torch.Tensor, mask: torch.Tensor) -> Any:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            return model.get_encoder()(input_ids=ids, attention_mask=mask)

    def joint_loss(batch: list[int], ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_pair, first = token_losses(encode(ids, mask), mask, target)
        return per_pair + conf.verdict_loss_weight * first

    def head_loss(batch: list[int], ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logit = verdict_logits(model, encode(ids, mask))
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logit.float(), labels[batch].to(device), reduction="none"
        )

    def rationale_loss(batch: list[int], ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            encoded = encode(ids, mask)
        return token_losses(encoded, mask, target)[0]

    def run_phase(
        name: str, loss_of: Callable[..., torch.Tensor], params: list[torch.nn.Parameter],
        deadline_s: float, check: Callable[[float, str], bool],
    ) -> str:
        """Optimize ``params`` on ``loss_of`` for up to max_epochs, until ``deadline_s``
        (seconds since the start) or until ``check`` (run every eval_every_steps and at each
        epoch's end) says stop; the reason it stopped."""
        nonlocal step, window_loss, window_n
        optimizer = torch.optim.AdamW(params, lr=conf.learning_rate, weight_decay=conf.weight_decay)
        total_steps = max(1, steps_per_epoch * conf.max_epochs)
        phase_start, phase_steps = time.monotonic(), 0
        span = max(1e-9, deadline_s - (phase_start - t0))
        stop = ""
        for epoch in range(conf.max_epochs):
            batches = length_bucketed_batches([len(x) for x in inputs], conf.batch_size, rng)
            for b, batch in enumerate(batches):
                ids, mask = pad_batch([inputs[i] for i in batch], tokenizer.pad_token_id)
                target, _ = pad_batch([labels_ids[i] for i in batch], tokenizer.pad_token_id)
                target[target == tokenizer.pad_token_id] = -100
                per_pair = loss_of(batch, ids.to(device), mask.to(device), target.to(device))
                w = weights[batch].to(device)
                loss = (per_pair * w).sum() / w.sum()
                (loss / conf.grad_accum).backward()
                window_loss += loss.item()
                window_n += 1
                result.examples_seen += len(batch)
                if (b + 1) % conf.grad_accum == 0 or b + 1 == len(batches):
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    factor = learning_rate_factor(
                        phase_steps, conf.warmup_steps, total_steps, (time.monotonic() - phase_start) / span
                    )
                    for group in optimizer.param_groups:
                        group["lr"] = conf.learning_rate * factor
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    phase_steps += 1
                    if conf.eval_every_steps and step % conf.eval_every_steps == 0:
                        if check(epoch + (b + 1) / len(batches), name):
                            return "early_stopping"
                if time.monotonic() - t0 > deadline_s:
                    stop = "budget"
                    break
            if window_n and check(epoch + 1.0 if not stop else epoch + (b + 1) / len(batches), name):
                return "early_stopping"
            if stop:
                return stop
        return "max_epochs"

    model.train()
    if not with_head:
        stop = run_phase("joint", joint_loss, list(model.parameters()), budget_s, validate)
    else:
        # Two phases: the encoder and its head learn the verdict alone (a cross-encoder, as
        # the pretrained encoder was fine-tuned in the probes of docs/STUDENT.md), then the
        # decoder learns the rationales over the frozen encoder. Trained jointly, the
        # rationale loss's gradients kept the head at a valid F1 of 0.27 (docs/BENCHMARKS.md).
        decoder = model.get_decoder()
        verdict_params = [p for n, p in model.named_parameters() if not n.startswith("decoder.")]
        stop = run_phase("verdict", head_loss, verdict_params, budget_s * conf.verdict_budget_share, validate)
        if best_state is not None:
            model.load_state_dict(best_state)
        for p in verdict_params:
            p.requires_grad_(False)
        model.get_encoder().eval()
        try:
            rationale_stop = run_phase("rationale", rationale_loss, list(decoder.parameters()), budget_s, record)
        finally:
            for p in verdict_params:
                p.requires_grad_(True)
        best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        stop = f"{stop}, then {rationale_stop}"
    result.stopped_by = stop
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.steps = step
    result.seconds = time.monotonic() - t0
    return result
