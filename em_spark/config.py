"""Typed, validated configuration: YAML files plus ``--set a.b=c`` overrides.

Every stage has one section here. Unknown keys and bad values are errors that name
the key (pydantic ``extra="forbid"``). Every default works offline on one machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from em_spark.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SparkConf(Section):
    master: str = "local[*]"
    # Spark Connect: "sc://host:15002" for a remote server, or "local[2]" to start one here.
    remote: str | None = None
    app_name: str = "em-spark"
    # Delta jars resolve from Maven Central through spark.jars.packages and are cached in ~/.ivy2.
    conf: dict[str, str] = Field(
        default_factory=lambda: {
            "spark.sql.shuffle.partitions": "8",
            "spark.driver.memory": "4g",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.ui.showConsoleProgress": "true",
            "spark.databricks.delta.snapshotPartitions": "2",
            "spark.ui.enabled": "false",
        }
    )
    log_level: str = "WARN"


class LakehouseConf(Section):
    """Where tables live: paths under ``root``, or ``catalog.schema.<table>`` names."""

    root: str = "./lakehouse"
    catalog: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    # Per-table overrides: {"records": "main.crm.customers_em"} or a path.
    tables: dict[str, str] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SourceConf(Section):
    """One input table: a CSV / Parquet file or folder, a Delta path, or a catalog table."""

    path: str
    format: Literal["csv", "parquet", "delta", "table"] = "csv"
    id_column: str = "id"
    # Columns to keep (default: all but the id); renames align left and right schemas.
    columns: list[str] | None = None
    rename: dict[str, str] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list)


class LabelSourceConf(Section):
    path: str
    format: Literal["csv", "parquet", "delta", "table"] = "csv"
    # A fixed split name for every row of this file, unless the file has a `split` column.
    split: str | None = None
    left_id_column: str = "ltable_id"
    right_id_column: str = "rtable_id"
    label_column: str = "label"


class IngestConf(Section):
    left: SourceConf | None = None
    right: SourceConf | None = None
    labels: list[LabelSourceConf] = Field(default_factory=list)


class MlflowConf(Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    registry_uri: str | None = None
    experiment: str = "em-spark"
    registered_model: str = "em-spark-student"


class BlockConf(Section):
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class TeachConf(Section):
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class TrainConf(Section):
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class ScoreConf(Section):
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class EvaluateConf(Section):
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class ResolveConf(Section):
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class Config(Section):
    mode: Literal["link", "dedupe"] = "link"
    # Attribute order used by serialization and features; default: the ingest column order.
    attributes: list[str] | None = None
    # Reports (JSON, charts, HTML) written by jobs, one subfolder per job.
    reports_dir: str = "./reports"
    spark: SparkConf = Field(default_factory=SparkConf)
    lakehouse: LakehouseConf = Field(default_factory=LakehouseConf)
    mlflow: MlflowConf = Field(default_factory=MlflowConf)
    ingest: IngestConf = Field(default_factory=IngestConf)
    block: BlockConf = Field(default_factory=BlockConf)
    teach: TeachConf = Field(default_factory=TeachConf)
    train: TrainConf = Field(default_factory=TrainConf)
    score: ScoreConf = Field(default_factory=ScoreConf)
    evaluate: EvaluateConf = Field(default_factory=EvaluateConf)
    resolve: ResolveConf = Field(default_factory=ResolveConf)

    @field_validator("attributes")
    @classmethod
    def _attributes_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("attributes must not repeat a name")
        return value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would (``8`` -> int, ``[a, b]`` -> list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = {}
            node[key] = child
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. block.top_k=10")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    return key, _parse_scalar(raw)


def _format_validation_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{origin}: {where}: {msg}{more}"


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> Config:
    """Load ``path`` (YAML) over ``base``, apply ``overrides``, validate."""
    data: dict[str, Any] = dict(base or {})
    origin = "config"
    if path is not None:
        p = Path(path)
        origin = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = _deep_merge(data, loaded)
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
        origin = f"{origin} (with --set)" if "--set" not in origin else origin
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None
    return config


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
