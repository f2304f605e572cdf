"""SQL over the em-spark tables: each table is a temp view under its own name, plus two
review views.

- ``match_review``: every prediction with both records' attributes (as maps and as
  ``left_<attr>`` / ``right_<attr>`` columns), p_match, verdict, rationale, and the label
  where the pair has one;
- ``entity_members``: every record with its entity id, the entity's size and attributes.

With a Unity Catalog lakehouse (``lakehouse.catalog`` and ``lakehouse.schema``) the two
views are also created as persistent views in that schema, for dashboards and Genie.
"""

from __future__ import annotations

import re

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from em_spark.config import Config
from em_spark.errors import EmError
from em_spark.ingest import attribute_names
from em_spark.session import get_spark
from em_spark.tables import CONTRACTS, Lakehouse

# Attributes flattened into columns; a name outside this set (quotes, backslashes) stays
# reachable through the map column only, so no value is ever pasted into SQL unquoted.
_SAFE_ATTRIBUTE = re.compile(r"^[A-Za-z0-9_ .\-]{1,100}$")


def _column_suffix(attribute: str) -> str:
    return re.sub(r"\W+", "_", attribute).strip("_").lower() or "attr"


def _attribute_columns(alias: str, prefix: str, attributes: list[str]) -> list[str]:
    cols, used = [], set()
    for name in attributes:
        if not _SAFE_ATTRIBUTE.match(name):
            continue
        column = f"{prefix}{_column_suffix(name)}"
        if column in used:
            continue
        used.add(column)
        cols.append(f"{alias}.attributes['{name}'] AS `{column}`")
    return cols


def infer_mode(lake: Lakehouse) -> str:
    """Link if any record comes from the right table, else dedupe."""
    right = lake.read("records").where(F.col("source") == "right").limit(1).count()
    return "link" if right else "dedupe"


def view_definitions(lake: Lakehouse, mode: str, attributes: list[str]) -> dict[str, str]:
    """SQL of the review views whose tables exist (over the tables' own identifiers)."""
    ref = {name: lake.ref(name).sql for name in CONTRACTS}
    right_source = "left" if mode == "dedupe" else "right"
    views = {}
    if lake.exists("predictions") and lake.exists("records"):
        has_labels = lake.exists("labels")
        cols = [
            "p.pair_id", "p.left_id", "p.right_id", "p.p_match", "p.verdict", "p.rationale",
            "p.decided_by", "p.status", "p.error",
            "lab.label" if has_labels else "CAST(NULL AS INT) AS label",
            "lab.split" if has_labels else "CAST(NULL AS STRING) AS split",
            *_attribute_columns("l", "left_", attributes),
            *_attribute_columns("r", "right_", attributes),
            "l.attributes AS left_attributes", "r.attributes AS right_attributes",
            "p.model_uri", "p.run_id", "p.scored_at",
        ]
        sql = (
            f"SELECT {', '.join(cols)} FROM {ref['predictions']} p "
            f"LEFT JOIN {ref['records']} l ON l.source = 'left' AND l.record_id = p.left_id "
            f"LEFT JOIN {ref['records']} r ON r.source = '{right_source}' AND r.record_id = p.right_id"
        )
        if has_labels:
            sql += f" LEFT JOIN {ref['labels']} lab ON lab.pair_id = p.pair_id"
        views["match_review"] = sql
    if lake.exists("entities") and lake.exists("records"):
        cols = [
            "e.entity_id",
            "count(*) OVER (PARTITION BY e.entity_id) AS entity_size",
            "e.source", "e.record_id",
            *_attribute_columns("r", "", attributes),
            "r.attributes", "e.run_id",
        ]
        views["entity_members"] = (
            f"SELECT {', '.join(cols)} FROM {ref['entities']} e "
            f"LEFT JOIN {ref['records']} r ON r.source = e.source AND r.record_id = e.record_id"
        )
    return views


def register_views(lake: Lakehouse, mode: str | None = None, attributes: list[str] | None = None) -> list[str]:
    """Register every existing contract table and the review views as temp views (and, on
    a catalog lakehouse, the review views as persistent views); return their names."""
    names = []
    for name in CONTRACTS:
        if lake.exists(name):
            lake.read(name).createOrReplaceTempView(name)
            names.append(name)
    if "records" not in names:
        return names
    mode = mode or infer_mode(lake)
    if attributes is None:
        attributes = attribute_names(lake.read("records"))
    catalog_schema = (
        f"{lake.conf.catalog}.{lake.conf.schema_}" if lake.conf.catalog and lake.conf.schema_ else None
    )
    for view, sql in view_definitions(lake, mode, attributes).items():
        lake.spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW `{view}` AS {sql}")
        if catalog_schema is not None:
            target = ".".join(f"`{p}`" for p in f"{catalog_schema}.{view}".split("."))
            lake.spark.sql(f"CREATE OR REPLACE VIEW {target} AS {sql}")
        names.append(view)
    return names


def run_sql(config: Config, query: str, limit: int = 50, spark: SparkSession | None = None) -> None:
    lake = Lakehouse.from_config(spark or get_spark(config.spark), config)
    views = register_views(lake, attributes=config.attributes)
    if not views:
        raise EmError(f"no em-spark tables under {config.lakehouse.root}; run a job first")
    try:
        df = lake.spark.sql(query)
    except Exception as exc:  # AnalysisException / ParseException: one line for the user
        first = str(exc).strip().splitlines()[0]
        raise EmError(f"SQL: {first} (tables and views: {', '.join(views)})") from None
    df.show(limit, truncate=80)
