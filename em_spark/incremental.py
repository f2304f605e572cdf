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


def involved_records(lake: Lakehouse, incoming: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(to_store, changed, involved): new or changed rows to merge into ``records``; the
    changed ones' keys; the keys of every record whose pairs must be looked at."""
    stored = lake.read("records").select(*KEY, "record_hash")
    to_store = incoming.join(stored, [*KEY, "record_hash"], "left_anti")
    changed = to_store.select(*KEY).join(stored.select(*KEY), KEY, "left_semi")
    unchanged = incoming.select(*KEY, "record_hash").join(stored, [*KEY, "record_hash"], "left_semi")
    unfinished = unchanged.select(*KEY)
    if lake.exists("entities"):
        unfinished = unfinished.join(lake.read("entities").select(*KEY), KEY, "left_anti")
    involved = to_store.select(*KEY).unionByName(unfinished).distinct()
    return to_store, changed, involved


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
        incoming = load_records(spark, conf, new.source, run.run_id).localCheckpoint(eager=True)
        _check_attributes(lake, incoming, conf.path)
        to_store, changed, involved = (df.localCheckpoint(eager=True) for df in involved_records(lake, incoming))
        n_involved, n_changed = involved.count(), changed.count()
        run.count("incoming_records", incoming.count())
        run.count("new_or_changed_records", to_store.count())
        run.count("changed_records", n_changed)
        run.count("involved_records", n_involved)
    if n_involved == 0:
        log.info("match-new: every incoming record is already matched; nothing to do")
        return
    with _step(run, "store"):
        if not to_store.isEmpty():
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
