"""The student's training loop helpers (em_spark.student.training): length-bucketed
batches and the learning-rate schedule."""

from __future__ import annotations

import random
from collections.abc import Sequence

# How many batches are length-sorted together: enough to cut padding, few enough to mix.
_BUCKET_BATCHES = 50


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar input length (sorted within buckets of 50 batches)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * _BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), span):
        bucket = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size)]
    rng.shuffle(batches)
    return batches


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int, budget_spent: float) -> float:
    """Linear warmup, then linear decay to 0 at ``total_steps`` or when the wall-clock
    budget is spent (``budget_spent`` = its fraction used), whichever comes first.

    With a budget of one or two epochs, a decay planned over ``max_epochs`` alone would
    end the run near the peak rate; its last (often best) weights then come from the
    noisiest part of training (measured 2026-11-28: docs/BENCHMARKS.md, "In domain").
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    by_steps = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 1.0 - max(by_steps, budget_spent))

