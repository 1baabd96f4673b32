"""Champions: the registered model versions that score, loaded into their fast form.

``RegistrySource`` resolves each ``cvm-<task>@champion`` alias to a version and loads
that exact version (``models:/cvm-churn/3``), so a version moving mid-load cannot mix
models. The service, the nightly batch and the offline offer evaluation load champions
here; a built Bento loads them from the BentoML model store (``serving.bento``) into the
same ``Champion``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from training.predictor import Predictor
from training.tasks import TASK_SPECS, UPLIFT_SPEC

log = logging.getLogger(__name__)


class NotReadyError(RuntimeError):
    """There is nothing to score with yet (and the message says why)."""


class ModelLoadError(RuntimeError):
    """A champion version exists but cannot be loaded or is not a cvm TaskModel."""


@dataclass(frozen=True)
class Champion:
    task: str
    name: str  # registered model name, cvm-<task>
    version: str
    model: Predictor
    source: str  # where it was loaded from (models:/cvm-churn/3, or a BentoML tag)


def logged_model(pyfunc_dir_or_uri: str, what: str, kind: type, kind_name: str):
    """The cvm model of class ``kind`` inside a logged pyfunc model (a local directory or a URI)."""
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(pyfunc_dir_or_uri).unwrap_python_model().model
    except Exception as exc:
        raise ModelLoadError(f"{what} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, kind):
        raise ModelLoadError(f"{what} is not a cvm {kind_name} (found {type(model).__name__})")
    return model


def task_model(pyfunc_dir_or_uri: str, what: str):
    """The ``TaskModel`` inside a logged cvm pyfunc model (a local directory or a URI)."""
    from training.model import TaskModel

    return logged_model(pyfunc_dir_or_uri, what, TaskModel, "task model")


@dataclass
class RegistrySource:
    """Champions from the MLflow model registry at ``tracking_uri``."""

    tracking_uri: str
    alias: str = "champion"

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _alias_version(self, client, name: str) -> str | None:
        """The version ``name@<alias>`` points at (None: no such alias or model); raises
        ``NotReadyError`` when the registry cannot be reached."""
        from mlflow.exceptions import MlflowException

        try:
            return str(client.get_model_version_by_alias(name, self.alias).version)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
                return None
            raise NotReadyError(f"model registry at {self.tracking_uri} unusable: {exc}") from exc
        except Exception as exc:
            raise NotReadyError(f"model registry at {self.tracking_uri} unreachable: "
                                f"{type(exc).__name__}: {exc}") from exc

    def versions(self) -> dict[str, str]:
        """task -> version the alias points at now (tasks without one are left out).
        Raises ``NotReadyError`` when the registry cannot be reached."""
        client = self.client()
        found = {task: self._alias_version(client, spec.model_name) for task, spec in TASK_SPECS.items()}
        return {task: v for task, v in found.items() if v is not None}

    def download(self, name: str, version: str, dst: str) -> str:
        """A registered version's files into ``dst``, through this source's URIs only (MLflow's
        process-wide tracking and registry URIs stay untouched)."""
        import os

        import mlflow

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        try:
            source = self.client().get_model_version_download_uri(name, version)
            return mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=dst,
                                                       tracking_uri=self.tracking_uri)
        except Exception as exc:
            raise ModelLoadError(f"{name} version {version} cannot be downloaded: "
                                 f"{type(exc).__name__}: {exc}") from exc

    def load(self, task: str, version: str) -> Champion:
        import tempfile

        name = TASK_SPECS[task].model_name
        uri = f"models:/{name}/{version}"
        what = f"{name} version {version}"
        with tempfile.TemporaryDirectory(prefix="cvm-model-") as tmp:
            local = self.download(name, version, tmp)
            model = task_model(local, what)
        if model.task != task:
            raise ModelLoadError(f"{name} version {version} is a {model.task!r} model, not {task!r}")
        return Champion(task, name, version, model.predictor(), uri)

    def uplift_version(self) -> str | None:
        """The version ``cvm-uplift@<alias>`` points at (None: no uplift model registered)."""
        return self._alias_version(self.client(), UPLIFT_SPEC.model_name)

    def load_uplift(self, version: str):
        """``scoring.uplift_scores.UpliftChampion`` of that cvm-uplift version."""
        import tempfile

        from scoring.uplift_scores import UpliftChampion, UpliftScorer
        from training.uplift.model import UpliftModel

        name = UPLIFT_SPEC.model_name
        with tempfile.TemporaryDirectory(prefix="cvm-model-") as tmp:
            model = logged_model(self.download(name, version, tmp), f"{name} version {version}", UpliftModel,
                                 "uplift model")
        return UpliftChampion(name, version, UpliftScorer(model), f"models:/{name}/{version}")

    def uplift(self):
        """The uplift champion, loaded (None without one)."""
        version = self.uplift_version()
        return self.load_uplift(version) if version is not None else None

    def champions(self) -> dict[str, Champion]:
        """Every task's champion, loaded (tasks without one are left out)."""
        return {t: self.load(t, v) for t, v in self.versions().items()}


def categories_of(champions: dict[str, Champion]) -> list[str]:
    """The cross-sell champion's categories (the catalog's target categories must be among
    them); empty without a cross-sell champion."""
    xs = champions.get("cross-sell")
    return list(xs.model.categories) if xs is not None else []


def model_versions(champions: dict[str, Champion], uplift=None) -> dict[str, str]:
    """What a decision records it was made with: task -> version, and ``uplift`` -> the
    cvm-uplift version when one scored."""
    out = {t: c.version for t, c in champions.items()}
    if uplift is not None:
        out["uplift"] = uplift.version
    return out


def missing_tasks(champions: dict[str, Champion]) -> list[str]:
    """Tasks without a champion: their scores are left null."""
    return [t for t in TASK_SPECS if t not in champions]
