"""Table contracts (explicit schemas) and Delta I/O shared by every job.

A table is addressed either by a path under the lakehouse root or by a catalog name
(``catalog.schema.table``); both are turned into one SQL identifier so the same code
(plain Spark SQL: CREATE TABLE, MERGE INTO) serves both, also over Spark Connect.
Every write is a single Delta MERGE on the table's key: one atomic commit, idempotent.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from em_spark.config import Config, LakehouseConf
from em_spark.errors import InputError, WriteConflictError

log = logging.getLogger(__name__)

# --- contracts -------------------------------------------------------------------------

RECORDS = T.StructType(
    [
        T.StructField("source", T.StringType(), False),  # "left" | "right" (dedupe: "left")
        T.StructField("record_id", T.StringType(), False),
        T.StructField("attributes", T.MapType(T.StringType(), T.StringType(), True), False),
        T.StructField("record_hash", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("ingested_at", T.TimestampType(), False),
    ]
)

LABELS = T.StructType(
    [
        T.StructField("pair_id", T.StringType(), False),
        T.StructField("left_id", T.StringType(), False),
        T.StructField("right_id", T.StringType(), False),
        T.StructField("label", T.IntegerType(), False),
        T.StructField("split", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
    ]
)

CANDIDATES = T.StructType(
    [
        T.StructField("pair_id", T.StringType(), False),
        T.StructField("left_id", T.StringType(), False),
        T.StructField("right_id", T.StringType(), False),
        T.StructField("blockers", T.ArrayType(T.StringType(), False), False),
        T.StructField("score", T.DoubleType(), True),
        T.StructField("run_id", T.StringType(), False),
    ]
)

EXPLANATIONS = T.StructType(
    [
        T.StructField("pair_id", T.StringType(), False),
        T.StructField("teacher", T.StringType(), False),
        T.StructField("prompt_version", T.StringType(), False),
        T.StructField("left_id", T.StringType(), False),
        T.StructField("right_id", T.StringType(), False),
        T.StructField("label", T.IntegerType(), True),
        T.StructField("pseudo_label", T.BooleanType(), False),
        T.StructField("explanation", T.StringType(), True),
        T.StructField("status", T.StringType(), False),  # ok | invalid | failed
        T.StructField("error", T.StringType(), True),
        T.StructField("raw_output", T.StringType(), True),
        T.StructField("grounding", T.DoubleType(), True),
        T.StructField("latency_ms", T.DoubleType(), True),
        T.StructField("input_tokens", T.IntegerType(), True),
        T.StructField("output_tokens", T.IntegerType(), True),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("created_at", T.TimestampType(), False),
    ]
)

PREDICTIONS = T.StructType(
    [
        T.StructField("pair_id", T.StringType(), False),
        T.StructField("left_id", T.StringType(), False),
        T.StructField("right_id", T.StringType(), False),
        T.StructField("p_match", T.DoubleType(), True),
        T.StructField("verdict", T.StringType(), False),  # match | no_match | error
        T.StructField("rationale", T.StringType(), True),
        # who wrote the rationale: student | rules (the student's failed the checker); null: none
        T.StructField("rationale_by", T.StringType(), True),
        T.StructField("decided_by", T.StringType(), False),  # prefilter | student | features (failed: the stage)
        T.StructField("status", T.StringType(), False),  # ok | failed
        T.StructField("error", T.StringType(), True),
        T.StructField("model_uri", T.StringType(), True),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("scored_at", T.TimestampType(), False),
    ]
)

ENTITIES = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("record_id", T.StringType(), False),
        T.StructField("entity_id", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
    ]
)

RUNS = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("job", T.StringType(), False),
        T.StructField("config", T.StringType(), True),
        T.StructField("counts", T.MapType(T.StringType(), T.LongType(), True), True),
        T.StructField("checks", T.MapType(T.StringType(), T.StringType(), True), True),
        T.StructField("status", T.StringType(), False),  # running | succeeded | failed
        T.StructField("error", T.StringType(), True),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("ended_at", T.TimestampType(), True),
    ]
)


@dataclass(frozen=True)
class Contract:
    name: str
    schema: T.StructType
    key: tuple[str, ...]


CONTRACTS: dict[str, Contract] = {
    c.name: c
    for c in [
        Contract("records", RECORDS, ("source", "record_id")),
        Contract("labels", LABELS, ("pair_id",)),
        Contract("candidates", CANDIDATES, ("pair_id",)),
        Contract("explanations", EXPLANATIONS, ("pair_id", "teacher", "prompt_version")),
        Contract("predictions", PREDICTIONS, ("pair_id",)),
        Contract("entities", ENTITIES, ("source", "record_id")),
        Contract("runs", RUNS, ("run_id",)),
    ]
}

# --- ids -------------------------------------------------------------------------------

_SEP = "\x1f"


def pair_id(left_id: str, right_id: str) -> str:
    """Stable id of an ordered pair (the same in Python and in :func:`pair_id_col`)."""
    return hashlib.sha256(f"{left_id}{_SEP}{right_id}".encode()).hexdigest()[:32]


def pair_id_col(left: Column | str, right: Column | str) -> Column:
    left_c = F.col(left) if isinstance(left, str) else left
    right_c = F.col(right) if isinstance(right, str) else right
    return F.substring(F.sha2(F.concat(left_c, F.lit(_SEP), right_c), 256), 1, 32)


def new_run_id() -> str:
    return uuid.uuid4().hex


# --- concurrent writers -----------------------------------------------------------------

# Delta's optimistic-concurrency conflicts (io.delta.exceptions.* on the JVM, the same
# names in delta.exceptions in Python): the commit lost a race to another writer and is
# safe to retry from scratch, since a MERGE on the key is idempotent.
_DELTA_CONFLICTS = (
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "ConcurrentWriteException",
    "MetadataChangedException",
    "ProtocolChangedException",
    "DeltaConcurrentModificationException",
    "DELTA_CONCURRENT_",
)
MERGE_ATTEMPTS = 6
MERGE_BACKOFF_S = 0.2


def write_conflict(exc: BaseException) -> str | None:
    """The Delta conflict ``exc`` is (by class name, or named in its text), else None."""
    names = {t.__name__ for t in type(exc).__mro__}
    text = str(exc)[:4000]
    return next((c for c in _DELTA_CONFLICTS if c in names or c in text), None)


# --- addressing ------------------------------------------------------------------------


def _quote_ident(part: str) -> str:
    return "`" + part.replace("`", "``") + "`"


@dataclass(frozen=True)
class TableRef:
    """A table as a path (``delta.`/abs/path```) or a catalog name (``a.b.c``)."""

    name: str
    path: str | None = None
    catalog_name: str | None = None

    @property
    def sql(self) -> str:
        if self.catalog_name is not None:
            return ".".join(_quote_ident(p) for p in self.catalog_name.split("."))
        return f"delta.{_quote_ident(str(self.path))}"

    def __str__(self) -> str:
        return self.catalog_name or str(self.path)


class Lakehouse:
    """Resolves table names to :class:`TableRef` and reads / merges Delta tables."""

    def __init__(self, spark: SparkSession, conf: LakehouseConf):
        self.spark = spark
        self.conf = conf
        # Tables whose columns were brought up to the contract by this Lakehouse: a job
        # writes a table several times, the schema check (a Delta log read) runs once.
        self._columns_checked: set[str] = set()

    @classmethod
    def from_config(cls, spark: SparkSession, config: Config) -> "Lakehouse":
        return cls(spark, config.lakehouse)

    def ref(self, name: str) -> TableRef:
        override = self.conf.tables.get(name)
        if override is not None:
            if "/" in override or override.startswith("."):
                return TableRef(name, path=str(Path(override).resolve()))
            return TableRef(name, catalog_name=override)
        if self.conf.catalog and self.conf.schema_:
            return TableRef(name, catalog_name=f"{self.conf.catalog}.{self.conf.schema_}.{name}")
        return TableRef(name, path=str((Path(self.conf.root) / name).resolve()))

    def exists(self, name: str) -> bool:
        ref = self.ref(name)
        if ref.path is not None:
            return (Path(ref.path) / "_delta_log").is_dir()
        return bool(self.spark.catalog.tableExists(ref.catalog_name))

    def require(self, *names: str) -> None:
        """Raise a one-line InputError naming the input tables that do not exist yet.

        Call it before :meth:`read`, which creates a missing contract table empty.
        """
        missing = [name for name in names if not self.exists(name)]
        if missing:
            where = ", ".join(str(self.ref(name)) for name in missing)
            raise InputError(
                f"input table {' and '.join(missing)} not found ({where}): "
                "run the jobs that write it first"
            )

    def ensure(self, name: str) -> TableRef:
        """Create the table with its contract schema if it does not exist yet."""
        contract = CONTRACTS[name]
        ref = self.ref(name)
        if not self.exists(name):
            ddl = ", ".join(
                f"{_quote_ident(f.name)} {f.dataType.simpleString()}"
                + ("" if f.nullable else " NOT NULL")
                for f in contract.schema.fields
            )
            self.spark.sql(f"CREATE TABLE IF NOT EXISTS {ref.sql} ({ddl}) USING DELTA")
        return ref

    def read(self, name: str) -> DataFrame:
        ref = self.ensure(name) if name in CONTRACTS else self.ref(name)
        return self.spark.read.table(ref.sql) if ref.catalog_name else self.spark.sql(
            f"SELECT * FROM {ref.sql}"
        )

    def version(self, name: str) -> int | None:
        """The latest Delta version of a table, or None if it does not exist."""
        if not self.exists(name):
            return None
        row = self.spark.sql(f"DESCRIBE HISTORY {self.ref(name).sql} LIMIT 1").collect()
        return int(row[0]["version"])

    def merge(
        self,
        name: str,
        df: DataFrame,
        *,
        update: bool = True,
        delete_condition: str | None = None,
    ) -> None:
        """MERGE ``df`` into table ``name`` on its contract key, in one commit.

        ``update=False`` keeps existing rows (insert-only). ``delete_condition`` (SQL over
        the target alias ``t``) deletes target rows with no source row, e.g. to replace
        one run's slice.
        """
        contract = CONTRACTS[name]
        cols = [f.name for f in contract.schema.fields]
        view = self._contract_view(name, df)
        try:
            self._sql_with_retries(name, _merge_sql(self.ref(name), view, cols, contract.key, update, delete_condition))
        finally:
            self.spark.catalog.dropTempView(view)

    def insert(self, name: str, df: DataFrame) -> None:
        """Append rows whose keys are new to table ``name`` (e.g. a run's first row), in one
        commit: cheaper than :meth:`merge`, which must scan the table for existing keys."""
        view = self._contract_view(name, df)
        cols = ", ".join(_quote_ident(f.name) for f in CONTRACTS[name].schema.fields)
        try:
            self._sql_with_retries(name, f"INSERT INTO {self.ref(name).sql} ({cols}) SELECT {cols} FROM {view}")
        finally:
            self.spark.catalog.dropTempView(view)

    def _add_new_columns(self, name: str) -> None:
        """A table written by an earlier release gains the contract's newer (nullable) columns
        (checked once per table and Lakehouse: columns are only ever added)."""
        if name in self._columns_checked or not self.exists(name):
            return
        have = set(self.spark.sql(f"SELECT * FROM {self.ref(name).sql} LIMIT 0").columns)
        new = [f for f in CONTRACTS[name].schema.fields if f.name not in have and f.nullable]
        if new:
            ddl = ", ".join(f"{_quote_ident(f.name)} {f.dataType.simpleString()}" for f in new)
            self.spark.sql(f"ALTER TABLE {self.ref(name).sql} ADD COLUMNS ({ddl})")
        self._columns_checked.add(name)

    def _contract_view(self, name: str, df: DataFrame) -> str:
        """A temp view of ``df`` cast to the contract schema of ``name``; returns its name."""
        self._add_new_columns(name)
        contract = CONTRACTS[name]
        missing = [f.name for f in contract.schema.fields if f.name not in df.columns]
        if missing:
            raise ValueError(f"{name}: rows lack columns {missing}")
        source = df.select(
            *[F.col(f.name).cast(f.dataType).alias(f.name) for f in contract.schema.fields]
        )
        view = f"em_src_{name}_{uuid.uuid4().hex[:8]}"
        source.createOrReplaceTempView(view)
        return view

    def delete_missing(self, name: str, keys: DataFrame) -> None:
        """Delete the rows of ``name`` whose key is not in ``keys``, in one commit."""
        key = CONTRACTS[name].key
        view = f"em_keep_{name}_{uuid.uuid4().hex[:8]}"
        keys.select(*key).createOrReplaceTempView(view)
        on = " AND ".join(f"t.{_quote_ident(k)} = s.{_quote_ident(k)}" for k in key)
        try:
            self._sql_with_retries(
                name,
                f"MERGE INTO {self.ref(name).sql} t USING {view} s ON {on} "
                "WHEN NOT MATCHED BY SOURCE THEN DELETE",
            )
        finally:
            self.spark.catalog.dropTempView(view)

    def _sql_with_retries(self, name: str, statement: str) -> None:
        """Run one write statement on table ``name``; on a Delta conflict with a concurrent
        writer, back off and retry (each attempt re-reads the latest snapshot)."""
        for attempt in range(1, MERGE_ATTEMPTS + 1):
            try:
                self.ensure(name)  # in the loop: two writers may race to create it
                self.spark.sql(statement)
                return
            except Exception as exc:
                conflict = write_conflict(exc)
                if conflict is None:
                    raise
                if attempt == MERGE_ATTEMPTS:
                    raise WriteConflictError(
                        f"{name}: concurrent writers conflicted {attempt} times in a row "
                        f"(last: {conflict}); this write committed nothing, re-run the job"
                    ) from None
                delay = MERGE_BACKOFF_S * 2 ** (attempt - 1) * (1 + random.random())
                log.warning(
                    "%s: Delta write conflict (%s), retry %d of %d in %.1fs",
                    name, conflict, attempt, MERGE_ATTEMPTS - 1, delay,
                )
                time.sleep(delay)


def _merge_sql(
    ref: TableRef,
    view: str,
    cols: list[str],
    key: tuple[str, ...],
    update: bool,
    delete_condition: str | None,
) -> str:
    """One MERGE on the key; values come only from the source view, never pasted in."""
    on = " AND ".join(f"t.{_quote_ident(k)} = s.{_quote_ident(k)}" for k in key)
    sets = ", ".join(f"t.{_quote_ident(c)} = s.{_quote_ident(c)}" for c in cols)
    values = ", ".join(f"s.{_quote_ident(c)}" for c in cols)
    col_list = ", ".join(_quote_ident(c) for c in cols)
    sql = f"MERGE INTO {ref.sql} t USING {view} s ON {on} "
    if update:
        sql += f"WHEN MATCHED THEN UPDATE SET {sets} "
    sql += f"WHEN NOT MATCHED THEN INSERT ({col_list}) VALUES ({values})"
    if delete_condition:
        sql += f" WHEN NOT MATCHED BY SOURCE AND ({delete_condition}) THEN DELETE"
    return sql
