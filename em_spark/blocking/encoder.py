"""Learned blocking: fine-tune the embedding blocker's sentence encoder on labeled pairs.

An off-the-shelf sentence embedding ranks WDC-Products' corner-case offers no better than
their title words (pair completeness 0.78 at 20 candidates per left record), and no lexical
method reaches 0.95 there (docs/BENCHMARKS.md). Trained contrastively on the pairs of one
labeled split (as SC-Block does), the same small encoder learns which words name the
product. Loss: each matching pair's two texts must find each other among the batch, both
ways (in-batch negatives), and each left text must also rank its match above one of its
own labeled non-matches (a hard negative, when it has one).

The record text is the embedding blocker's (``record_text``), so the encoder is trained on
exactly what it will embed. The model is saved in the sentence-transformers layout and the
embedding blocker then loads it by path.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from em_spark.blocking.embedding import model_location, record_text
from em_spark.config import BlockConf
from em_spark.errors import ConfigError, InputError

log = logging.getLogger(__name__)
# Cosine similarities are scaled by this before the softmax (sentence-transformers' default).
SIMILARITY_SCALE = 20.0


def labeled_texts(records: DataFrame, labels: DataFrame, conf: BlockConf, mode: str) -> list[tuple[str, str, str, int]]:
    """(left_id, left text, right text, label) of the fine-tuning split's labeled pairs."""
    tune = conf.embedding.fine_tune
    rows = labels.where(F.col("split") == tune.split)
    texts = records.select(
        "source",
        F.col("record_id").alias("rid"),
        record_text(conf.embedding.attributes, conf.exclude_attributes).alias("text"),
    )
    right_source = "right" if mode == "link" else "left"
    left = texts.where(F.col("source") == "left").select(F.col("rid").alias("left_id"), F.col("text").alias("lt"))
    right = texts.where(F.col("source") == right_source).select(
        F.col("rid").alias("right_id"), F.col("text").alias("rt")
    )
    joined = rows.join(left, "left_id").join(right, "right_id").select("left_id", "lt", "rt", "label").collect()
    out = [(r["left_id"], r["lt"] or "", r["rt"] or "", int(r["label"])) for r in joined]
    if not any(label == 1 for *_, label in out):
        raise InputError(
            f"block.embedding.fine_tune: no matching pair of split {tune.split!r} in the labels "
            "has both records in the records table; label some pairs or turn fine_tune off"
        )
    return out


def fine_tune_encoder(examples: list[tuple[str, str, str, int]], conf: BlockConf) -> dict[str, Any]:
    """Fine-tune ``conf.embedding.model`` on ``examples``; save it to ``fine_tune.output``.

    Returns the run's figures (pairs, steps, seconds, first and last loss, output path).
    """
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError("block.embedding.fine_tune: install the extra: pip install 'em-spark[embeddings]'") from exc

    tune = conf.embedding.fine_tune
    rng = random.Random(tune.seed)
    torch.manual_seed(tune.seed)
    positives = [(lt, rt, lid) for lid, lt, rt, label in examples if label == 1]
    hard: dict[str, list[str]] = {}
    for lid, _lt, rt, label in examples:
        if label == 0:
            hard.setdefault(lid, []).append(rt)
    pool = [rt for _lid, _lt, rt, _label in examples]
    model = SentenceTransformer(model_location(conf.embedding.model), device="cpu")
    model.max_seq_length = tune.max_seq_length
    optimizer = torch.optim.AdamW(model.parameters(), lr=tune.learning_rate)
    batch = min(tune.batch_size, len(positives))
    steps = max(tune.min_steps, round(tune.epochs * len(positives) / batch))

    def embed(texts: list[str]) -> Any:
        features = model.preprocess(texts)
        return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)

    model.train()
    order: list[int] = []
    losses: list[float] = []
    t0 = time.monotonic()
    for step in range(steps):
        if len(order) < batch:
            order += rng.sample(range(len(positives)), len(positives))
        chosen, order = order[:batch], order[batch:]
        lefts = [positives[i][0] for i in chosen]
        rights = [positives[i][1] for i in chosen]
        negatives = [rng.choice(hard.get(positives[i][2]) or pool) for i in chosen]
        left_vecs, right_vecs = embed(lefts), embed(rights + negatives)
        sims = left_vecs @ right_vecs.T * SIMILARITY_SCALE
        target = torch.arange(batch)
        loss = torch.nn.functional.cross_entropy(sims, target) + torch.nn.functional.cross_entropy(
            sims[:, :batch].T, target
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            log.info("block encoder: step %d/%d, loss %.3f, %.0f s", step + 1, steps, losses[-1], time.monotonic() - t0)
    model.eval()
    out = Path(tune.output)
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    tail = max(1, len(losses) // 10)
    return {
        "pairs": len(positives),
        "hard_negatives": sum(len(v) for v in hard.values()),
        "steps": steps,
        "batch_size": batch,
        "seconds": round(time.monotonic() - t0, 1),
        "loss_first": round(sum(losses[:tail]) / tail, 4),
        "loss_last": round(sum(losses[-tail:]) / tail, 4),
        "output": str(out),
    }


def with_learned_encoder(
    records: DataFrame, labels: DataFrame | None, conf: BlockConf, mode: str
) -> tuple[BlockConf, dict[str, Any] | None]:
    """``conf`` with the embedding blocker reading a freshly fine-tuned encoder, and the
    fine-tuning figures; ``conf`` unchanged (and None) when fine-tuning is off."""
    if not (conf.embedding.enabled and conf.embedding.fine_tune.enabled):
        return conf, None
    if labels is None:
        raise InputError("block.embedding.fine_tune needs labeled pairs: ingest labels first")
    figures = fine_tune_encoder(labeled_texts(records, labels, conf, mode), conf)
    log.info("block encoder: fine-tuned on %d pairs in %s s -> %s", figures["pairs"], figures["seconds"], figures["output"])
    tuned = conf.model_copy(
        update={"embedding": conf.embedding.model_copy(update={"model": figures["output"]})}
    )
    return tuned, figures
