"""A saved ``MatchModel`` read from its metadata files alone: no weights, no torch.

The score job's driver checks the records' schema against the model, and ``evaluate``
reports the threshold the verdicts were made at. Neither needs the model itself:
importing torch and transformers and loading the weights cost several seconds per job
on a small table (docs/BENCHMARKS.md, fixed cost). The workers and ``bench`` load the
model (em_spark.match_model); both read the same files through this module, so the
metadata and the loaded model cannot disagree on the verdict rule.

A saved model is one folder::

    <dir>/student/      the student (Hugging Face files + em_student.json)
    <dir>/prefilter/    the feature model, when there is one (feature_matcher.json + joblib)
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from em_spark.errors import InputError
from em_spark.mlflow_store import MLFLOW_SCHEMES, MlflowStore

STUDENT_DIR = "student"
# The feature model's folder in a saved model: it keeps its first name, so that saved
# models still load.
PREFILTER_DIR = "prefilter"
STUDENT_META_FILE = "em_student.json"
# Named as first saved (from when the class was FeatureMatcher), so that saved models still load.
FEATURE_META_FILE = "feature_matcher.json"
FEATURE_FORMAT_VERSION = 2  # 2: a separate prefilter classifier


def resolve_model_dir(uri: str, store: MlflowStore | None = None) -> Path:
    """A local model folder for ``uri``: a path, or MLflow artifacts downloaded from
    ``store`` (without one, from wherever MLflow's global settings point: notebooks)."""
    if uri.startswith(MLFLOW_SCHEMES):
        if store is None:
            import mlflow

            uri = mlflow.artifacts.download_artifacts(artifact_uri=uri)
        else:
            uri = str(store.download(uri))
    root = Path(uri)
    if not root.exists():
        raise InputError(f"student model not found: {uri}")
    return root


def find_student_dir(root: Path) -> Path:
    """The folder holding em_student.json: ``root`` itself, ``root/student`` or below."""
    if (root / STUDENT_META_FILE).is_file():
        return root
    found = sorted(root.rglob(STUDENT_META_FILE), key=lambda p: len(p.parts))
    if not found:
        raise InputError(f"{root}: no {STUDENT_META_FILE} (not a saved em-spark student)")
    return found[0].parent


def student_metadata(uri: str, store: MlflowStore | None = None) -> tuple[Path, dict[str, Any]]:
    """The student's folder and its em_student.json, refusing a model that used a removed option."""
    folder = find_student_dir(resolve_model_dir(str(uri), store))
    meta = json.loads((folder / STUDENT_META_FILE).read_text(encoding="utf-8"))
    if (meta.get("extra") or {}).get("feature_offset"):
        raise InputError(
            f"{folder}: this model was trained with train.feature_offset, an option since removed "
            "(docs/STUDENT.md); retrain it"
        )
    return folder, meta


def prefilter_folder(student_folder: Path) -> Path | None:
    """The feature model's folder beside the student's, if it holds a saved feature model."""
    prefilter = student_folder.parent / PREFILTER_DIR
    return prefilter if (prefilter / FEATURE_META_FILE).is_file() else None


def feature_metadata(folder: Path) -> dict[str, Any]:
    """feature_matcher.json of a saved feature model, refusing another format version."""
    meta_path = folder / FEATURE_META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: no {FEATURE_META_FILE} (not a saved FeatureModel)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FEATURE_FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: format_version {meta.get('format_version')} is not {FEATURE_FORMAT_VERSION}: "
            "saved by another em-spark version; train the model again (em-spark train)"
        )
    return meta


def verdict_maker(has_feature_model: bool, trained_choice: str) -> str:
    """``features`` when training chose the feature model and the model carries it."""
    return "features" if has_feature_model and trained_choice == "features" else "student"


def feature_model_uses(has_feature_model: bool, verdict_by: str, use_prefilter: bool) -> list[str]:
    """What scoring uses the feature model for (empty: nothing)."""
    if not has_feature_model:
        return []
    uses = ["the prefilter"] if use_prefilter else []
    if verdict_by == "features":
        uses.append("the verdicts (verdict_by: features)")
    return uses


@dataclass(frozen=True)
class SavedModel:
    """What a saved model's metadata says: who gives verdicts, at which threshold, and
    which attributes its feature model compares."""

    student_meta: dict[str, Any]
    feature_meta: dict[str, Any] | None

    @classmethod
    def read(cls, uri: str, store: MlflowStore | None = None) -> "SavedModel":
        folder, meta = student_metadata(uri, store)
        features = prefilter_folder(folder)
        return cls(meta, feature_metadata(features) if features is not None else None)

    @property
    def verdict_by(self) -> str:
        trained = str((self.student_meta.get("extra") or {}).get("verdict_by", "student"))
        return verdict_maker(self.feature_meta is not None, trained)

    @property
    def threshold(self) -> float:
        """The threshold of the model that gives the verdicts."""
        if self.verdict_by == "features":
            return float(self.feature_meta["f1_threshold"])  # type: ignore[index]
        return float(self.student_meta["threshold"])

    @property
    def feature_attributes(self) -> list[str]:
        return list(self.feature_meta["attributes"]) if self.feature_meta is not None else []

    def feature_model_uses(self, use_prefilter: bool) -> list[str]:
        return feature_model_uses(self.feature_meta is not None, self.verdict_by, use_prefilter)


def feature_schema_check(attributes: Sequence[str], present: Collection[str], uses: Sequence[str]) -> str:
    """The ``feature_schema`` run check: do the records carry every attribute the feature
    model compares (``attributes``; ``present``: the records' attribute names, ``uses``:
    :meth:`SavedModel.feature_model_uses`)? Raises InputError when one is missing and the
    feature model is in use.

    The feature model was fitted on one schema; on records of another it has only the
    whole-record features. Measured out of domain (docs/BENCHMARKS.md): its prefilter let
    through 0% of the matches on 5 of the paper's 7 rows.
    """
    if not uses:
        return "ok: the feature model is not used"
    missing = [a for a in attributes if a not in present]
    if not missing:
        return f"ok: records carry all {len(attributes)} attributes the feature model compares"
    retrain_verdicts = " (a model whose verdicts come from it needs train.verdict_by: student)"
    raise InputError(
        f"records lack {len(missing)} of the {len(attributes)} attributes the feature model compares "
        f"({', '.join(missing)}; the records have: {', '.join(sorted(present)) or 'none'}), and it is used "
        f"for {', '.join(uses)}: the model was trained on another schema. Train a model on these tables "
        "(em-spark train), or score with score.prefilter: false"
        + (retrain_verdicts if "the verdicts (verdict_by: features)" in uses else "")
    )
