"""SQL over the em-spark tables: each table is a temp view under its own name, plus two
review views.

- ``match_review``: every prediction with both records' attributes (as maps and as
  ``left_<attr>`` / ``right_<attr>`` columns), p_match, verdict, rationale, rationale_by (student | rules), and the label
  where the pair has one;
- ``entity_members``: every record with its entity id, the entity's size and attributes.

With a Unity Catalog lakehouse (``lakehouse.catalog`` and ``lakehouse.schema``) the two
views are also created as persistent views in that schema, for dashboards and Genie.

``run_sql`` prints a query's rows whole (never cut), as a plain-text table, CSV with a
header, or JSON lines (one object per row).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

from pyspark.sql import Row, SparkSession
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
            "p.pair_id", "p.left_id", "p.right_id", "p.p_match", "p.verdict", "p.rationale", "p.rationale_by",
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


FORMATS = ("table", "csv", "json")
# Rows that ``--format table`` prints when no --limit is given (csv and json print all).
TABLE_LIMIT = 1000


def default_limit(fmt: str) -> int | None:
    return TABLE_LIMIT if fmt == "table" else None


def _plain(value: Any) -> Any:
    """A collected Spark value as plain JSON-able Python (structs -> dicts, times -> ISO)."""
    if isinstance(value, Row):
        return {k: _plain(v) for k, v in value.asDict().items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")  # as Spark's to_json
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def _text(value: Any) -> str:
    """One cell as text: NULL -> '', nested values as JSON, booleans as true/false."""
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def write_json(columns: list[str], rows: Iterable[Row], out: TextIO) -> int:
    n = 0
    for row in rows:
        record = {c: _plain(v) for c, v in zip(columns, row)}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        n += 1
    return n


def write_csv(columns: list[str], rows: Iterable[Row], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow([_text(v) for v in row])
        n += 1
    return n


def write_table(columns: list[str], rows: Iterable[Row], out: TextIO) -> int:
    """Columns separated by `` | ``, numbers right-aligned, NULL shown as NULL; line breaks
    inside a value are shown as ``\\n`` so that each row stays on one line."""
    rows = list(rows)
    cells = [
        ["NULL" if v is None else _text(v).replace("\r", "\\r").replace("\n", "\\n") for v in row] for row in rows
    ]
    numeric = [
        all(isinstance(row[i], (int, float, Decimal)) and not isinstance(row[i], bool) for row in rows if row[i] is not None)
        for i in range(len(columns))
    ]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: list[str], align: list[bool]) -> str:
        return " | ".join(v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, align)).rstrip()

    out.write(line(columns, [False] * len(columns)) + "\n")
    out.write("-+-".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write(line(row, numeric) + "\n")
    return len(rows)


def run_sql(
    config: Config,
    query: str,
    limit: int | None = None,
    spark: SparkSession | None = None,
    fmt: str = "table",
    out: TextIO | None = None,
) -> int:
    """Run ``query`` over the tables and views; print its rows whole in ``fmt`` (table,
    csv, json). ``limit``: at most that many rows (None: ``default_limit(fmt)``; 0: all).
    Returns the number of rows printed."""
    if fmt not in FORMATS:
        raise EmError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = out or sys.stdout
    lake = Lakehouse.from_config(spark or get_spark(config.spark), config)
    views = register_views(lake, attributes=config.attributes)
    if not views:
        raise EmError(f"no em-spark tables under {config.lakehouse.root}; run a job first")
    try:
        df = lake.spark.sql(query)
    except Exception as exc:  # AnalysisException / ParseException: one line for the user
        first = str(exc).strip().splitlines()[0]
        raise EmError(f"SQL: {first} (tables and views: {', '.join(views)})") from None
    if limit is None:
        limit = default_limit(fmt)
    if limit is not None and limit < 0:
        raise EmError(f"--limit {limit}: expected 0 (all rows) or more")
    columns = df.columns
    if fmt == "table":
        rows = (df.limit(limit + 1) if limit else df).collect()
        more = bool(limit) and len(rows) > limit
        n = write_table(columns, rows[:limit] if limit else rows, out)
        note = f"({n} row{'s' if n != 1 else ''}"
        out.write(note + ("; more not shown: --limit N, or --limit 0 for all)\n" if more else ")\n"))
        return n
    rows_iter: Iterator[Row] = (df.limit(limit) if limit else df).toLocalIterator()
    return (write_csv if fmt == "csv" else write_json)(columns, rows_iter, out)
