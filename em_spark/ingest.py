"""Ingest: source tables -> ``records``; labeled pairs -> ``labels``.

Everything is validated before anything is written, so bad input leaves no new table
version: the id column exists, is non-null and unique; the table is not empty; labels
are 0/1 and name known ids.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from em_spark.config import Config, LabelSourceConf, SourceConf
from em_spark.errors import ConfigError, InputError
from em_spark.runs import Run
from em_spark.tables import Lakehouse, pair_id_col

log = logging.getLogger(__name__)

LEFT, RIGHT = "left", "right"


def read_source(spark: SparkSession, path: str, fmt: str) -> DataFrame:
    """Read a CSV / Parquet / Delta path or a catalog table, every column as a string."""
    if fmt == "table":
        if not spark.catalog.tableExists(path):
            raise InputError(f"table not found: {path}")
        df = spark.read.table(path)
    else:
        if "://" not in path and not Path(path).exists():
            raise InputError(f"input not found: {path}")
        if fmt == "csv":
            df = (
                spark.read.option("header", True)
                .option("multiLine", True)
                .option("quote", '"')
                .option("escape", '"')
                .option("mode", "FAILFAST")
                .option("encoding", "UTF-8")
                .csv(path)
            )
        else:
            df = spark.read.format(fmt).load(path)
    return df.select(*[F.col(f"`{c}`").cast("string").alias(c) for c in df.columns])


def _first_values(df: DataFrame, column: str, n: int = 3) -> list[str]:
    return [str(r[0]) for r in df.select(column).limit(n).collect()]


def load_records(spark: SparkSession, conf: SourceConf, source: str, run_id: str) -> DataFrame:
    """Validate one source table and shape it as ``records`` rows (not yet written)."""
    raw = read_source(spark, conf.path, conf.format)
    where = f"{conf.path}"
    for old, new in conf.rename.items():
        if old not in raw.columns:
            raise InputError(f"{where}: rename names missing column '{old}' (has {raw.columns})")
        raw = raw.withColumnRenamed(old, new)
    if conf.id_column not in raw.columns:
        raise InputError(
            f"{where}: id column '{conf.id_column}' not found (columns: {', '.join(raw.columns)})"
        )
    if conf.columns is not None:
        absent = [c for c in conf.columns if c not in raw.columns]
        if absent:
            raise InputError(f"{where}: column '{absent[0]}' not found (columns: {raw.columns})")
        attrs = [c for c in conf.columns if c != conf.id_column]
    else:
        attrs = [c for c in raw.columns if c != conf.id_column and c not in conf.exclude]
    if not attrs:
        raise InputError(f"{where}: no attribute columns besides the id '{conf.id_column}'")

    idc = F.col(f"`{conf.id_column}`")
    stats = raw.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(idc.isNull() | (F.trim(idc) == ""), 1).otherwise(0)).alias("null_ids"),
    ).collect()[0]
    if stats["rows"] == 0:
        raise InputError(f"{where}: the table is empty")
    if stats["null_ids"]:
        raise InputError(
            f"{where}: column '{conf.id_column}' has {stats['null_ids']} null or empty ids"
        )
    dups = raw.groupBy(idc.alias("id")).count().where("count > 1")
    dup_ids = _first_values(dups.orderBy("id"), "id")
    if dup_ids:
        raise InputError(
            f"{where}: column '{conf.id_column}' has duplicated id {dup_ids[0]!r}"
            + (f" (and others: {dup_ids[1:]})" if len(dup_ids) > 1 else "")
        )

    attributes = F.create_map(*[x for c in attrs for x in (F.lit(c), F.col(f"`{c}`"))])
    return raw.select(
        F.lit(source).alias("source"),
        F.trim(idc).alias("record_id"),
        attributes.alias("attributes"),
        F.sha2(F.to_json(attributes), 256).alias("record_hash"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("ingested_at"),
    )


def attribute_names(records: DataFrame) -> list[str]:
    """Attribute names in ingest order (from the first record's map)."""
    row = records.select(F.map_keys("attributes").alias("k")).limit(1).collect()
    return list(row[0]["k"]) if row else []


def load_labels(
    spark: SparkSession,
    conf: LabelSourceConf,
    records: DataFrame,
    mode: str,
    run_id: str,
) -> DataFrame:
    """Validate one labeled-pairs file against ``records`` and shape it as ``labels`` rows."""
    raw = read_source(spark, conf.path, conf.format)
    where = conf.path
    for col in (conf.left_id_column, conf.right_id_column, conf.label_column):
        if col not in raw.columns:
            raise InputError(f"{where}: column '{col}' not found (columns: {', '.join(raw.columns)})")
    if conf.split is None and "split" not in raw.columns:
        raise InputError(f"{where}: no 'split' column and no split set for this file")
    split = F.lit(conf.split) if conf.split is not None else F.col("split")
    df = raw.select(
        F.trim(F.col(f"`{conf.left_id_column}`")).alias("left_id"),
        F.trim(F.col(f"`{conf.right_id_column}`")).alias("right_id"),
        F.trim(F.col(f"`{conf.label_column}`")).alias("label_raw"),
        split.alias("split"),
    )
    bad = df.where(~F.col("label_raw").isin("0", "1") | F.col("label_raw").isNull()).limit(1).collect()
    if bad:
        b = bad[0]
        raise InputError(
            f"{where}: column '{conf.label_column}' must be 0 or 1, got {b['label_raw']!r} "
            f"for pair ({b['left_id']}, {b['right_id']})"
        )
    nulls = df.where(F.col("left_id").isNull() | F.col("right_id").isNull()).limit(1).collect()
    if nulls:
        raise InputError(f"{where}: a labeled pair has an empty id: {nulls[0].asDict()}")

    right_source = LEFT if mode == "dedupe" else RIGHT
    for side, source in (("left_id", LEFT), ("right_id", right_source)):
        known = records.where(F.col("source") == source).select(F.col("record_id").alias(side))
        unknown = df.join(known, side, "left_anti").select(side).limit(1).collect()
        if unknown:
            col = conf.left_id_column if side == "left_id" else conf.right_id_column
            raise InputError(
                f"{where}: column '{col}' names unknown {source} id {unknown[0][0]!r}"
            )
    if mode == "dedupe":
        self_pairs = df.where(F.col("left_id") == F.col("right_id")).limit(1).collect()
        if self_pairs:
            raise InputError(f"{where}: labeled pair pairs id {self_pairs[0]['left_id']!r} with itself")
        # Unordered pairs: store each once, smaller id on the left, as blocking does.
        lo = F.least("left_id", "right_id")
        hi = F.greatest("left_id", "right_id")
        df = df.select(lo.alias("left_id"), hi.alias("right_id"), "label_raw", "split")
    labeled = df.select(
        pair_id_col("left_id", "right_id").alias("pair_id"),
        "left_id",
        "right_id",
        F.col("label_raw").cast("int").alias("label"),
        "split",
        F.lit(run_id).alias("run_id"),
    )
    return labeled


def _check_consistent(labels: DataFrame) -> None:
    conflict = (
        labels.groupBy("pair_id", "left_id", "right_id")
        .agg(F.countDistinct("label").alias("n"))
        .where("n > 1")
        .limit(1)
        .collect()
    )
    if conflict:
        c = conflict[0]
        raise InputError(f"labels: pair ({c['left_id']}, {c['right_id']}) is labeled both 0 and 1")


def run_ingest(lake: Lakehouse, config: Config, run: Run) -> None:
    spark = lake.spark
    conf = config.ingest
    if conf.left is None:
        raise ConfigError("ingest.left: no source table configured")
    if config.mode == "dedupe" and conf.right is not None:
        raise ConfigError("ingest.right: dedupe mode takes one table (ingest.left) only")
    if config.mode == "link" and conf.right is None:
        raise ConfigError("ingest.right: link mode needs a right table (or set mode: dedupe)")

    left = load_records(spark, conf.left, LEFT, run.run_id)
    records = left
    if conf.right is not None:
        right = load_records(spark, conf.right, RIGHT, run.run_id)
        _check_aligned(left, right, config, conf.left.path, conf.right.path)
        records = left.unionByName(right)
    records = records.cache()

    labels = None
    for label_conf in conf.labels:
        part = load_labels(spark, label_conf, records, config.mode, run.run_id)
        labels = part if labels is None else labels.unionByName(part)
    if labels is not None:
        _check_consistent(labels)
        # A pair listed twice (same label, checked above) keeps one row.
        labels = labels.dropDuplicates(["pair_id"]).cache()

    # All checks passed: write (each table in one MERGE commit).
    lake.merge("records", records)
    counts = records.groupBy("source").count().collect()
    for row in counts:
        run.count(f"records_{row['source']}", row["count"])
    if labels is not None:
        lake.merge("labels", labels)
        for row in labels.groupBy("split").count().collect():
            run.count(f"labels_{row['split']}", row["count"])
    records.unpersist()


def _check_aligned(left: DataFrame, right: DataFrame, config: Config, lpath: str, rpath: str) -> None:
    lcols = set(attribute_names(left))
    rcols = set(attribute_names(right))
    if config.attributes is not None:
        for name in config.attributes:
            for cols, path in ((lcols, lpath), (rcols, rpath)):
                if name not in cols:
                    raise InputError(f"{path}: attribute '{name}' (from config attributes) not found")
        return
    if lcols != rcols:
        only_left = sorted(lcols - rcols)
        only_right = sorted(rcols - lcols)
        raise InputError(
            f"{rpath}: columns differ from {lpath} (only left: {only_left}, only right: "
            f"{only_right}); align them with ingest.right.rename or set `attributes`"
        )
