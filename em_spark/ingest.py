"""Ingest: source tables -> ``records``; labeled pairs -> ``labels``.

Everything is validated before anything is written, so bad input leaves no new table
version: CSV files are valid UTF-8; the id column exists, is non-null and unique;
the table is not empty; labels are 0/1 and name known ids.
"""

from __future__ import annotations

import codecs
import gzip
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from em_spark.config import Config, LabelSourceConf, SourceConf
from em_spark.errors import ConfigError, EmError, InputError
from em_spark.runs import Run
from em_spark.tables import Lakehouse, pair_id_col

log = logging.getLogger(__name__)

LEFT, RIGHT = "left", "right"


def _col(name: str) -> Column:
    """A column by its exact name, even one with dots or backticks in it."""
    return F.col("`" + name.replace("`", "``") + "`")


def _data_files(path: Path) -> list[Path]:
    """The files Spark reads for ``path`` (a file, or a folder without _/. entries)."""
    if path.is_file():
        return [path]
    return sorted(
        f
        for f in path.rglob("*")
        if f.is_file() and not any(part.startswith(("_", ".")) for part in f.relative_to(path).parts)
    )


def check_utf8(path: Path, chunk_bytes: int = 1 << 20) -> None:
    """Raise :class:`InputError` naming the file and line of the first invalid UTF-8 byte.

    Spark's CSV reader silently turns invalid bytes into U+FFFD; a valid encoded U+FFFD
    (WDC data has some) is fine. One streaming pass, the error path re-reads to count lines.
    """
    for file in _data_files(path):
        opener = gzip.open if file.suffix == ".gz" else open
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        offset = 0  # bytes of the file handed to the decoder so far
        with opener(file, "rb") as fh:
            while True:
                chunk = fh.read(chunk_bytes)
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as exc:
                    _raise_utf8_error(file, opener, offset - pending + exc.start)
                if not chunk:
                    break
                offset += len(chunk)


def _raise_utf8_error(file: Path, opener, at: int) -> None:
    with opener(file, "rb") as fh:
        head = fh.read(at + 16)
    line_start = head.rfind(b"\n", 0, at) + 1
    line = head.count(b"\n", 0, at) + 1
    near = head[max(line_start, at - 24) : at + 8]
    raise InputError(f"{file}: invalid UTF-8 at line {line} (byte {at}) near {near!r}")


def check_utf8_spark(spark: SparkSession, path: str) -> None:
    """:func:`check_utf8` for paths only Spark can open (``s3://``, ``abfss://``, ``dbfs:/``):
    one distributed pass over the lines, naming the file and the first invalid line found."""
    bad = (
        spark.read.text(path)
        .where(~F.is_valid_utf8("value"))
        .select(F.input_file_name().alias("file"), F.col("value").cast("binary").alias("line"))
        .limit(1)
        .collect()
    )
    if bad:
        line = bytes(bad[0]["line"])
        raise InputError(f"{bad[0]['file']}: invalid UTF-8 in the line {line[:48]!r}")


_MALFORMED = re.compile(r"Malformed records are detected|Malformed CSV record")
_MALFORMED_RECORD = re.compile(r"Malformed CSV record: (.*?)(?: SQLSTATE|\n|$)")
_READ_FILE = re.compile(r"reading file (?:file:(?://)?)?(\S+?)\.?\s")


@contextmanager
def malformed_input_errors(where: str) -> Iterator[None]:
    """Turn Spark's FAILFAST parse errors (a row with the wrong number of fields, an
    unbalanced quote) into a one-line :class:`InputError` naming the file and record."""
    try:
        yield
    except EmError:
        raise
    except Exception as exc:
        text = str(exc)
        if _MALFORMED.search(text) is None:
            raise
        file = _READ_FILE.search(text)
        match = _MALFORMED_RECORD.search(text)
        record = f" {match.group(1).strip()!r}" if match else ""
        raise InputError(
            f"{file.group(1) if file else where}: malformed CSV record{record} "
            "(field count differs from the header, or an unbalanced quote)"
        ) from None


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
            if "://" in path:
                check_utf8_spark(spark, path)
            else:
                check_utf8(Path(path))
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
    return df.select(*[_col(c).cast("string").alias(c) for c in df.columns])


def load_records(spark: SparkSession, conf: SourceConf, source: str, run_id: str) -> DataFrame:
    """Validate one source table and shape it as ``records`` rows (not yet written)."""
    records, _ = shape_records(spark, conf, source, run_id)
    check_ids(records, {source: conf})
    return records


def shape_records(spark: SparkSession, conf: SourceConf, source: str, run_id: str) -> tuple[DataFrame, list[str]]:
    """One source table as ``records`` rows, its columns checked (its rows are checked by
    :func:`check_ids`), and the attribute names in the order of the records' maps."""
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
    # Serialized pairs are one line per pair: a line break in a name would split them.
    broken = [c for c in attrs if c.splitlines() != [c]]
    if broken:
        raise InputError(f"{where}: column name {broken[0]!r} contains a line break; rename it")

    # Ids are trimmed when stored, so uniqueness is checked on the trimmed value.
    attributes = F.create_map(*[x for c in attrs for x in (F.lit(c), _col(c))])
    records = raw.select(
        F.lit(source).alias("source"),
        F.trim(_col(conf.id_column)).alias("record_id"),
        attributes.alias("attributes"),
        F.sha2(F.to_json(attributes), 256).alias("record_hash"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("ingested_at"),
    )
    return records, attrs


def check_ids(records: DataFrame, confs: dict[str, SourceConf]) -> dict[str, int]:
    """Check every source's ids in one query (not empty, no null or empty id, no duplicate,
    sources in the order of ``confs``) and return the rows per source. On cached records
    the query also materializes the cache: every row is parsed before anything is written."""
    per_id = records.groupBy("source", "record_id").agg(F.count(F.lit(1)).alias("n"))
    missing = F.col("record_id").isNull() | (F.col("record_id") == "")
    stats = {
        row["source"]: row
        for row in per_id.groupBy("source")
        .agg(
            F.sum("n").alias("rows"),
            F.sum(F.when(missing, F.col("n")).otherwise(0)).alias("null_ids"),
            F.slice(F.array_sort(F.collect_list(F.when((F.col("n") > 1) & ~missing, F.col("record_id")))), 1, 3).alias("dups"),
        )
        .collect()
    }
    for source, conf in confs.items():
        where = conf.path
        found = stats.get(source)
        if found is None or not found["rows"]:
            raise InputError(f"{where}: the table is empty")
        if found["null_ids"]:
            raise InputError(f"{where}: column '{conf.id_column}' has {found['null_ids']} null or empty ids")
        dup_ids = list(found["dups"] or [])
        if dup_ids:
            raise InputError(
                f"{where}: column '{conf.id_column}' has duplicated id {dup_ids[0]!r}"
                + (f" (and others: {dup_ids[1:]})" if len(dup_ids) > 1 else "")
            )
    return {source: int(stats[source]["rows"]) for source in confs}


def attribute_names(records: DataFrame) -> list[str]:
    """Attribute names in ingest order (from the first record's map)."""
    row = records.select(F.map_keys("attributes").alias("k")).limit(1).collect()
    return list(row[0]["k"]) if row else []


def read_labels(spark: SparkSession, conf: LabelSourceConf) -> DataFrame:
    """One labeled-pairs file as left_id, right_id, label_raw, split (trimmed strings),
    its columns checked; the rows are checked against the records by :func:`check_labels`."""
    raw = read_source(spark, conf.path, conf.format)
    where = conf.path
    for col in (conf.left_id_column, conf.right_id_column, conf.label_column):
        if col not in raw.columns:
            raise InputError(f"{where}: column '{col}' not found (columns: {', '.join(raw.columns)})")
    if conf.split is None and "split" not in raw.columns:
        raise InputError(f"{where}: no 'split' column and no split set for this file")
    split = F.lit(conf.split) if conf.split is not None else F.col("split")
    return raw.select(
        F.trim(_col(conf.left_id_column)).alias("left_id"),
        F.trim(_col(conf.right_id_column)).alias("right_id"),
        F.trim(_col(conf.label_column)).alias("label_raw"),
        split.alias("split"),
    )


def labels_rows(df: DataFrame, mode: str, run_id: str) -> DataFrame:
    """Checked labeled pairs (:func:`read_labels`) shaped as ``labels`` rows."""
    if mode == "dedupe":
        # Unordered pairs: store each once, smaller id on the left, as blocking does.
        lo = F.least("left_id", "right_id")
        hi = F.greatest("left_id", "right_id")
        df = df.select(lo.alias("left_id"), hi.alias("right_id"), "label_raw", "split")
    return df.select(
        pair_id_col("left_id", "right_id").alias("pair_id"),
        "left_id",
        "right_id",
        F.col("label_raw").cast("int").alias("label"),
        "split",
        F.lit(run_id).alias("run_id"),
    )


def check_labels(files: list[DataFrame], confs: list[LabelSourceConf], records: DataFrame, mode: str) -> None:
    """Every check of every labeled-pairs file (:func:`read_labels`, one per conf) in one
    query; the error is the first failing row (files in order, then rows in file order) of
    the first failing check, naming its file."""
    right_source = LEFT if mode == "dedupe" else RIGHT
    rows = files[0].select("*", F.lit(0).alias("_file"), F.monotonically_increasing_id().alias("_row"))
    for i, df in enumerate(files[1:], start=1):
        rows = rows.unionByName(df.select("*", F.lit(i).alias("_file"), F.monotonically_increasing_id().alias("_row")))
    for side, source in (("left_id", LEFT), ("right_id", right_source)):
        known = records.where(F.col("source") == source).select(
            F.col("record_id").alias(side), F.lit(True).alias(f"_known_{side}")
        )
        rows = rows.join(known, side, "left")
    fields = ("_file", "left_id", "right_id", "label_raw", "split")

    def first(condition: Column) -> Column:
        return F.min_by(F.struct(*fields), F.when(condition, F.struct("_file", "_row")))

    checks = {
        "bad": ~F.col("label_raw").isin("0", "1") | F.col("label_raw").isNull(),
        "nulls": F.col("left_id").isNull() | F.col("right_id").isNull(),
        "unknown_left_id": F.col("_known_left_id").isNull(),
        "unknown_right_id": F.col("_known_right_id").isNull(),
    }
    if mode == "dedupe":
        checks["self_pair"] = F.col("left_id") == F.col("right_id")
    found = rows.agg(*[first(c).alias(name) for name, c in checks.items()]).collect()[0]
    if found["bad"] is not None:
        b = found["bad"]
        conf = confs[b["_file"]]
        raise InputError(
            f"{conf.path}: column '{conf.label_column}' must be 0 or 1, got {b['label_raw']!r} "
            f"for pair ({b['left_id']}, {b['right_id']})"
        )
    if found["nulls"] is not None:
        pair = {k: v for k, v in found["nulls"].asDict().items() if k != "_file"}
        raise InputError(f"{confs[found['nulls']['_file']].path}: a labeled pair has an empty id: {pair}")
    for side, source in (("left_id", LEFT), ("right_id", right_source)):
        unknown = found[f"unknown_{side}"]
        if unknown is not None:
            conf = confs[unknown["_file"]]
            col = conf.left_id_column if side == "left_id" else conf.right_id_column
            raise InputError(f"{conf.path}: column '{col}' names unknown {source} id {unknown[side]!r}")
    if mode == "dedupe" and found["self_pair"] is not None:
        conf = confs[found["self_pair"]["_file"]]
        raise InputError(f"{conf.path}: labeled pair pairs id {found['self_pair']['left_id']!r} with itself")


def unique_labels(labels: DataFrame) -> DataFrame:
    """One row per pair (a pair listed twice keeps one), with ``_labels``: how many
    distinct labels its rows gave (checked by :func:`check_consistent_and_count`)."""
    others = [c for c in labels.columns if c != "pair_id"]
    return labels.groupBy("pair_id").agg(
        F.first(F.struct(*others)).alias("_row"), F.count_distinct("label").alias("_labels")
    ).select("pair_id", *[F.col(f"_row.{c}").alias(c) for c in others], "_labels")


def check_consistent_and_count(labels: DataFrame) -> dict[str, int]:
    """:func:`unique_labels` rows checked (no pair labeled both 0 and 1) in one query that
    also counts the pairs per split."""
    conflict = F.when(F.col("_labels") > 1, F.struct("left_id", "right_id"))
    rows = labels.groupBy("split").agg(F.count(F.lit(1)).alias("n"), F.min(conflict).alias("conflict")).collect()
    conflicts = sorted(r["conflict"] for r in rows if r["conflict"] is not None)
    if conflicts:
        c = conflicts[0]
        raise InputError(f"labels: pair ({c['left_id']}, {c['right_id']}) is labeled both 0 and 1")
    return {r["split"]: int(r["n"]) for r in rows}


def run_ingest(lake: Lakehouse, config: Config, run: Run) -> None:
    spark = lake.spark
    conf = config.ingest
    if conf.left is None:
        raise ConfigError("ingest.left: no source table configured")
    if config.mode == "dedupe" and conf.right is not None:
        raise ConfigError("ingest.right: dedupe mode takes one table (ingest.left) only")
    if config.mode == "link" and conf.right is None:
        raise ConfigError("ingest.right: link mode needs a right table (or set mode: dedupe)")

    with malformed_input_errors(conf.left.path):
        records, record_counts, labels, label_counts = _validated(spark, config, run.run_id)

    # All checks passed: write (each table in one MERGE commit).
    lake.merge("records", records)
    for source, n in record_counts.items():
        run.count(f"records_{source}", n)
    if labels is not None:
        lake.merge("labels", labels.drop("_labels"))
        for split, n in label_counts.items():
            run.count(f"labels_{split}", n)
        labels.unpersist()
    records.unpersist()


def _validated(
    spark: SparkSession, config: Config, run_id: str
) -> tuple[DataFrame, dict[str, int], DataFrame | None, dict[str, int]]:
    """Records and labels, every check passed, cached (not yet written), and their counts
    (rows per source, pairs per split)."""
    conf = config.ingest
    records, left_attrs = shape_records(spark, conf.left, LEFT, run_id)
    confs = {LEFT: conf.left}
    if conf.right is not None:
        right, right_attrs = shape_records(spark, conf.right, RIGHT, run_id)
        _check_aligned(left_attrs, right_attrs, config, conf.left.path, conf.right.path)
        records = records.unionByName(right)
        confs[RIGHT] = conf.right
    records = records.cache()
    record_counts = check_ids(records, confs)

    labels, label_counts = None, {}
    if conf.labels:
        files = [read_labels(spark, label_conf) for label_conf in conf.labels]
        check_labels(files, conf.labels, records, config.mode)
        rows = reduce(DataFrame.unionByName, [labels_rows(df, config.mode, run_id) for df in files])
        labels = unique_labels(rows).cache()
        label_counts = check_consistent_and_count(labels)
    return records, record_counts, labels, label_counts


def _check_aligned(left: list[str], right: list[str], config: Config, lpath: str, rpath: str) -> None:
    lcols = set(left)
    rcols = set(right)
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
