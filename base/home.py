"""Where state lives: one home directory, ``CVM_HOME`` (default ``./cvm_home``).

Feature snapshots, the online store, quarantined rows, materialised built-in
datasets, batch outputs and (unless ``MLFLOW_TRACKING_URI`` says otherwise)
MLflow's SQLite database and artifacts all live under it. Nothing is created
until a command asks for a path with ``ensure=True``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "cvm_home"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(name: str) -> str:
    """A dataset name usable as a directory name."""
    cleaned = _SAFE_NAME.sub("_", name).strip("._")
    if not cleaned:
        raise ValueError(f"cannot derive a directory name from {name!r}")
    return cleaned


@dataclass(frozen=True)
class Home:
    """Paths under the CVM home directory."""

    root: Path

    @classmethod
    def from_env(cls, override: str | os.PathLike[str] | None = None) -> Home:
        root = override if override is not None else os.environ.get("CVM_HOME", DEFAULT_HOME)
        return cls(Path(root).expanduser().resolve())

    def _dir(self, *parts: str, ensure: bool) -> Path:
        path = self.root.joinpath(*parts)
        if ensure:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def datasets(self, ensure: bool = False) -> Path:
        """Built-in datasets materialised as source directories."""
        return self._dir("datasets", ensure=ensure)

    def features(self, dataset: str, ensure: bool = False) -> Path:
        """Feature snapshots of one dataset, partitioned by ``as_of=YYYY-MM-DD``."""
        return self._dir("features", safe_name(dataset), ensure=ensure)

    def quarantine(self, dataset: str, ensure: bool = False) -> Path:
        return self._dir("quarantine", safe_name(dataset), ensure=ensure)

    def profiles(self, dataset: str, ensure: bool = False) -> Path:
        return self._dir("profiles", safe_name(dataset), ensure=ensure)

    def online(self, dataset: str, ensure: bool = False) -> Path:
        return self._dir("online", safe_name(dataset), ensure=ensure)

    def batch(self, dataset: str, ensure: bool = False) -> Path:
        return self._dir("batch", safe_name(dataset), ensure=ensure)

    def events(self, dataset: str, ensure: bool = False) -> Path:
        """The embedded event log of a dataset (``events.sqlite``: POST /events, cvm events ingest)."""
        return self._dir("events", safe_name(dataset), ensure=ensure)

    def triggers(self, dataset: str, ensure: bool = False) -> Path:
        """The trigger engine's timers and outbox of a dataset (``triggers.sqlite``)."""
        return self._dir("triggers", safe_name(dataset), ensure=ensure)

    def decisions(self, dataset: str, ensure: bool = False) -> Path:
        """The embedded decision log of a dataset (``CVM_DECISIONS_URL`` overrides it)."""
        return self._dir("decisions", safe_name(dataset), ensure=ensure)

    def tmp(self, ensure: bool = False) -> Path:
        """Scratch space (engine spill files); safe to delete between runs."""
        return self._dir("tmp", ensure=ensure)

    def mlflow_tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` if set, else a SQLite database under the home."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.default_mlflow_uri()

    def default_mlflow_uri(self) -> str:
        """The SQLite database under the home that MLflow uses unless told otherwise."""
        return f"sqlite:///{self.root / 'mlflow' / 'mlflow.db'}"

    def mlflow_artifacts(self, ensure: bool = False) -> Path:
        return self._dir("mlflow", "artifacts", ensure=ensure)
