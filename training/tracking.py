"""Where MLflow keeps runs, artifacts and registered models.

By default everything lives under ``CVM_HOME/mlflow``: the tracking and registry
store is ``mlflow.db`` (SQLite) and every experiment's artifacts go to
``mlflow/artifacts/<experiment>``, so a run never drops ``./mlruns`` or
``./mlflow.db`` into whatever directory the command was started from.
``MLFLOW_TRACKING_URI`` pointing at a tracking server overrides this; the server
then decides where artifacts go (``mlflow server --serve-artifacts`` proxies
uploads, so clients need no access to the artifact store).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from base.home import Home, safe_name

log = logging.getLogger(__name__)

# Schemes served by a tracking server, which owns artifact placement. Any other
# store (sqlite, postgresql, file...) has no server to proxy artifacts and would
# fall back to ./mlruns in the working directory unless we say where they go.
_SERVER_SCHEMES = {"http", "https", "databricks", "databricks-uc", "uc"}
_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def is_server_uri(uri: str) -> bool:
    """Does ``uri`` name a tracking server (which decides where artifacts go)?

    ``databricks`` alone (no ``://``) is MLflow's usual spelling for the default workspace.
    """
    return (urlparse(uri).scheme or uri.strip()) in _SERVER_SCHEMES


def configure(home: Home) -> MlflowClient:
    """Point MLflow (fluent API and the returned client) at the project's store.

    The URI is ``$MLFLOW_TRACKING_URI`` if set, else SQLite under ``CVM_HOME``;
    the registry uses the same store. Cheap and idempotent: call it at the start
    of every command that touches MLflow.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = home.mlflow_tracking_uri()
    if not is_server_uri(uri):
        home.mlflow_artifacts(ensure=True)  # also creates CVM_HOME/mlflow, where the default DB lives
    with _env_preserved():
        # mlflow.set_*_uri also export the URI as environment variables; undoing
        # that keeps configure() a function of (environment, home): a second call
        # with another CVM_HOME in the same process must not inherit the first.
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: MlflowClient, home: Home, name: str) -> str:
    """Id of experiment ``name``, created on first use.

    On a local store the artifact location is ``CVM_HOME/mlflow/artifacts/<name>``;
    on a tracking server it is left to the server (proxied artifacts).
    """
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None if is_server_uri(client.tracking_uri) else _artifact_uri(home, name)
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created concurrently by another process
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        # A run cannot start in a deleted experiment; the name stays taken, so bring it back.
        log.warning("experiment %s was deleted: restoring it", name)
        client.restore_experiment(exp.experiment_id)
    if not is_server_uri(client.tracking_uri) and not _under(exp.artifact_location, home.mlflow_artifacts()):
        log.warning("experiment %s keeps its artifacts at %s, outside %s", name, exp.artifact_location,
                    home.mlflow_artifacts())
    return exp.experiment_id


def _artifact_uri(home: Home, name: str) -> str:
    return (home.mlflow_artifacts(ensure=True) / safe_name(name)).as_uri()


def _under(location: str, root: Path) -> bool:
    parsed = urlparse(location)
    path = Path(parsed.path if parsed.scheme == "file" else location)
    return path.resolve().is_relative_to(root.resolve())


@contextmanager
def _env_preserved() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in _URI_VARS}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def client_store(client: MlflowClient) -> Iterator[None]:
    """Make MLflow's fluent API use ``client``'s store for the duration.

    Several MLflow functions (``mlflow.register_model``, resolving ``runs:/`` and
    ``models:/`` URIs) ignore the client and read the global URIs; after
    :func:`configure` they already agree, this only matters for hand-made clients.
    """
    uri = client.tracking_uri
    old_tracking, old_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    if old_tracking == uri and old_registry == uri:
        yield
        return
    with _env_preserved():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        with _env_preserved():
            mlflow.set_tracking_uri(old_tracking)
            mlflow.set_registry_uri(old_registry)
