"""The ``score`` job: candidates -> predictions, one row per candidate pair (docs/SCORING.md).

``score_candidates`` joins candidate pairs with their records and scores them in the
pandas UDF (udfs/scoring.py: prefilter, student verdict, rationale policy); ``run_score``
scores what is missing from ``predictions`` (no ok prediction from this model yet) in
chunks, one Delta MERGE per chunk, so a crash loses at most the chunk in flight and a
re-run does only what is missing; at the end it checks rows == candidates.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from em_spark.config import Config, ScoreConf
from em_spark.errors import InputError
from em_spark.faults import checkpoint
from em_spark.mlflow_store import MLFLOW_SCHEMES, MlflowStore
from em_spark.runs import Run
from em_spark.saved_model import SavedModel, feature_schema_check
from em_spark.scoring.batch import RESULT_COLUMNS, ScoringPolicy
from em_spark.tables import Lakehouse

log = logging.getLogger(__name__)

def model_store(config: Config) -> MlflowStore:
    return MlflowStore.of(config.mlflow.tracking_uri, config.mlflow.registry_uri)


def resolve_model_uri(config: Config) -> str:
    """``score.model_uri`` (a folder, made absolute), else the latest registered version."""
    uri = config.score.model_uri
    if uri is None:
        return model_store(config).latest_version(config.mlflow.registered_model)
    if uri.startswith(MLFLOW_SCHEMES):
        return uri
    path = Path(uri)
    if not path.exists():
        raise InputError(f"score.model_uri: model folder not found: {uri}")
    return str(path.resolve())


def scoring_policy(conf: ScoreConf) -> ScoringPolicy:
    return ScoringPolicy(
        rationale=conf.rationale,
        uncertain_band=conf.uncertain_band,
        max_new_tokens=conf.max_new_tokens,
        batch_size=conf.batch_size,
        threshold=conf.threshold,
        use_prefilter=conf.prefilter,
    )


def _records(lake: Lakehouse, source: str, side: str) -> DataFrame:
    return (
        lake.read("records")
        .where(F.col("source") == source)
        .select(F.col("record_id").alias(f"{side}_id"), F.col("attributes").alias(f"{side}_attributes"))
    )


# Below this many pairs per task, a chunk gets fewer tasks than spark.sql.shuffle.partitions
# (but never fewer than the cores): tiny tasks cost more than they share out.
PAIRS_PER_TASK = 10_000


def scoring_tasks(lake: Lakehouse, config: Config, pairs: int | None) -> int:
    """Tasks per chunk: ``score.partitions``, else ``spark.sql.shuffle.partitions``, lowered
    for a small chunk of ``pairs`` to one task per core (a few thousand pairs scored in many
    small batches cost more than in a few larger ones)."""
    if config.score.partitions:
        return config.score.partitions
    partitions = int(lake.spark.conf.get("spark.sql.shuffle.partitions"))
    if pairs is None:
        return partitions
    try:
        cores = lake.spark.sparkContext.defaultParallelism
    except Exception:  # noqa: BLE001 - a Spark Connect client has no SparkContext
        return partitions
    return max(1, min(partitions, max(cores, math.ceil(pairs / PAIRS_PER_TASK))))


def score_candidates(
    lake: Lakehouse, config: Config, candidates: DataFrame, run: Run, n_pairs: int | None = None
) -> DataFrame:
    """Predictions rows (the ``predictions`` contract) for ``candidates`` (pair_id, left_id,
    right_id), lazily: nothing runs until the result is written. A pair whose record is
    missing from ``records`` gets a failed row, never no row. ``n_pairs``: about how many
    candidates there are, if known (it sets the number of tasks, see
    :func:`scoring_tasks`)."""
    from udfs.scoring import UdfSettings, score_column

    model_uri = resolve_model_uri(config)
    settings = UdfSettings(
        model_uri=model_uri,
        policy=scoring_policy(config.score),
        gpu_batch_size=config.score.gpu_batch_size,
        device=config.score.device,
        dtype=None if config.score.dtype == "auto" else config.score.dtype,
        tracking_uri=model_store(config).tracking_uri,
        registry_uri=model_store(config).registry,
    )
    right_source = "left" if config.mode == "dedupe" else "right"
    pairs = (
        candidates.select("pair_id", "left_id", "right_id")
        .join(_records(lake, "left", "left"), "left_id", "left")
        .join(_records(lake, right_source, "right"), "right_id", "left")
    )
    # An explicit count: adaptive execution would otherwise coalesce a small (but costly to
    # score) input into one task on one core.
    pairs = pairs.repartition(scoring_tasks(lake, config, n_pairs))
    result = score_column(settings, "left_attributes", "right_attributes")
    return pairs.select(
        "pair_id",
        "left_id",
        "right_id",
        result.alias("r"),
    ).select(
        "pair_id",
        "left_id",
        "right_id",
        *[F.col(f"r.{c}").alias(c) for c in RESULT_COLUMNS],
        F.lit(model_uri).alias("model_uri"),
        F.lit(run.run_id).alias("run_id"),
        F.current_timestamp().alias("scored_at"),
    )


def run_score(lake: Lakehouse, config: Config, run: Run) -> None:
    """Score every candidate lacking an ok prediction from this model into ``predictions``."""
    lake.require("candidates")
    model_uri = resolve_model_uri(config)
    # Resolved once, so every chunk uses the same model version.
    config = config.model_copy(update={"score": config.score.model_copy(update={"model_uri": model_uri})})
    check_feature_schema(lake, config, model_uri, run)
    candidates = lake.read("candidates")
    todo = candidates
    if not config.score.rescore:
        done = (
            lake.read("predictions")
            .where((F.col("status") == "ok") & (F.col("model_uri") == model_uri))
            .select("pair_id")
        )
        todo = candidates.join(done, "pair_id", "left_anti")
    n_todo = todo.count()
    chunks = math.ceil(n_todo / config.score.chunk_pairs)
    log.info("score: %d candidates to score with %s in %d chunk(s)", n_todo, model_uri, chunks)
    for chunk in range(chunks):
        part = todo.where(F.pmod(F.xxhash64("pair_id"), F.lit(chunks)) == chunk)
        lake.merge("predictions", score_candidates(lake, config, part, run, math.ceil(n_todo / chunks)))
        checkpoint("score", chunk + 1)
        log.info("score: chunk %d/%d committed", chunk + 1, chunks)
    run.count("scored", n_todo)
    run.count("chunks", chunks)
    _drop_stale_and_check(lake, candidates, run)


def check_feature_schema(lake: Lakehouse, config: Config, model_uri: str, run: Run) -> None:
    """Record (check ``feature_schema``) that the records carry the attributes the model's
    feature model compares, or stop with InputError before anything is written
    (em_spark.saved_model.feature_schema_check). Reads the model's metadata on the driver,
    not its weights (the workers load those)."""
    saved = SavedModel.read(model_uri, model_store(config))
    sources = ["left"] if config.mode == "dedupe" else ["left", "right"]
    present = {
        row.name
        for row in lake.read("records")
        .where(F.col("source").isin(sources))
        .select(F.explode(F.map_keys("attributes")).alias("name"))
        .distinct()
        .collect()
    }
    run.check(
        "feature_schema",
        feature_schema_check(saved.feature_attributes, present, saved.feature_model_uses(config.score.prefilter)),
    )


def _prediction_stats(candidates: DataFrame, predictions: DataFrame) -> Row:
    """One pass over candidates FULL OUTER JOIN predictions: what the one-to-one check
    and the run's counts need, and the predictions of pairs no longer candidates."""
    c = candidates.select(F.col("pair_id").alias("c_pair_id"))
    p = predictions.select("pair_id", "status", "decided_by", "verdict", "rationale", "rationale_by")
    joined = c.join(p, c["c_pair_id"] == p["pair_id"], "full_outer")
    is_candidate = F.col("c_pair_id").isNotNull()

    def among_candidates(condition: Column) -> Column:
        return F.sum(F.when(is_candidate & condition, 1).otherwise(0))

    return joined.agg(
        among_candidates(F.lit(True)).alias("rows"),
        F.count_distinct("c_pair_id").alias("pairs"),
        F.count("pair_id").alias("predictions"),
        F.sum(F.when(~is_candidate, 1).otherwise(0)).alias("stale"),
        among_candidates(F.col("status").isNull()).alias("unscored"),
        among_candidates(F.col("status") == "failed").alias("failed"),
        among_candidates(F.col("decided_by") == "prefilter").alias("by_prefilter"),
        among_candidates(F.col("verdict") == "match").alias("matches"),
        among_candidates(F.col("rationale").isNotNull()).alias("rationales"),
        # the student's rationales that failed the checker and were replaced
        among_candidates(F.col("rationale_by") == "rules").alias("rationales_by_rules"),
    ).collect()[0]


def _drop_stale_and_check(lake: Lakehouse, candidates: DataFrame, run: Run) -> None:
    """Delete predictions of pairs that are no longer candidates (e.g. after re-blocking),
    then check one prediction per candidate: one query when nothing is stale."""
    stats = _prediction_stats(candidates, lake.read("predictions"))
    stale = stats["stale"] or 0
    run.count("stale_deleted", stale)
    if stale:
        lake.delete_missing("predictions", candidates)
        stats = _prediction_stats(candidates, lake.read("predictions"))
    for key in ("rows", "failed", "by_prefilter", "matches", "rationales", "rationales_by_rules"):
        run.count("predictions" if key == "rows" else key, stats[key] or 0)
    run.count("candidates", stats["pairs"])
    n_predictions = stats["predictions"]
    ok = (stats["rows"] or 0) == stats["pairs"] == n_predictions and not stats["unscored"] and not stats["stale"]
    verdict = "ok" if ok else "FAILED"
    run.check(
        "predictions_per_candidate",
        f"{verdict}: {n_predictions} predictions, {stats['pairs']} candidates, "
        f"{stats['unscored'] or 0} without a prediction",
    )
    if not ok:
        raise RuntimeError(f"score: predictions do not match candidates one to one ({run.checks['predictions_per_candidate']})")
