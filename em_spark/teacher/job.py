"""The teach job on Spark: labeled pairs -> explanations (Delta), in committed chunks.

Work = the labeled pairs of the configured splits (or, with ``--predict``, candidates
that have no label), minus pairs that already have an ok or invalid row for this
teacher and prompt version — so a re-run does only what is missing or failed. The work
is cut into chunks by a hash of pair_id; each chunk runs over partitions in mapInPandas
(the model work happens on executors) and is committed with one MERGE, then
``faults.checkpoint`` is called, so a crash loses at most the chunk in flight.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import Window
from pyspark.sql import functions as F

from em_spark import faults
from em_spark.config import Config, TeachConf
from em_spark.errors import ConfigError, EmError
from em_spark.ingest import attribute_names
from em_spark.runs import Run
from em_spark.tables import EXPLANATIONS, Lakehouse
from em_spark.teacher.backends import teacher_name
from em_spark.teacher.core import EXPLANATION_COLUMNS, Pair, TeachSettings, teach_pairs
from em_spark.teacher.prompts import Demonstration, load_prompt
from em_spark.teacher.rules import explain_pair

log = logging.getLogger(__name__)


class TeacherUnavailable(EmError):
    """Most requests of a chunk got no answer: the endpoint is down, overloaded or broken."""


def _work(lake: Lakehouse, config: Config) -> DataFrame:
    """pair_id, left_id, right_id, label of the pairs this run should explain."""
    conf = config.teach
    labels = lake.read("labels")
    if conf.predict:
        if not lake.exists("candidates"):
            raise ConfigError("teach --predict needs the candidates table: run `em-spark block` first")
        return (
            lake.read("candidates")
            .join(labels.select("pair_id"), "pair_id", "left_anti")
            .select("pair_id", "left_id", "right_id", F.lit(None).cast("int").alias("label"))
        )
    return labels.where(F.col("split").isin(conf.splits)).select("pair_id", "left_id", "right_id", "label")


def _with_attributes(pairs: DataFrame, lake: Lakehouse, config: Config) -> DataFrame:
    records = lake.read("records").select("source", "record_id", F.to_json("attributes").alias("attrs"))
    right_source = "left" if config.mode == "dedupe" else "right"
    left = records.where(F.col("source") == "left").select(
        F.col("record_id").alias("left_id"), F.col("attrs").alias("left_attrs")
    )
    right = records.where(F.col("source") == right_source).select(
        F.col("record_id").alias("right_id"), F.col("attrs").alias("right_attrs")
    )
    return pairs.join(left, "left_id").join(right, "right_id")


def _demonstrations(lake: Lakehouse, config: Config, order: list[str]) -> list[Demonstration]:
    """Labeled train pairs to show the teacher (a small, deterministic sample), rules-explained."""
    conf = config.teach
    if conf.demonstrations == "none":
        return []
    per_label = 1 if conf.demonstrations == "fixed" else conf.demonstration_pool
    first_by_label = Window.partitionBy("label").orderBy("pair_id")
    sample = (
        lake.read("labels")
        .where(F.col("split") == "train")
        .withColumn("rank", F.row_number().over(first_by_label))
        .where(F.col("rank") <= per_label)
        .select("pair_id", "left_id", "right_id", "label")
    )
    rows = _with_attributes(sample, lake, config).orderBy(F.desc("label"), "pair_id").collect()
    demos = []
    for r in rows:
        left, right = json.loads(r["left_attrs"]), json.loads(r["right_attrs"])
        demos.append(Demonstration(left, right, int(r["label"]), explain_pair(left, right, int(r["label"]), order)))
    return demos


def _partition_fn(settings: TeachSettings):
    def teach_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            pairs = [
                Pair(
                    r.pair_id, r.left_id, r.right_id, json.loads(r.left_attrs), json.loads(r.right_attrs),
                    None if pd.isna(r.label) else int(r.label),
                )  # fmt: skip
                for r in pdf.itertuples(index=False)
            ]
            rows = teach_pairs(pairs, settings)
            out = pd.DataFrame(rows, columns=EXPLANATION_COLUMNS)
            for col in ("label", "input_tokens", "output_tokens"):
                out[col] = out[col].astype("Int32")
            for col in ("grounding", "latency_ms"):
                out[col] = out[col].astype("float64")
            out["pseudo_label"] = out["pseudo_label"].astype(bool)
            out["created_at"] = pd.to_datetime(out["created_at"], utc=True)
            yield out

    return teach_partition


def _run_stats(lake: Lakehouse, run_id: str, teacher: str, version: str) -> dict[str, object]:
    """Counts by status and failure kind, and token sums, of the rows this run wrote."""
    rows = (
        lake.read("explanations")
        .where((F.col("run_id") == run_id) & (F.col("teacher") == teacher) & (F.col("prompt_version") == version))
        .groupBy("status", F.split(F.col("error"), ":").getItem(0).alias("kind"))
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum("input_tokens").alias("tin"),
            F.sum("output_tokens").alias("tout"),
        )
        .collect()
    )
    by_status: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    tokens_in: int | None = None
    tokens_out: int | None = None
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + int(r["n"])
        if r["status"] != "ok" and r["kind"]:
            key = f"{r['status']}:{r['kind']}"
            by_kind[key] = by_kind.get(key, 0) + int(r["n"])
        if r["tin"] is not None or r["tout"] is not None:  # rules rows have no tokens
            tokens_in = (tokens_in or 0) + int(r["tin"] or 0)
            tokens_out = (tokens_out or 0) + int(r["tout"] or 0)
    return {"status": by_status, "failures": by_kind, "input_tokens": tokens_in, "output_tokens": tokens_out}


def _write_report(config: Config, run: Run, report: dict[str, object]) -> str:
    folder = Path(config.reports_dir) / "teach"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run.run_id}.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")
    return str(path)


def _check_template(conf: TeachConf) -> str:
    name = conf.predict_prompt if conf.predict else conf.prompt
    expected = "predict" if conf.predict else "rationalize"
    template = load_prompt(name)
    if template.task != expected:
        raise ConfigError(f"teach prompt {name!r} is a {template.task} template; this run needs {expected}")
    return name


def run_teach(lake: Lakehouse, config: Config, run: Run) -> None:
    conf = config.teach
    # --predict explains unlabeled candidates, so only it may run without labels.
    lake.require(*(("records",) if conf.predict else ("records", "labels")))
    template = load_prompt(_check_template(conf))
    teacher = teacher_name(conf)
    spark = lake.spark
    t0 = time.monotonic()
    order = config.attributes or attribute_names(lake.read("records"))
    done = (
        lake.read("explanations")
        .where((F.col("teacher") == teacher) & (F.col("prompt_version") == template.version))
        .where(F.col("status").isin("ok", "invalid"))
        .select("pair_id")
    )
    todo = _work(lake, config).join(done, "pair_id", "left_anti")
    n_todo = todo.count()
    run.count("pairs_todo", n_todo)
    run.check("teacher", teacher)
    run.check("prompt_version", template.version)
    n_chunks = max(1, math.ceil(n_todo / conf.chunk_rows))
    report: dict[str, object] = {
        "run_id": run.run_id, "teacher": teacher, "prompt_version": template.version,
        "backend": conf.backend, "predict": conf.predict, "pairs_todo": n_todo, "chunks": n_chunks,
        "chunks_committed": 0,
    }  # fmt: skip
    api_key = None
    if conf.backend == "openai":
        from em_spark.teacher.openai_backend import resolve_api_key

        api_key = resolve_api_key(conf.openai)
        log.info("teach: openai endpoint %s, model %s, API key %s", conf.openai.base_url, conf.openai.model, "set" if api_key else "not set")
    settings = TeachSettings(
        conf=conf, template=template, teacher=teacher, run_id=run.run_id, order=order,
        demonstrations=_demonstrations(lake, config, order) if n_todo else [], api_key=api_key,
    )  # fmt: skip
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions") or "8")
    chunked = _with_attributes(
        todo.withColumn("chunk", F.pmod(F.xxhash64("pair_id"), F.lit(n_chunks))), lake, config
    )
    fn = _partition_fn(settings)
    previous: dict[str, int] = {}
    stats: dict | None = None  # this run's rows, as of the last chunk (None: not yet counted)
    try:
        for i in range(n_chunks if n_todo else 0):
            part = chunked.where(F.col("chunk") == i).drop("chunk").repartition(partitions, "pair_id")
            stats = None
            lake.merge("explanations", part.mapInPandas(fn, EXPLANATIONS))
            report["chunks_committed"] = i + 1
            faults.checkpoint("teach", i + 1)
            stats = _run_stats(lake, run.run_id, teacher, template.version)
            _abort_if_unavailable(conf, stats, previous, i, n_chunks)
            previous = {**stats["failures"], "_rows": sum(stats["status"].values())}
            log.info("teach: chunk %d/%d committed %s", i + 1, n_chunks, stats["status"])
    finally:
        seconds = time.monotonic() - t0
        if stats is None:
            stats = _run_stats(lake, run.run_id, teacher, template.version)
        rows = sum(stats["status"].values())  # type: ignore[union-attr]
        report.update(stats)
        report.update(
            seconds=round(seconds, 2),
            pairs_written=rows,
            pairs_per_s=round(rows / seconds, 2) if seconds > 0 else None,
            tokens_per_s=(
                round((stats["input_tokens"] + stats["output_tokens"]) / seconds, 2)  # type: ignore[operator]
                if seconds > 0 and stats["input_tokens"] is not None
                else None
            ),
        )
        for status, n in stats["status"].items():  # type: ignore[union-attr]
            run.count(status, n)
        run.count("chunks_committed", int(report["chunks_committed"]))  # type: ignore[arg-type]
        run.check("report", _write_report(config, run, report))


def _abort_if_unavailable(conf: TeachConf, stats: dict, previous: dict[str, int], i: int, n_chunks: int) -> None:
    """Stop when most of the chunk just committed got no answer at all (status failed)."""
    rows = sum(stats["status"].values()) - previous.get("_rows", 0)
    kinds = {
        k.split(":", 1)[1]: n - previous.get(k, 0)
        for k, n in stats["failures"].items()
        if k.startswith("failed:") and n > previous.get(k, 0)
    }
    failed = sum(kinds.values())
    if rows and failed / rows > conf.max_failed_share:
        where = conf.openai.base_url if conf.backend == "openai" else conf.backend
        detail = ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items()))
        raise TeacherUnavailable(
            f"teacher {where} unavailable or failing: {failed} of {rows} requests in chunk {i + 1}/{n_chunks} "
            f"got no answer after retries ({detail}); they are recorded as failed and the next run retries them"
        )
