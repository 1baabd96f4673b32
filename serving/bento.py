"""The Bento: champions and the published snapshot packed into the BentoML model store.

``export_to_bentoml`` (``cvm bento``) copies every champion's MLflow model directory and
the published online snapshot, its contact history included, into the model store, so
that ``bentoml build`` packs them. ``BentoSource`` reads them back inside the Bento, which
then serves without any MLflow server and without a CVM_HOME, and applies the same
contact policy as ``cvm serve`` (champions from the registry: ``scoring.champions``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from scoring.champions import Champion, NotReadyError, RegistrySource, task_model
from training.tasks import TASK_SPECS

log = logging.getLogger(__name__)

#: BentoML model holding the published online snapshot a Bento serves
SNAPSHOT_MODEL = "cvm-online-snapshot"
#: the offer catalog inside that model, when the Bento was built with one (without: /score only)
PACKED_CATALOG = "catalog.yaml"


@dataclass
class BentoSource:
    """Champions packed into the BentoML model store by ``cvm bento``."""

    def versions(self) -> dict[str, str]:
        import bentoml

        out = {}
        for task, spec in TASK_SPECS.items():
            try:
                m = bentoml.models.get(f"{spec.model_name}:latest")
            except bentoml.exceptions.NotFound:
                continue
            out[task] = m.info.labels.get("mlflow_version", str(m.tag.version))
        return out

    def load(self, task: str, version: str) -> Champion:
        import bentoml

        name = TASK_SPECS[task].model_name
        m = bentoml.models.get(f"{name}:latest")
        root = Path(m.path_of("mlflow_model"))
        model_dir = root if (root / "MLmodel").exists() else next(p.parent for p in root.rglob("MLmodel"))
        model = task_model(str(model_dir), f"Bento model {m.tag}")
        return Champion(task, name, m.info.labels.get("mlflow_version", version), model.predictor(), str(m.tag))

    @staticmethod
    def snapshot_root() -> Path:
        """The online-store directory packed in the Bento."""
        import bentoml

        return Path(bentoml.models.get(f"{SNAPSHOT_MODEL}:latest").path_of("online"))


def export_to_bentoml(tracking_uri: str, online_root: Path, catalog_path: Path | None) -> list[str]:
    """Copy every champion (its MLflow model directory), the published snapshot and the
    offer catalog (None: none, the Bento then serves scores only) into the BentoML model
    store, so ``bentoml build`` packs them. Returns the tags created."""
    import shutil

    import bentoml

    src = RegistrySource(tracking_uri)
    versions = src.versions()
    if not versions:
        raise NotReadyError("no champion model to pack: train first (cvm train all --as-of DATE)")
    tags = []
    for task, version in versions.items():
        name = TASK_SPECS[task].model_name
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
        if catalog_path is not None:
            shutil.copy2(catalog_path, Path(bm.path) / PACKED_CATALOG)
        tags.append(str(bm.tag))
    return tags
