"""The student as an MLflow model: a pyfunc whose artifact is the saved model folder.

The folder (``student/`` + optional ``prefilter/``) travels as one pyfunc artifact, so
``models:/<name>/<version>`` downloads everything scoring needs; ``StudentPredictor.load``
finds ``student/em_student.json`` inside the download. No pyspark here.
"""

from __future__ import annotations

import json
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


class StudentPyfunc(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with ``left`` and ``right`` columns (records as dicts
    or JSON objects; serialized as the model was trained, similarity hints included) or a
    ``text`` column (pairs already serialized), and returns ``p_match`` and ``verdict``
    (match when p_match >= the saved threshold)."""

    def load_context(self, context: Any) -> None:
        from em_spark.student.inference import StudentPredictor

        self.predictor = StudentPredictor.load(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if {"left", "right"} <= set(model_input.columns):
            lefts = [_as_record(left) for left in model_input["left"]]
            rights = [_as_record(right) for right in model_input["right"]]
            texts = self.predictor.serialize_pairs(lefts, rights)
        elif "text" in model_input.columns:
            texts = model_input["text"].astype(str).tolist()
        else:
            raise InputError(
                f"student model input has columns {list(model_input.columns)}: expected 'left' and "
                "'right' (records as dicts or JSON) or 'text' (serialized pairs)"
            )
        p = self.predictor.p_match(texts)
        verdict = ["match" if x >= self.predictor.threshold else "no_match" for x in p]
        return pd.DataFrame({"p_match": p, "verdict": verdict})


def log_student(model_dir: str | Path, registered_model: str | None) -> str:
    """Log ``model_dir`` as the active run's model; return its URI (registered if named)."""
    info = mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=StudentPyfunc(),
        artifacts={MODEL_ARTIFACT: str(model_dir)},
        pip_requirements=PIP_REQUIREMENTS,
        registered_model_name=registered_model,
    )
    if registered_model and info.registered_model_version is not None:
        return f"models:/{registered_model}/{info.registered_model_version}"
    return info.model_uri
