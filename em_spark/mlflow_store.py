"""Where MLflow lives for one job: tracking and registry URIs passed explicitly.

spark-submit and Databricks run every job in its own process, so no job may rely on
MLflow's process-global tracking URI having been set by an earlier one (unset, MLflow
falls back to ``sqlite:///mlflow.db`` in the working directory: an empty store, and a
stray file). Everything here takes the configured URIs: lookups go through an
``MlflowClient`` built for them, and ``models:/`` URIs are resolved through that client
rather than through MLflow's global registry URI, which its own resolver reads. The
fluent API (``start_run``, ``log_model``) has no client form; :meth:`MlflowStore.active`
points it at this store for one block and restores what was there before.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from em_spark.errors import InputError

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "dbfs:/", "s3://", "gs://", "abfss://")
_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# models:/<name>/<version>[/path] and models:/<name>@<alias>[/path]; a logged model
# (models:/m-<id>) has neither and goes to MLflow's own resolver.
_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))(?:/(?P<path>.*))?$")


def absolute_sqlite_uri(uri: str | None) -> str | None:
    """``sqlite:///mlflow.db`` -> an absolute path, so workers in another cwd find it."""
    prefix = "sqlite:///"
    if uri is None or not uri.startswith(prefix) or uri.startswith(prefix + "/"):
        return uri
    return prefix + str(Path(uri[len(prefix) :]).resolve())


@dataclass(frozen=True)
class MlflowStore:
    """One tracking server and model registry (the registry defaults to the tracking URI)."""

    tracking_uri: str
    registry_uri: str | None = None

    @classmethod
    def of(cls, tracking_uri: str, registry_uri: str | None = None) -> "MlflowStore":
        """Relative SQLite paths made absolute (against the working directory, once)."""
        return cls(absolute_sqlite_uri(tracking_uri) or tracking_uri, absolute_sqlite_uri(registry_uri))

    @property
    def registry(self) -> str:
        return self.registry_uri or self.tracking_uri

    def client(self) -> Any:
        return _client(self.tracking_uri, self.registry)

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created if missing; on ``sqlite:///path/mlflow.db``
        its artifacts go beside the database (``path/mlartifacts``), not into the cwd."""
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if self.tracking_uri.startswith("sqlite:///"):
            location = (Path(self.tracking_uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
        return client.create_experiment(name, artifact_location=location)

    def latest_version(self, name: str) -> str:
        """``models:/<name>/<latest version>``; InputError when there is none."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client().search_model_versions(f"name = '{name}'")
        except MlflowException as exc:
            raise InputError(f"MLflow registry at {self.registry}: {exc.message}") from None
        if not versions:
            raise InputError(
                f"no model to score with: registered model '{name}' has no version at {self.registry} "
                "(run `em-spark train`, or set score.model_uri to a model folder or models:/name/version)"
            )
        return f"models:/{name}/{max(int(v.version) for v in versions)}"

    def artifact_location(self, uri: str) -> str:
        """A registered-model URI -> the storage URI of its files; other URIs unchanged."""
        found = _REGISTERED.match(uri)
        if found is None:
            return uri
        from mlflow.exceptions import MlflowException

        client = self.client()
        name = found["name"]
        try:
            version = found["version"] or client.get_model_version_by_alias(name, found["alias"]).version
            location = client.get_model_version_download_uri(name, version)
        except MlflowException as exc:
            raise InputError(f"{uri}: not in the MLflow registry at {self.registry}: {exc.message}") from None
        return f"{location.rstrip('/')}/{found['path']}" if found["path"] else location

    def download(self, uri: str) -> Path:
        """A local folder holding the artifacts at ``uri`` (local files are not copied)."""
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=self.artifact_location(uri), tracking_uri=self.tracking_uri, registry_uri=self.registry
            )
        except MlflowException as exc:
            raise InputError(f"{uri}: could not be downloaded from {self.tracking_uri}: {exc.message}") from None
        return Path(local)

    @contextmanager
    def active(self) -> Iterator[None]:
        """MLflow's fluent API pointed at this store inside the block; what was set before
        (a notebook's own URIs, or nothing) is put back after."""
        import mlflow
        from mlflow.tracking import _model_registry, _tracking_service

        before = (
            getattr(_tracking_service.utils, "_tracking_uri", None),
            getattr(_model_registry.utils, "_registry_uri", None),
            {k: os.environ.get(k) for k in _URI_VARIABLES},
        )
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before[0])
            mlflow.set_registry_uri(before[1])
            for key, value in before[2].items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@functools.lru_cache(maxsize=8)
def _client(tracking_uri: str, registry_uri: str) -> Any:
    """One client per store and process: building one opens and checks a SQLite store's
    schema (0.3-0.6 s each)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
