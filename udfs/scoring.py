"""The scoring pandas UDF: a thin binding of :mod:`em_spark.scoring.batch` to Spark.

The model cache is a global of this importable module, keyed by model URI (and device /
dtype), so each Python worker loads a model once and reuses it for every later task
(Spark reuses Python workers); a global of a driver script would be shipped and reloaded
with every task. ``load_count(uri)`` says how often this worker loaded ``uri``.

Per task: torch threads = the task's cores (``spark.task.cpus``); the device is the
task's GPU (``TaskContext.resources()["gpu"]``, set by ``spark.task.resource.gpu.amount``)
when it has one, with bf16 and the larger GPU batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from pyspark import TaskContext
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.functions import pandas_udf

from em_spark.mlflow_store import MlflowStore
from em_spark.scoring.batch import RESULT_COLUMNS, ScoringPolicy, score_pairs

if TYPE_CHECKING:  # imported where a worker loads the model: the driver needs no torch
    from em_spark.match_model import MatchModel

RESULT_TYPE = T.StructType(
    [
        T.StructField("p_match", T.DoubleType(), True),
        T.StructField("verdict", T.StringType(), True),
        T.StructField("rationale", T.StringType(), True),
        T.StructField("rationale_by", T.StringType(), True),
        T.StructField("decided_by", T.StringType(), True),
        T.StructField("status", T.StringType(), True),
        T.StructField("error", T.StringType(), True),
    ]
)

_MODELS: dict[tuple[str, str, str | None], "MatchModel"] = {}
_LOADS: Counter[str] = Counter()


@dataclass(frozen=True)
class UdfSettings:
    """Everything a worker needs, as plain values (shipped with the UDF)."""

    model_uri: str
    policy: ScoringPolicy
    gpu_batch_size: int = 512
    device: str = "auto"
    dtype: str | None = None  # None: bf16 where the GPU or CPU computes it natively, else float32
    tracking_uri: str | None = None
    registry_uri: str | None = None


def load_count(uri: str) -> int:
    """How many times this Python worker has loaded ``uri``."""
    return _LOADS[uri]


def get_model(settings: UdfSettings, device: str) -> MatchModel:
    """The worker's cached model for ``settings.model_uri`` on ``device`` (loaded once)."""
    key = (settings.model_uri, device, settings.dtype)
    model = _MODELS.get(key)
    if model is None:
        from em_spark.match_model import MatchModel

        store = MlflowStore(settings.tracking_uri, settings.registry_uri) if settings.tracking_uri else None
        model = MatchModel.load(settings.model_uri, device=device, dtype=settings.dtype, store=store)
        _MODELS[key] = model
        _LOADS[settings.model_uri] += 1
    return model


def task_device(requested: str, context: TaskContext | None) -> str:
    """``auto``: the task's GPU resource, else any visible GPU, else the CPU."""
    if requested != "auto":
        return requested
    gpus = context.resources().get("gpu") if context is not None else None
    if gpus is not None and gpus.addresses:
        return f"cuda:{gpus.addresses[0]}"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _record(value: object) -> Mapping[str, object] | None:
    """A map column as Arrow hands it to pandas (list of pairs or dict) -> dict; null -> None."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value
    return dict(value)


def score_udf(settings: UdfSettings):
    """An iterator pandas UDF over ``struct(left, right)`` (attribute maps) -> RESULT_TYPE."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        context = TaskContext.get()
        threads = context.cpus() if context is not None else 1
        torch.set_num_threads(threads)
        device = task_device(settings.device, context)
        model = get_model(settings, device)
        policy = settings.policy
        if device.startswith("cuda"):
            policy = policy.with_batch_size(settings.gpu_batch_size)
        for batch in batches:
            lefts = [_record(v) for v in batch["left"]]
            rights = [_record(v) for v in batch["right"]]
            yield score_pairs(model, lefts, rights, policy)

    # Non-deterministic: Delta's MERGE then materializes its source once instead of
    # evaluating (re-scoring) it again for the write.
    return pandas_udf(score, RESULT_TYPE).asNondeterministic()


def score_column(settings: UdfSettings, left: Column | str, right: Column | str) -> Column:
    """The UDF applied to two attribute-map columns (null = record not found)."""
    left_c = F.col(left) if isinstance(left, str) else left
    right_c = F.col(right) if isinstance(right, str) else right
    return score_udf(settings)(F.struct(left_c.alias("left"), right_c.alias("right")))
