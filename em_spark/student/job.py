"""The ``train`` job: labeled pairs + explanations from Delta -> a registered MLflow model.

Labeled pairs are thousands of rows, not candidate-scale: the job collects them (with
both records' attributes and the configured teacher's explanation) to the driver and
trains there, on the driver's GPU when it has one. A cluster runs this job on a
single-node (GPU) job cluster; scoring is what fans out over executors.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from em_spark.config import Config
from em_spark.errors import InputError
from em_spark.features import infer_attributes
from em_spark.match_model import MatchModel
from em_spark.mlflow_store import MlflowStore
from em_spark.runs import Run
from em_spark.student.tracking import log_student
from em_spark.tables import Lakehouse

log = logging.getLogger(__name__)

# Extra unlabeled records (beyond those in labeled pairs) for a preset's tokenizer.
TOKENIZER_RECORDS = 10_000


def labeled_pairs(lake: Lakehouse, config: Config) -> DataFrame:
    """Train/valid pairs with both records' attributes and the latest ok explanation."""
    conf = config.train
    records = lake.read("records")
    right_source = "left" if config.mode == "dedupe" else "right"
    left = records.where(F.col("source") == "left").select(
        F.col("record_id").alias("left_id"), F.col("attributes").alias("left_attributes")
    )
    right = records.where(F.col("source") == right_source).select(
        F.col("record_id").alias("right_id"), F.col("attributes").alias("right_attributes")
    )
    expl = lake.read("explanations").where(
        (F.col("teacher") == conf.teacher) & (F.col("status") == "ok") & F.col("explanation").isNotNull()
    )
    latest = Window.partitionBy("pair_id").orderBy(F.col("created_at").desc())
    expl = expl.withColumn("_n", F.row_number().over(latest)).where("_n = 1")
    pairs = lake.read("labels").where(F.col("split").isin("train", "valid")).select(
        "pair_id", "left_id", "right_id", "label", "split"
    )
    if conf.use_pseudo_labels:
        pseudo = (
            expl.where(F.col("pseudo_label") & F.col("label").isNotNull())
            .join(pairs.select("pair_id"), "pair_id", "left_anti")
            .select("pair_id", "left_id", "right_id", "label", F.lit("train").alias("split"))
        )
        pairs = pairs.unionByName(pseudo)
    return (
        pairs.join(left, "left_id")
        .join(right, "right_id")
        .join(expl.select("pair_id", "explanation"), "pair_id", "left")
    )


def run_train(lake: Lakehouse, config: Config, run: Run) -> None:
    conf = config.train
    lake.require("records", "labels")
    rows = [r.asDict() for r in labeled_pairs(lake, config).collect()]
    train_rows = [r for r in rows if r["split"] == "train"]
    valid_rows = [r for r in rows if r["split"] == "valid"]
    if not train_rows or not valid_rows:
        raise InputError(
            f"train: need labeled train and valid pairs whose records exist "
            f"(found {len(train_rows)} train, {len(valid_rows)} valid in {lake.ref('labels')})"
        )
    attributes = config.attributes or infer_attributes(
        [r["left_attributes"] for r in rows] + [r["right_attributes"] for r in rows]
    )

    def triples(part: list[dict[str, Any]]) -> list[tuple]:
        return [(r["left_attributes"], r["right_attributes"], int(r["label"])) for r in part]

    explanations = [r["explanation"] for r in train_rows]
    extra_records = [r["attributes"] for r in lake.read("records").select("attributes").limit(TOKENIZER_RECORDS).collect()]
    log.info("train: %d train / %d valid pairs, %d with a %s explanation",
             len(train_rows), len(valid_rows), sum(1 for e in explanations if e), conf.teacher)

    import mlflow

    store = MlflowStore.of(config.mlflow.tracking_uri, config.mlflow.registry_uri)
    with tempfile.TemporaryDirectory(prefix="em-train-") as work, store.active(), mlflow.start_run(
        experiment_id=store.experiment_id(config.mlflow.experiment), run_name=f"train-{run.run_id[:8]}"
    ) as mlrun:
        mlflow.log_params({f"train.{k}": v for k, v in conf.model_dump().items()})
        mlflow.log_params({
            "em_run_id": run.run_id, "mode_link_or_dedupe": config.mode, "attributes": ",".join(attributes),
            "train_pairs": len(train_rows), "valid_pairs": len(valid_rows),
        })
        model = MatchModel.fit(
            triples(train_rows), triples(valid_rows), explanations, conf, Path(work) / "base", attributes,
            corpus_records=extra_records,
            on_validation=lambda metrics, step: mlflow.log_metrics(metrics, step=step),
        )
        info = model.fit_info
        result, verdict_by = info["result"], info["verdict_by"]
        model.student.extra.update({"em_run_id": run.run_id, "mlflow_run_id": mlrun.info.run_id})
        summary = {
            "best_valid_f1": result.valid_f1, "threshold": result.threshold,
            "train_seconds": result.seconds, "steps": float(result.steps),
            "label_only_fallbacks": float(result.label_only_fallbacks),
            "positive_weight": result.positive_weight, "parameters": float(result.parameters),
        }
        if model.feature_model is not None:
            summary.update({f"feature_model_{k}": v for k, v in model.feature_model.valid_metrics.items()})
            summary["prefilter_threshold"] = model.feature_model.prefilter_threshold
        model_dir = model.save(Path(work) / "model")
        mlflow.log_metrics(summary)
        mlflow.set_tag("stopped_by", result.stopped_by)
        mlflow.set_tag("verdict_by", verdict_by)
        uri = log_student(model_dir, config.mlflow.registered_model if conf.register_model else None)
    run.count("train_pairs", info["train_pairs"])
    run.count("valid_pairs", info["valid_pairs"])
    run.count("train_positives", sum(int(r["label"]) for r in train_rows))
    run.count("explanations_used", info["explanations_used"])
    run.count("steps", result.steps)
    run.count("label_only_fallbacks", result.label_only_fallbacks)
    run.check("model_uri", uri)
    run.check("mlflow_run_id", mlrun.info.run_id)
    run.check("threshold", f"{result.threshold:.6f}")
    run.check("valid_f1", f"{result.valid_f1:.4f}")
    run.check("stopped_by", result.stopped_by)
    run.check("verdict_by", verdict_by)
    log.info("train: %s valid F1 %.4f threshold %.4f (%s)", uri, result.valid_f1, result.threshold, result.stopped_by)
