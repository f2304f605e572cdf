"""The match model as an MLflow model: a pyfunc whose artifact is the saved model folder.

The folder (``student/`` + optional ``prefilter/``, em_spark.match_model) travels as one
pyfunc artifact, so ``models:/<name>/<version>`` downloads everything scoring needs.
``predict`` runs the score job's own per-batch core (em_spark.scoring.batch.score_pairs)
with the score job's default policy, so a served model (Databricks model serving,
``mlflow models serve``) answers exactly as the batch job writes ``predictions``:
p_match, verdict, decided_by, rationale and rationale_by. No pyspark here.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from em_spark.errors import InputError

MODEL_ARTIFACT = "model"
# Listed explicitly: inferring requirements imports and inspects the model (slow, noisy).
PIP_REQUIREMENTS = ["torch", "transformers", "tokenizers", "scikit-learn", "rapidfuzz", "pandas", "numpy"]


def _as_record(value: Any) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value)


class MatchModelPyfunc(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with ``left`` and ``right`` columns (records as dicts
    or JSON objects) and returns the score job's columns for each pair (``p_match``,
    ``verdict``, ``rationale``, ``rationale_by``, ``decided_by``, ``status``, ``error``).
    ``params`` may set any field of the scoring policy (``rationale``, ``threshold``,
    ``use_prefilter``, ...), as ``score.*`` does for the job."""

    def load_context(self, context: Any) -> None:
        from em_spark.match_model import MatchModel

        self.model = MatchModel.load(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from em_spark.scoring.batch import ScoringPolicy, score_pairs

        if not {"left", "right"} <= set(model_input.columns):
            raise InputError(
                f"match model input has columns {list(model_input.columns)}: expected 'left' and "
                "'right' (records as dicts or JSON objects)"
            )
        known = {f.name for f in fields(ScoringPolicy)}
        unknown = sorted(set(params or {}) - known)
        if unknown:
            raise InputError(f"match model params {unknown}: expected some of {sorted(known)}")
        policy = ScoringPolicy(**(params or {}))
        lefts = [_as_record(left) for left in model_input["left"]]
        rights = [_as_record(right) for right in model_input["right"]]
        return score_pairs(self.model, lefts, rights, policy)


def policy_signature() -> Any:
    """A signature declaring the scoring policy's fields as params (MLflow drops params a
    signature does not declare), with the score job's defaults; input columns unchecked."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    from em_spark.scoring.batch import ScoringPolicy

    dtypes = {str: "string", float: "double", int: "long", bool: "boolean"}
    defaults = ScoringPolicy()
    specs = [
        ParamSpec(f.name, dtypes[type(getattr(defaults, f.name))], getattr(defaults, f.name))
        for f in fields(ScoringPolicy)
        if getattr(defaults, f.name) is not None  # threshold: the model's own unless set
    ]
    return ModelSignature(inputs=None, params=ParamSchema(specs))


def log_student(model_dir: str | Path, registered_model: str | None) -> str:
    """Log ``model_dir`` as the active run's model; return its URI (registered if named)."""
    info = mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=MatchModelPyfunc(),
        signature=policy_signature(),
        artifacts={MODEL_ARTIFACT: str(model_dir)},
        pip_requirements=PIP_REQUIREMENTS,
        registered_model_name=registered_model,
    )
    if registered_model and info.registered_model_version is not None:
        return f"models:/{registered_model}/{info.registered_model_version}"
    return info.model_uri
