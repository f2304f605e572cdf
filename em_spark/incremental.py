"""``em-spark match-new``: match new records into an existing lakehouse without a full run.

1. The incoming records are validated like ingest's (``load_records``). Those that are
   new or changed (by record hash), plus those stored earlier whose match-new did not
   finish (no ``entities`` row yet), are the records *involved*.
2. Blocking runs only for pairs with at least one involved record (against the existing
   records and each other); the new candidates are merged.
3. Only pairs without a prediction (or involving a changed record) are scored.
4. Entities: the components touched by new match edges are merged (existing entities act
   as single nodes, so nothing else is recomputed); entity ids stay the smallest record
   key of each component. A changed record can split a component, which only a full
   ``resolve`` can see, so then the job runs one.

Each step is one or more Delta MERGEs on the table keys; records are stored before their
pairs are scored (scoring reads them from ``records``) and entities last, so a crash at
any point is finished by running the same command again, and a second run of a finished
one commits nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from em_spark.config import Config, SourceConf
from em_spark.errors import InputError
from em_spark.ingest import attribute_names, load_records, malformed_input_errors
from em_spark.resolve import changed_entity_rows, components, match_edges, node_key, run_resolve
from em_spark.runs import Run, tracked_run
from em_spark.session import get_spark
from em_spark.tables import Lakehouse

log = logging.getLogger(__name__)

JOB = "match-new"
KEY = ["source", "record_id"]


@dataclass(frozen=True)
class NewRecords:
    """Where the new records are and how to read them (defaults: the ingest source's)."""

    path: str
    source: str = "left"
    format: str | None = None
    id_column: str | None = None


def guess_format(path: str) -> str:
    """csv / parquet / delta for a path that exists, else a catalog table name."""
    p = Path(path)
    if not p.exists():
        if "/" in path or "://" in path:
            return "parquet" if "://" in path else "csv"
        return "table"
    if p.is_dir():
        return "delta" if (p / "_delta_log").is_dir() else "parquet"
    return "parquet" if p.suffix == ".parquet" else "csv"


def source_conf(config: Config, new: NewRecords) -> SourceConf:
    """The ingest settings of that side (id column, renames, columns) for the new file."""
    if new.source not in ("left", "right"):
        raise InputError(f"--source {new.source!r}: expected left or right")
    if config.mode == "dedupe" and new.source == "right":
        raise InputError("--source right: dedupe mode has one table (left)")
    base = getattr(config.ingest, new.source)
    fields = base.model_dump() if base is not None else {}
    fields.update(path=new.path, format=new.format or guess_format(new.path))
    if new.id_column:
        fields["id_column"] = new.id_column
    return SourceConf(**fields)


@dataclass(frozen=True)
class IncomingRecords:
    """The incoming records classified against the stored ones (one checkpointed frame)."""

    classified: DataFrame  # incoming rows + state (new / changed / unchanged) + involved

    @property
    def to_store(self) -> DataFrame:
        """New or changed rows, to merge into ``records``."""
        return self.classified.where(F.col("state") != "unchanged").drop("state", "involved")

    @property
    def changed(self) -> DataFrame:
        return self.classified.where(F.col("state") == "changed").select(*KEY)

    @property
    def involved(self) -> DataFrame:
        """Keys of every record whose pairs must be looked at."""
        return self.classified.where("involved").select(*KEY)

    def counts(self) -> dict[str, int]:
        """incoming / new_or_changed / changed / involved, in one Spark job."""
        row = self.classified.agg(
            F.count(F.lit(1)).alias("incoming"),
            F.sum(F.when(F.col("state") != "unchanged", 1).otherwise(0)).alias("new_or_changed"),
            F.sum(F.when(F.col("state") == "changed", 1).otherwise(0)).alias("changed"),
            F.sum(F.when(F.col("involved"), 1).otherwise(0)).alias("involved"),
        ).collect()[0]
        return {k: int(row[k] or 0) for k in ("incoming", "new_or_changed", "changed", "involved")}


def classify_incoming(lake: Lakehouse, incoming: DataFrame) -> IncomingRecords:
    """Each incoming record is new, changed (another record hash) or unchanged; it is
    involved unless it is unchanged and already has an entity (an earlier match-new that
    did not finish leaves stored records without one)."""
    stored = lake.read("records").select(*KEY, F.col("record_hash").alias("stored_hash"))
    classified = incoming.join(stored, KEY, "left").withColumn(
        "state",
        F.when(F.col("stored_hash").isNull(), "new")
        .when(F.col("stored_hash") != F.col("record_hash"), "changed")
        .otherwise("unchanged"),
    ).drop("stored_hash")
    if lake.exists("entities"):
        has_entity = lake.read("entities").select(*KEY).withColumn("has_entity", F.lit(True))
        classified = classified.join(has_entity, KEY, "left")
    else:
        classified = classified.withColumn("has_entity", F.lit(None).cast("boolean"))
    involved = (F.col("state") != "unchanged") | F.col("has_entity").isNull()
    return IncomingRecords(classified.withColumn("involved", involved).drop("has_entity").localCheckpoint(eager=True))


def pairs_to_score(lake: Lakehouse, candidates: DataFrame, changed: DataFrame, mode: str) -> DataFrame:
    """Candidates without a prediction, plus those of a changed record (re-scored)."""
    unscored = candidates.join(lake.read("predictions").select("pair_id"), "pair_id", "left_anti")
    right_source = "left" if mode == "dedupe" else "right"
    changed_left = changed.where(F.col("source") == "left").select(F.col("record_id").alias("left_id"))
    changed_right = changed.where(F.col("source") == right_source).select(F.col("record_id").alias("right_id"))
    stale = candidates.join(changed_left, "left_id", "left_semi").unionByName(
        candidates.join(changed_right, "right_id", "left_semi")
    )
    return unscored.unionByName(stale).dropDuplicates(["pair_id"])


def update_entities(lake: Lakehouse, config: Config, run: Run) -> int:
    """Give records without an entity one, merging the components their match edges touch.

    Existing entities are contracted to one node each (their id, the smallest key of the
    component), so the components computed here span only the touched entities and the
    new records. Returns the number of entity rows written.
    """
    records = lake.read("records").select(*KEY)
    if not lake.exists("entities"):
        current = records.limit(0).withColumn("entity_id", F.lit(None).cast("string"))
    else:
        current = lake.read("entities").select(*KEY, "entity_id")
    pending = records.join(current.select(*KEY), KEY, "left_anti").select(
        node_key("source", "record_id").alias("node")
    )
    edges = match_edges(lake.read("predictions"), config.mode, config.resolve.min_p_match)
    new_edges = edges.join(pending.withColumnRenamed("node", "a"), "a", "left_semi").unionByName(
        edges.join(pending.withColumnRenamed("node", "b"), "b", "left_semi")
    )
    # A node that already has an entity stands for its whole entity.
    entity_of = current.select(node_key("source", "record_id").alias("node"), "entity_id")
    ends = new_edges.join(entity_of.withColumnRenamed("node", "a").withColumnRenamed("entity_id", "ea"), "a", "left")
    ends = ends.join(entity_of.withColumnRenamed("node", "b").withColumnRenamed("entity_id", "eb"), "b", "left")
    ca, cb = F.coalesce("ea", "a"), F.coalesce("eb", "b")
    contracted = ends.select(F.least(ca, cb).alias("a"), F.greatest(ca, cb).alias("b")).where(
        F.col("a") != F.col("b")
    ).distinct()
    assigned, rounds = components(contracted, config.resolve.max_rounds)
    assigned = assigned.localCheckpoint(eager=True)
    # pending records: their component's root, or themselves
    pending_rows = pending.join(assigned, "node", "left").select(
        F.split("node", ":", 2)[0].alias("source"),
        F.split("node", ":", 2)[1].alias("record_id"),
        F.coalesce("root", "node").alias("entity_id"),
    )
    # members of a touched entity whose root is now smaller
    moved = current.join(
        assigned.where(F.col("node") != F.col("root")).withColumnRenamed("node", "entity_id"), "entity_id"
    ).select(*KEY, F.col("root").alias("entity_id"))
    rows = pending_rows.unionByName(moved).withColumn("run_id", F.lit(run.run_id))
    rows = changed_entity_rows(lake, rows).localCheckpoint(eager=True)
    n = rows.count()
    if n:
        lake.merge("entities", rows)
    run.count("entity_rounds", rounds)
    return n


@contextmanager
def _step(run: Run, name: str) -> Iterator[None]:
    """Log a step's duration and keep it in the run's counts (``ms_<step>``)."""
    start = time.monotonic()
    yield
    ms = int((time.monotonic() - start) * 1000)
    run.count(f"ms_{name}", ms)
    log.info("match-new: %s took %.1f s", name, ms / 1000)


def run_match_new(lake: Lakehouse, config: Config, run: Run, new: NewRecords) -> None:
    from em_spark.blocking import candidate_pairs
    from em_spark.scoring import score_candidates

    spark = lake.spark
    if not lake.exists("records"):
        raise InputError(f"no records table at {lake.ref('records')}: run the full pipeline first")
    conf = source_conf(config, new)
    with _step(run, "read"), malformed_input_errors(conf.path):
        incoming = load_records(spark, conf, new.source, run.run_id)
        _check_attributes(lake, incoming, conf.path)
        records = classify_incoming(lake, incoming)
        counts = records.counts()
        for key, value in counts.items():
            run.count(f"{key}_records", value)
        to_store, changed, involved = records.to_store, records.changed, records.involved
        n_changed = counts["changed"]
    if counts["involved"] == 0:
        log.info("match-new: every incoming record is already matched; nothing to do")
        return
    with _step(run, "store"):
        if counts["new_or_changed"]:
            lake.merge("records", to_store)

    with _step(run, "block"):
        candidates = (
            candidate_pairs(lake.read("records"), config.block, config.mode, only_involving=involved)
            .withColumn("run_id", F.lit(run.run_id))
            .localCheckpoint(eager=True)
        )
        run.count("candidates", candidates.count())
        lake.merge("candidates", candidates)
    with _step(run, "score"):
        todo = pairs_to_score(lake, candidates, changed, config.mode).localCheckpoint(eager=True)
        n_todo = todo.count()
        run.count("scored", n_todo)
        if n_todo:
            lake.merge("predictions", score_candidates(lake, config, todo, run))

    with _step(run, "entities"):
        if n_changed:
            log.info("match-new: %d changed record(s) may split entities: full resolve", n_changed)
            run_resolve(lake, config, run)
        else:
            run.count("entity_rows_written", update_entities(lake, config, run))


def _check_attributes(lake: Lakehouse, incoming: DataFrame, path: str) -> None:
    have = set(attribute_names(lake.read("records")))
    got = set(attribute_names(incoming))
    if have and got != have:
        raise InputError(
            f"{path}: attributes differ from the stored records (missing: {sorted(have - got)}, "
            f"extra: {sorted(got - have)}); align them with the ingest rename/columns settings"
        )


def match_new(config: Config, new: NewRecords, lake: Lakehouse | None = None) -> Run:
    """Run ``match-new`` in a tracked run (a ``runs`` row like every job)."""
    if lake is None:
        lake = Lakehouse.from_config(get_spark(config.spark), config)
    with tracked_run(lake, JOB, config) as run:
        run_match_new(lake, config, run, new)
    return run
