"""Evaluate: metrics of the verdicts on one labeled split, curves, and a review report.

Labeled pairs are few (hand-labeled), so they are collected to the driver and measured
with scikit-learn; table-scale statistics (recall per blocker, rationale lengths) are
Spark aggregations. Everything lands under ``<reports_dir>/evaluate/`` and in MLflow.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from em_spark.config import Config
from em_spark.errors import EmError
from em_spark.resolve import right_source
from em_spark.review_html import CATEGORIES, write_review_report
from em_spark.runs import Run
from em_spark.tables import Lakehouse

log = logging.getLogger(__name__)

MATCH = "match"


# --- the labeled split ------------------------------------------------------------------


def labeled_predictions(lake: Lakehouse, split: str) -> pd.DataFrame:
    """Labeled pairs of ``split`` with their prediction (null columns where blocking never
    proposed the pair), on the driver."""
    labels = lake.read("labels").where(F.col("split") == split).select(
        "pair_id", "left_id", "right_id", "label"
    )
    predictions = lake.read("predictions").select(
        "pair_id", "p_match", "verdict", "rationale", "rationale_by", "decided_by", "status", "error"
    )
    joined = labels.join(predictions, "pair_id", "left").withColumn(
        "proposed", F.col("verdict").isNotNull()
    )
    return joined.orderBy("pair_id").toPandas()


def chosen_threshold(config: Config, model_uris: list[str]) -> tuple[float, str]:
    """The threshold the verdicts were made at, and where it came from: evaluate.threshold,
    score.threshold, else the one saved with the (single) model that scored the pairs."""
    if config.evaluate.threshold is not None:
        return config.evaluate.threshold, "evaluate.threshold"
    if getattr(config.score, "threshold", None) is not None:
        return float(config.score.threshold), "score.threshold"
    if len(model_uris) == 1:
        try:
            from em_spark.mlflow_store import MlflowStore
            from em_spark.saved_model import SavedModel

            saved = SavedModel.read(model_uris[0], MlflowStore.of(config.mlflow.tracking_uri, config.mlflow.registry_uri))
            where = f"{model_uris[0]} (feature model)" if saved.verdict_by == "features" else model_uris[0]
            return saved.threshold, where
        except Exception as exc:  # noqa: BLE001 - the report still stands; say why
            log.warning("evaluate: threshold of %s not readable (%s); reporting 0.5", model_uris[0], exc)
    return 0.5, "default"


# --- metrics ------------------------------------------------------------------------------


def verdict_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Precision, recall, F1 and the confusion matrix of binary verdicts."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="binary", pos_label=1, zero_division=0
    )
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "pairs": int(len(y_true)),
        "positives": int(np.sum(y_true == 1)),
        "confusion": {"tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn)},
    }


def threshold_sweep(y_true: np.ndarray, scores: np.ndarray, points: int) -> list[dict[str, float]]:
    """Precision / recall / F1 if the verdict were ``p_match >= t``, on a grid of ``t``."""
    rows = []
    positives = int(np.sum(y_true == 1))
    for t in np.linspace(0.0, 1.0, points):
        pred = scores >= t
        tp = int(np.sum(pred & (y_true == 1)))
        predicted = int(np.sum(pred))
        precision = tp / predicted if predicted else 0.0
        recall = tp / positives if positives else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {"threshold": round(float(t), 6), "precision": precision, "recall": recall,
             "f1": f1, "predicted_matches": predicted}
        )
    return rows


def pr_curve(y_true: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """scikit-learn's precision-recall curve and average precision (empty if one class)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    if len(set(y_true.tolist())) < 2:
        return {"precision": [], "recall": [], "thresholds": [], "average_precision": None}
    precision, recall, thresholds = precision_recall_curve(y_true, scores)
    return {
        "precision": precision.round(6).tolist(),
        "recall": recall.round(6).tolist(),
        "thresholds": thresholds.round(6).tolist(),
        "average_precision": float(average_precision_score(y_true, scores)),
    }


def split_metrics(labeled: pd.DataFrame, missing_pairs: str, sweep_points: int) -> dict[str, Any]:
    """All metrics of one labeled split (see :class:`~em_spark.config.EvaluateConf`)."""
    proposed = labeled[labeled["proposed"]]
    measured = labeled if missing_pairs == "no_match" else proposed
    y_true = measured["label"].to_numpy(dtype=int)
    # A failed row (verdict "error") or an unproposed pair is not an accepted match.
    y_pred = (measured["verdict"] == MATCH).to_numpy(dtype=int)
    scores = measured["p_match"].fillna(0.0).to_numpy(dtype=float)
    headline = verdict_metrics(y_true, y_pred)
    matcher = verdict_metrics(
        proposed["label"].to_numpy(dtype=int), (proposed["verdict"] == MATCH).to_numpy(dtype=int)
    )
    sweep = threshold_sweep(y_true, scores, sweep_points)
    best = max(sweep, key=lambda r: (r["f1"], -r["threshold"])) if sweep else None
    positives = labeled[labeled["label"] == 1]
    return {
        **headline,
        "missing_pairs": missing_pairs,
        "matcher": matcher,
        "labeled_pairs": int(len(labeled)),
        "proposed_pairs": int(len(proposed)),
        "positives_proposed": int(positives["proposed"].sum()),
        "failed_pairs": int((labeled["status"] == "failed").sum()),
        "decided_by": {str(k): int(v) for k, v in proposed["decided_by"].value_counts().items()},
        "pr_curve": pr_curve(y_true, scores),
        "sweep": sweep,
        "best_f1_on_this_split": best,
    }


def blocker_recall(lake: Lakehouse) -> dict[str, Any]:
    """Share of all labeled positive pairs each blocker proposed; an unproposed positive is
    a miss for every blocker. ``any`` is the pair completeness of the union."""
    if not lake.exists("candidates"):
        return {"positives": None, "any": None, "missed": None, "per_blocker": {}}
    positives = lake.read("labels").where(F.col("label") == 1).select("pair_id").distinct()
    proposed = positives.join(lake.read("candidates").select("pair_id", "blockers"), "pair_id", "left")
    # One pass: a row per (positive, blocker), a null blocker for a miss; the rollup's
    # grand total (grouping = 1) counts the positives.
    rows = (
        proposed.select("pair_id", F.explode_outer("blockers").alias("blocker"))
        .rollup("blocker")
        .agg(F.countDistinct("pair_id").alias("n"), F.grouping("blocker").alias("total"))
        .collect()
    )
    total = next((r["n"] for r in rows if r["total"]), 0)
    if total == 0:
        return {"positives": 0, "any": None, "missed": 0, "per_blocker": {}}
    missed = next((r["n"] for r in rows if not r["total"] and r["blocker"] is None), 0)
    per_blocker = {r["blocker"]: r["n"] / total for r in rows if not r["total"] and r["blocker"] is not None}
    return {
        "positives": total,
        "any": (total - missed) / total,
        "missed": missed,
        "per_blocker": dict(sorted(per_blocker.items())),
    }


def rationale_lengths(predictions: DataFrame) -> dict[str, Any]:
    """Per verdict: pairs, how many carry a rationale, its length in characters / words,
    and the models that decided them."""
    text = F.trim(F.col("rationale"))
    has = text.isNotNull() & (F.length(text) > 0)
    chars = F.when(has, F.length(text))
    words = F.when(has, F.size(F.split(text, r"\s+")))
    rows = (
        predictions.groupBy("verdict")
        .agg(
            F.count(F.lit(1)).alias("pairs"),
            F.sum(has.cast("int")).alias("with_rationale"),
            F.avg(chars).alias("mean_chars"),
            F.percentile_approx(chars, [0.5, 0.9], 1000).alias("chars_p50_p90"),
            F.max(chars).alias("max_chars"),
            F.avg(words).alias("mean_words"),
            F.slice(F.sort_array(F.collect_set("model_uri")), 1, 20).alias("model_uris"),
        )
        .collect()
    )
    out = {}
    for r in rows:
        p = r["chars_p50_p90"] or [None, None]
        out[r["verdict"]] = {
            "pairs": int(r["pairs"]),
            "with_rationale": int(r["with_rationale"] or 0),
            "mean_chars": _round(r["mean_chars"]),
            "p50_chars": p[0],
            "p90_chars": p[1],
            "max_chars": r["max_chars"],
            "mean_words": _round(r["mean_words"]),
            "model_uris": list(r["model_uris"]),
        }
    return dict(sorted(out.items()))


def rationale_grounding(labeled: pd.DataFrame, records: dict[tuple[str, str], dict[str, str]], mode: str) -> dict[str, Any]:
    """On the split's rationales: grounding (share of quoted values and identifiers found in
    the two records — a hallucination signal) and whether the rationale's own stance agrees
    with the verdict; how many pass the rationale checker, and who wrote them."""
    from em_spark.rationale import check_rationale
    from em_spark.teacher.validate import grounding_score, stance

    scores: list[float] = []
    agree = stated = passed = 0
    with_text = labeled[labeled["rationale"].notna() & (labeled["rationale"].astype(str).str.strip() != "")]
    for row in with_text.itertuples():
        left = records.get(("left", row.left_id), {})
        right = records.get((right_source(mode), row.right_id), {})
        g = grounding_score(row.rationale, left, right)
        if g is not None:
            scores.append(g)
        said = stance(row.rationale)
        if said:
            stated += 1
            agree += int((said > 0) == (row.verdict == MATCH))
        passed += int(check_rationale(row.rationale, row.verdict, left, right).ok)
    return {
        "rationales": int(len(with_text)),
        "pass_checker": passed,
        "by": {str(k): int(v) for k, v in with_text["rationale_by"].value_counts().items()},
        "checkable": len(scores),
        "mean_grounding": _round(float(np.mean(scores))) if scores else None,
        "fully_grounded_share": _round(float(np.mean([s >= 1.0 for s in scores]))) if scores else None,
        "stated_verdict": stated,
        "stance_agrees_with_verdict": _round(agree / stated) if stated else None,
    }


def teacher_grounding(lake: Lakehouse) -> dict[str, Any] | None:
    if not lake.exists("explanations"):
        return None
    r = lake.read("explanations").agg(
        F.count(F.lit(1)).alias("explanations"),
        F.avg("grounding").alias("mean_grounding"),
        F.sum((F.col("status") == "ok").cast("int")).alias("ok"),
    ).collect()[0]
    return {"explanations": int(r["explanations"]), "ok": int(r["ok"] or 0), "mean_grounding": _round(r["mean_grounding"])}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


# --- records and samples for the report ---------------------------------------------------


def fetch_records(lake: Lakehouse, keys: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    """Attributes of a few records (the report's samples), keyed by (source, record_id)."""
    if not keys:
        return {}
    schema = T.StructType(
        [T.StructField("source", T.StringType(), False), T.StructField("record_id", T.StringType(), False)]
    )
    wanted = lake.spark.createDataFrame(sorted(keys), schema)
    rows = (
        lake.read("records")
        .join(F.broadcast(wanted), ["source", "record_id"], "left_semi")
        .select("source", "record_id", "attributes")
        .collect()
    )
    return {(r["source"], r["record_id"]): dict(r["attributes"] or {}) for r in rows}


def categorize(labeled: pd.DataFrame) -> pd.Series:
    """Review category of each labeled pair (keys of :data:`CATEGORIES`)."""
    predicted = labeled["verdict"] == MATCH
    positive = labeled["label"] == 1
    category = np.select(
        [
            ~labeled["proposed"],
            labeled["status"] == "failed",
            predicted & positive,
            predicted & ~positive,
            ~predicted & positive,
        ],
        ["not_proposed", "failed", "true_match", "false_match", "missed_match"],
        default="true_non_match",
    )
    return pd.Series(category, index=labeled.index)


def sample_pairs(labeled: pd.DataFrame, per_category: int, seed: int) -> pd.DataFrame:
    categories = categorize(labeled)
    parts = []
    for name in CATEGORIES:
        group = labeled[categories == name]
        if len(group):
            parts.append(group.sample(n=min(per_category, len(group)), random_state=seed).assign(category=name))
    return pd.concat(parts) if parts else labeled.head(0).assign(category=[])


def unlabeled_matches(lake: Lakehouse, n: int, seed: int) -> pd.DataFrame:
    """A reproducible sample of accepted matches no one labeled: what a reviewer checks."""
    labeled_ids = lake.read("labels").select("pair_id")
    sample = (
        lake.read("predictions")
        .where(F.col("verdict") == MATCH)
        .join(labeled_ids, "pair_id", "left_anti")
        .orderBy(F.xxhash64("pair_id", F.lit(seed)))
        .limit(n)
        .select(
            "pair_id", "left_id", "right_id", "p_match", "verdict", "rationale", "rationale_by", "decided_by",
            "status", "error",
        )
        .toPandas()
    )
    return sample.assign(label=pd.NA, proposed=True, category="unlabeled_match")


# --- charts and files ----------------------------------------------------------------------


def plot_curves(metrics: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    curve = metrics["pr_curve"]
    fig, ax = plt.subplots(figsize=(5, 4))
    if curve["recall"]:
        ax.step(curve["recall"], curve["precision"], where="post", label=f"AP={curve['average_precision']:.3f}")
    ax.scatter([metrics["recall"]], [metrics["precision"]], color="red", zorder=3, label="verdict")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title="Precision-recall")
    ax.legend(loc="lower left")
    fig.tight_layout()
    paths.append(out / "pr_curve.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    sweep = metrics["sweep"]
    fig, ax = plt.subplots(figsize=(5, 4))
    t = [r["threshold"] for r in sweep]
    for key in ("precision", "recall", "f1"):
        ax.plot(t, [r[key] for r in sweep], label=key)
    ax.axvline(metrics["threshold"], color="grey", linestyle="--", label="threshold")
    ax.set(xlabel="p_match threshold", ylim=(0, 1.02), title="Threshold sweep")
    ax.legend(loc="lower left")
    fig.tight_layout()
    paths.append(out / "threshold_sweep.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return path


def log_to_mlflow(config: Config, run: Run, summary: dict[str, Any], out: Path) -> str:
    """One MLflow run per evaluation: parameters, headline metrics and the report files."""
    import mlflow

    from em_spark.mlflow_store import MlflowStore

    store = MlflowStore.of(config.mlflow.tracking_uri, config.mlflow.registry_uri)
    metrics = {
        k: summary[k] for k in ("precision", "recall", "f1", "threshold") if summary.get(k) is not None
    }
    metrics.update({f"matcher_{k}": summary["matcher"][k] for k in ("precision", "recall", "f1")})
    metrics.update({f"confusion_{k}": v for k, v in summary["confusion"].items()})
    if summary["pr_curve"]["average_precision"] is not None:
        metrics["average_precision"] = summary["pr_curve"]["average_precision"]
    if summary["blocking"]["any"] is not None:
        metrics["blocking_recall"] = summary["blocking"]["any"]
        for name, value in summary["blocking"]["per_blocker"].items():
            metrics[f"blocking_recall_{name}"] = value
    with store.active(), mlflow.start_run(
        experiment_id=store.experiment_id(config.mlflow.experiment), run_name=f"evaluate-{summary['split']}"
    ) as active:
        mlflow.set_tags({"em_spark.job": "evaluate", "em_spark.run_id": run.run_id})
        mlflow.log_params(
            {"split": summary["split"], "missing_pairs": summary["missing_pairs"],
             "model_uris": ",".join(summary["model_uris"])[:500]}
        )
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(out), artifact_path="evaluate")
        return active.info.run_id


# --- the job ------------------------------------------------------------------------------


def run_evaluate(lake: Lakehouse, config: Config, run: Run) -> None:
    conf = config.evaluate
    for table in ("labels", "predictions"):
        if not lake.exists(table):
            raise EmError(f"evaluate: no {table} table under {lake.ref(table)}; run the earlier jobs first")
    labeled = labeled_predictions(lake, conf.split)
    if labeled.empty:
        raise EmError(f"evaluate: no labeled pairs in split '{conf.split}' (set evaluate.split)")
    out = Path(config.reports_dir) / "evaluate"
    out.mkdir(parents=True, exist_ok=True)

    summary = split_metrics(labeled, conf.missing_pairs, conf.sweep_points)
    summary["split"] = conf.split
    summary["blocking"] = blocker_recall(lake)
    summary["rationale_lengths"] = rationale_lengths(lake.read("predictions"))
    summary["model_uris"] = sorted({u for v in summary["rationale_lengths"].values() for u in v["model_uris"]})
    summary["threshold"], summary["threshold_source"] = chosen_threshold(config, summary["model_uris"])

    samples = sample_pairs(labeled, conf.report_samples, conf.seed)
    unlabeled = unlabeled_matches(lake, conf.report_samples, conf.seed)
    rsource = right_source(config.mode)
    keys = {("left", i) for i in pd.concat([labeled["left_id"], unlabeled["left_id"]])}
    keys |= {(rsource, i) for i in pd.concat([labeled["right_id"], unlabeled["right_id"]])}
    records = fetch_records(lake, keys)
    summary["rationale_grounding"] = rationale_grounding(labeled, records, config.mode)
    summary["teacher_explanations"] = teacher_grounding(lake)

    sweep = summary.pop("sweep")
    curve = summary["pr_curve"]
    files = [
        _write_json(out / "threshold_sweep.json", sweep),
        _write_json(out / "pr_curve.json", curve),
        _write_json(out / "confusion_matrix.json", summary["confusion"]),
    ]
    files += plot_curves({**summary, "sweep": sweep}, out)
    report = write_review_report(
        out / "review.html",
        pd.concat([samples, unlabeled]) if len(unlabeled) else samples,
        records,
        rsource,
        summary,
    )
    summary_without_curve = {k: v for k, v in summary.items() if k != "pr_curve"}
    files.append(_write_json(out / "metrics.json", summary_without_curve))
    if conf.log_mlflow:
        summary["mlflow_run_id"] = log_to_mlflow(config, run, summary, out)
        run.check("mlflow_run_id", summary["mlflow_run_id"])

    run.count("labeled_pairs", summary["labeled_pairs"])
    run.count("proposed_pairs", summary["proposed_pairs"])
    for key, value in summary["confusion"].items():
        run.count(key, value)
    run.check("f1", f"{summary['f1']:.3f}")
    run.check("precision", f"{summary['precision']:.3f}")
    run.check("recall", f"{summary['recall']:.3f}")
    run.check("threshold", f"{summary['threshold']:.3f}")
    if summary["blocking"]["any"] is not None:
        run.check("blocking_recall", f"{summary['blocking']['any']:.3f}")
    run.check("report", str(report))
    log.info(
        "evaluate %s: F1 %.3f P %.3f R %.3f on %d pairs; report %s",
        conf.split, summary["f1"], summary["precision"], summary["recall"], summary["pairs"], report,
    )
