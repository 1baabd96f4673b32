"""Loading, readiness and hot reload of the service's state.

``StateHolder`` owns the current ``ServingState``. A background thread loads it (retrying
with the reason kept for ``/readyz`` and the logs until models and snapshot are both
there), then checks every ``reload_seconds`` whether a champion alias moved or a new
snapshot was published, and swaps in a complete new state when one did. A request reads
``holder.state`` once and keeps that object, so a swap never changes models under a
running request. A version that cannot be loaded is rejected: the current state keeps
serving, and the failure is logged and counted (``cvm_model_load_failures_total``).
Without an offer catalog (``scoring.catalog.resolve_catalog_path`` finds none) the state
serves scores only; a catalog that appears later (``cvm nbo init``) is loaded at the next check.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scoring.champions import Champion, NotReadyError
from serving.engine import ServingState, build_state, read_contacts
from serving.settings import ServiceSettings

log = logging.getLogger("cvm.serving.state")

#: a file whose change asks every worker to reload (touched by /admin/reload)
RELOAD_TOKEN = "reload.token"


@dataclass
class LoadOutcome:
    changed: bool
    versions: dict[str, str]
    snapshot: str
    message: str
    failures: list[str] = field(default_factory=list)


class StateHolder:
    def __init__(self, settings: ServiceSettings, *, on_failure=None, on_reload=None):
        self.settings = settings
        self.state: ServingState | None = None
        self.last_error: str | None = "loading"
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._token_mtime: float | None = None
        self._on_failure = on_failure or (lambda task: None)
        self._on_reload = on_reload or (lambda: None)
        self._rejected: dict[str, str] = {}  # task -> version that failed to load (not retried)
        self._contacts: tuple[str, object] | None = None  # (snapshot version, its contact history)
        self._dataset_name: str | None = None

    def dataset_name(self) -> str:
        """``CVM_DATASET`` may be a built-in name or a dataset directory: its name keys the store."""
        if self._dataset_name is None:
            spec = self.settings.dataset
            if self.settings.model_source == "mlflow":
                from sources.dataset import dataset_name

                self._dataset_name = dataset_name(spec)
            else:
                self._dataset_name = spec
        return self._dataset_name

    # ------------------------------------------------------------------ sources
    def _source(self):
        from scoring.champions import RegistrySource
        from serving.bento import BentoSource

        if self.settings.model_source == "bentoml":
            return BentoSource()
        return RegistrySource(self.settings.tracking_uri)

    def _store(self):
        from base.home import Home
        from features.online import open_online_store
        from features.online_store import SQLiteOnlineStore

        if self.settings.model_source == "bentoml":
            from serving.bento import BentoSource

            return SQLiteOnlineStore(BentoSource.snapshot_root(), dataset=self.settings.dataset)
        return open_online_store(Home(self.settings.home), self.dataset_name())

    def _catalog_path(self) -> Path | None:
        """``CVM_CATALOG``; in a Bento, the catalog packed with it (when one was); else the
        dataset's by ``scoring.catalog.resolve_catalog_path``. None: no catalog, /score only."""
        from scoring.catalog import resolve_catalog_path

        if self.settings.catalog is not None:
            return self.settings.catalog
        if self.settings.model_source == "bentoml":
            import bentoml

            from serving.bento import PACKED_CATALOG, SNAPSHOT_MODEL

            packed = Path(bentoml.models.get(f"{SNAPSHOT_MODEL}:latest").path) / PACKED_CATALOG
            return packed if packed.is_file() else None
        return resolve_catalog_path(self.settings.dataset)

    def _catalog(self, path: Path | None):
        from scoring.catalog import load_catalog, no_catalog_message

        if path is None:
            log.warning("%s; serving scores only: /recommend answers 404 until a catalog is found",
                        no_catalog_message(self.dataset_name()))
            return None
        return load_catalog(path)

    # ------------------------------------------------------------------ loading
    def load(self, *, force: bool = False) -> LoadOutcome:
        """Load what changed and swap it in; raises ``NotReadyError`` when nothing can serve."""
        with self._lock:
            return self._load(force)

    def _load(self, force: bool) -> LoadOutcome:
        source = self._source()
        versions = source.versions()
        store = self.state.store if self.state is not None else self._store()
        snap = store.current()
        if snap is None:
            raise NotReadyError(f"no feature snapshot is published for dataset {self.dataset_name()!r} "
                                f"(cvm features publish --dataset {self.settings.dataset} --as-of DATE)")
        current = self.state
        loaded = current.model_versions if current is not None else {}
        # versions to (re)load: changed ones, except a version already rejected (not retried)
        pending = {t: v for t, v in versions.items() if loaded.get(t) != v and self._rejected.get(t) != v}
        catalog_path = self._catalog_path()
        # a catalog added to a service that had none (cvm nbo init) is picked up at the next check
        catalog_appeared = current is not None and current.catalog is None and catalog_path is not None
        uplift_version = source.uplift_version() if hasattr(source, "uplift_version") else None
        loaded_uplift = current.uplift.version if current is not None and current.uplift is not None else None
        uplift_pending = uplift_version != loaded_uplift and self._rejected.get("uplift") != uplift_version
        same = (current is not None and not pending and set(versions) <= set(loaded) | set(self._rejected)
                and current.snapshot_version == snap.version and current.contacts_error is None
                and not catalog_appeared and not uplift_pending)
        if same and not force:
            return LoadOutcome(False, dict(loaded), snap.version, "unchanged")
        champions: dict[str, Champion] = {}
        failures = []
        for task, version in versions.items():
            old = current.champions.get(task) if current is not None else None
            if old is not None and old.version == version and not force:
                champions[task] = old
                continue
            if self._rejected.get(task) == version and not force:
                if old is not None:
                    champions[task] = old
                continue
            try:
                champions[task] = source.load(task, version)
                self._rejected.pop(task, None)
            except Exception as exc:  # noqa: BLE001 - a bad version must never take the service down
                failures.append(f"{task} version {version}: {exc}")
                self._rejected[task] = version
                self._on_failure(task)
                log.error("rejected %s version %s: %s", task, version, exc)
                if old is not None:
                    champions[task] = old
                    log.error("%s keeps serving version %s", task, old.version)
        uplift = self._load_uplift(source, uplift_version, current, force, failures)
        contacts_error = None
        if self._contacts is None or self._contacts[0] != snap.version:  # read once per published snapshot
            history, contacts_error = read_contacts(store)
            if contacts_error is None:
                self._contacts = (snap.version, history)
        history = self._contacts[1] if self._contacts is not None and self._contacts[0] == snap.version else None
        state = build_state(self.dataset_name(), champions, store, self._catalog(catalog_path), contacts=history,
                            contacts_error=contacts_error, uplift=uplift, fresh=self._fresh(snap, current))
        changed = current is None or state.model_versions != current.model_versions \
            or state.snapshot_version != current.snapshot_version or catalog_appeared
        self.state = state  # one reference swap: requests in flight keep the state they read
        self.last_error = None
        if changed:
            # Models, snapshot and libraries are millions of long-lived objects: moved out of
            # the collector's sight, a full collection no longer stalls requests for ~100s of ms.
            # Unfreezing first lets the previous state's reference cycles be collected.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._on_reload()
            log.info("serving models %s on snapshot %s (as_of %s)", state.version_header(), state.snapshot_version,
                     state.as_of)
        return LoadOutcome(changed, state.model_versions, state.snapshot_version,
                           "reloaded" if changed else "unchanged", failures)

    def _load_uplift(self, source, version: str | None, current, force: bool, failures: list[str]):
        """The cvm-uplift champion to serve: the loaded one if its version did not move, else
        ``version`` loaded; a version that fails to load is rejected (the old one keeps serving)."""
        old = current.uplift if current is not None else None
        if version is None:
            return None
        if old is not None and old.version == version and not force:
            return old
        if self._rejected.get("uplift") == version and not force:
            return old
        try:
            loaded = source.load_uplift(version)
            self._rejected.pop("uplift", None)
            return loaded
        except Exception as exc:  # noqa: BLE001 - a bad version must never take the service down
            failures.append(f"uplift version {version}: {exc}")
            self._rejected["uplift"] = version
            self._on_failure("uplift")
            log.error("rejected uplift version %s: %s", version, exc)
            return old

    def _fresh(self, snap, current):
        """The fresh vectors of the served snapshot (kept across reloads of the same snapshot); none
        in a Bento, which packs the snapshot without the event log."""
        if self.settings.model_source == "bentoml":
            return None
        if current is not None and current.fresh is not None and current.snapshot_version == snap.version:
            return current.fresh
        from base.home import Home
        from features.online_fresh import FreshVectors
        from sources.event_log.open import open_event_log

        home = Home(self.settings.home)
        name = self.dataset_name()
        return FreshVectors(home.online(name), open_event_log(home, name), snap.version, snap.as_of)

    # --------------------------------------------------------------- background
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cvm-state", daemon=True)
        self._thread.start()

    def _token(self) -> float | None:
        try:
            return (Path(self.settings.home) / "serving" / RELOAD_TOKEN).stat().st_mtime
        except OSError:
            return None

    def request_reload_everywhere(self) -> None:
        """Touch the token every worker watches (workers are separate processes)."""
        path = Path(self.settings.home) / "serving" / RELOAD_TOKEN
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(time.time()))
        self._token_mtime = self._token()

    def _run(self) -> None:
        self._token_mtime = self._token()
        last_check = 0.0
        while True:
            if self.state is None:
                try:
                    self.load()
                except Exception as exc:  # noqa: BLE001 - keep the reason for /readyz and retry
                    message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, NotReadyError) else str(exc)
                    if message != self.last_error:
                        log.error("not ready: %s", message)
                    self.last_error = message
                    time.sleep(2.0)
                continue
            token = self._token()
            due = self.settings.reload_seconds > 0 and time.monotonic() - last_check >= self.settings.reload_seconds
            if token != self._token_mtime or due:
                self._token_mtime = token
                last_check = time.monotonic()
                try:
                    self.load()
                except Exception as exc:  # noqa: BLE001 - keep serving what is loaded
                    log.error("reload check failed, still serving the loaded state: %s: %s",
                              type(exc).__name__, exc)
            time.sleep(0.5)
