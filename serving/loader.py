"""Where champions come from: the MLflow registry (default) or a built Bento.

``RegistrySource`` resolves each ``cvm-<task>@champion`` alias to a version and loads
that exact version (``models:/cvm-churn/3``), so a version moving mid-load cannot mix
models. ``BentoSource`` reads the models ``cvm bento`` packed into the BentoML model
store, so a Bento runs without any MLflow server.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from serving.engine import TASKS, Champion, NotReadyError
from serving.inference import CompiledModel

log = logging.getLogger(__name__)

#: BentoML model holding the published online snapshot a Bento serves
SNAPSHOT_MODEL = "cvm-online-snapshot"


class ModelLoadError(RuntimeError):
    """A champion version exists but cannot be loaded or is not a cvm TaskModel."""


def _task_model(pyfunc_dir_or_uri: str, what: str):
    import mlflow.pyfunc

    from training.model import TaskModel

    try:
        model = mlflow.pyfunc.load_model(pyfunc_dir_or_uri).unwrap_python_model().model
    except Exception as exc:  # noqa: BLE001 - any failure is a rejected version, reported with its cause
        raise ModelLoadError(f"{what} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, TaskModel):
        raise ModelLoadError(f"{what} is not a cvm task model (found {type(model).__name__})")
    return model


@dataclass
class RegistrySource:
    """Champions from the MLflow model registry at ``tracking_uri``."""

    tracking_uri: str
    alias: str = "champion"

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def versions(self) -> dict[str, str]:
        """task -> version the alias points at now (tasks without one are left out).
        Raises ``NotReadyError`` when the registry cannot be reached."""
        from mlflow.exceptions import MlflowException

        from training.registry import MODEL_NAMES

        client = self.client()
        out = {}
        for task in TASKS:
            try:
                mv = client.get_model_version_by_alias(MODEL_NAMES[task], self.alias)
            except MlflowException as exc:
                if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
                    continue
                raise NotReadyError(f"model registry at {self.tracking_uri} unusable: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - connection errors come in many types
                raise NotReadyError(f"model registry at {self.tracking_uri} unreachable: "
                                    f"{type(exc).__name__}: {exc}") from exc
            out[task] = str(mv.version)
        return out

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
        except Exception as exc:  # noqa: BLE001 - unreachable registry, missing artifacts...
            raise ModelLoadError(f"{name} version {version} cannot be downloaded: "
                                 f"{type(exc).__name__}: {exc}") from exc

    def load(self, task: str, version: str) -> Champion:
        import tempfile

        from training.registry import MODEL_NAMES

        name = MODEL_NAMES[task]
        uri = f"models:/{name}/{version}"
        what = f"{name} version {version}"
        with tempfile.TemporaryDirectory(prefix="cvm-model-") as tmp:
            local = self.download(name, version, tmp)
            model = _task_model(local, what)
        if model.task != task:
            raise ModelLoadError(f"{name} version {version} is a {model.task!r} model, not {task!r}")
        return Champion(task, name, version, CompiledModel(model), uri)


@dataclass
class BentoSource:
    """Champions packed into the BentoML model store by ``cvm bento``."""

    def versions(self) -> dict[str, str]:
        import bentoml

        from training.registry import MODEL_NAMES

        out = {}
        for task in TASKS:
            try:
                m = bentoml.models.get(f"{MODEL_NAMES[task]}:latest")
            except bentoml.exceptions.NotFound:
                continue
            out[task] = m.info.labels.get("mlflow_version", str(m.tag.version))
        return out

    def load(self, task: str, version: str) -> Champion:
        import bentoml

        from training.registry import MODEL_NAMES

        m = bentoml.models.get(f"{MODEL_NAMES[task]}:latest")
        root = Path(m.path_of("mlflow_model"))
        model_dir = root if (root / "MLmodel").exists() else next(p.parent for p in root.rglob("MLmodel"))
        model = _task_model(str(model_dir), f"Bento model {m.tag}")
        return Champion(task, MODEL_NAMES[task], m.info.labels.get("mlflow_version", version), CompiledModel(model),
                        str(m.tag))

    @staticmethod
    def snapshot_root() -> Path:
        """The online-store directory packed in the Bento."""
        import bentoml

        return Path(bentoml.models.get(f"{SNAPSHOT_MODEL}:latest").path_of("online"))


def export_to_bentoml(tracking_uri: str, online_root: Path, catalog_path: Path) -> list[str]:
    """Copy every champion (its MLflow model directory) and the published snapshot into the
    BentoML model store, so ``bentoml build`` packs them. Returns the tags created."""
    import shutil

    import bentoml

    from training.registry import MODEL_NAMES

    src = RegistrySource(tracking_uri)
    versions = src.versions()
    if not versions:
        raise NotReadyError("no champion model to pack: train first (cvm train all --as-of DATE)")
    tags = []
    for task, version in versions.items():
        name = MODEL_NAMES[task]
        with bentoml.models.create(name, labels={"mlflow_version": version, "task": task},
                                   metadata={"source": f"models:/{name}/{version}"}) as bm:
            src.download(name, version, bm.path_of("mlflow_model"))
            tags.append(str(bm.tag))
    pointer = online_root / "CURRENT.json"
    if not pointer.exists():
        raise NotReadyError(f"no published snapshot under {online_root}: run cvm features publish first")
    manifest = json.loads(pointer.read_text())
    with bentoml.models.create(SNAPSHOT_MODEL, labels={"as_of": manifest["as_of"]},
                               metadata={"version": manifest["version"], "dataset": online_root.name}) as bm:
        dst = Path(bm.path_of("online"))
        (dst / Path(manifest["file"]).parent).mkdir(parents=True, exist_ok=True)
        shutil.copy2(online_root / manifest["file"], dst / manifest["file"])
        shutil.copy2(pointer, dst / "CURRENT.json")
        shutil.copy2(catalog_path, Path(bm.path) / "catalog.yaml")
        tags.append(str(bm.tag))
    return tags
