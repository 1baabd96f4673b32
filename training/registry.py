"""Champion/challenger registration of the task models in the MLflow model registry.

Every trained model becomes a new version of ``cvm-<task>`` with alias
``challenger``. It takes alias ``champion`` only if it is at least as good as the
current champion *measured on the new run's test snapshot* (the caller evaluates
the champion there): comparing metrics logged on different snapshots would
compare the data, not the models.

How the previous champion is remembered, so that ``rollback`` works:

* alias ``previous-champion`` points at the version that was champion before the
  current one (what ``rollback`` restores; visible in the MLflow UI);
* tag ``champion_history`` on the registered model is a JSON stack of the
  successive champions (``version``, ``since``, ``reason``), newest last. After a
  rollback the stack is popped and ``previous-champion`` moves one step further
  back, so repeated rollbacks walk back through the history.

Aliases, not the deprecated stages, are the source of truth for serving
(``models:/cvm-churn@champion``). Nothing here holds customer data: tags carry
dates, fingerprints and metric values only.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from training.tasks import MODEL_SPECS

log = logging.getLogger(__name__)


CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
HISTORY_TAG = "champion_history"
# Version tags written by the training run (see training.pipeline) and shown by list_versions.
DATA_TAGS = ("as_of", "data_fingerprint", "feature_set", "horizon_days")
_HISTORY_MAX = 100  # champions remembered; older ones only survive in the versions' own tags
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


class RegistryError(ValueError):
    """A registry request the user can correct (unknown task or version, nothing to roll back)."""


@dataclass(frozen=True)
class GateDecision:
    """What happened to a version: the answer ``cvm train`` and ``cvm models`` print."""

    name: str
    version: str
    promoted: bool
    reason: str
    new_value: float
    champion_version: str | None
    champion_value: float | None


def resolve(task_or_name: str) -> tuple[str, str]:
    """``(task, registered name)`` for a task (``churn``) or a registered name (``cvm-churn``)."""
    for task, s in MODEL_SPECS.items():
        if task_or_name in (task, s.model_name):
            return task, s.model_name
    choices = ", ".join(f"{t} ({s.model_name})" for t, s in MODEL_SPECS.items())
    raise RegistryError(f"unknown task or model {task_or_name!r}: choose one of {choices}")


def register_and_gate(client: MlflowClient, task: str, model_uri: str, new_value: float,
                      champion_value: Callable[[str], float | None],
                      tags: dict[str, str] | None = None) -> GateDecision:
    """Register ``model_uri`` as a new version of the task's model and decide whether it becomes champion.

    ``new_value`` is the new model's primary metric on its test snapshot;
    ``champion_value(uri)`` must return the current champion's value on the same
    snapshot, or None when the champion cannot be scored there (another feature
    set, say) -- then nothing is promoted automatically, because no fair
    comparison exists.
    """
    import mlflow

    from training.tracking import client_store

    task, name = resolve(task)
    metric = MODEL_SPECS[task].primary
    version_tags = {**(tags or {}), metric: _fmt_tag(new_value)}
    with client_store(client):
        created = mlflow.register_model(model_uri, name, tags=version_tags)
    version = str(created.version)
    client.set_registered_model_alias(name, CHALLENGER, version)

    champion = _aliases(client, name).get(CHAMPION)
    champ_value: float | None = None
    if champion is None:
        promoted, reason = True, f"first version: no champion yet ({metric} {new_value:.6g})"
    else:
        champ_value = _evaluate_champion(champion_value, f"models:/{name}@{CHAMPION}", name, champion)
        promoted, reason = _gate(task, version, new_value, champion, champ_value)
    if promoted:
        _move_champion(client, name, version, reason)
    for key, value in {"gate_decision": "promoted" if promoted else "champion_kept", "gate_reason": reason,
                       "gate_champion_version": champion or "",
                       "gate_champion_value": "" if champ_value is None else _fmt_tag(champ_value)}.items():
        client.set_model_version_tag(name, version, key, value)
    log.info("%s version %s: %s", name, version, reason)
    return GateDecision(name, version, promoted, reason, float(new_value), champion, champ_value)


def _evaluate_champion(champion_value: Callable[[str], float | None], uri: str, name: str,
                       champion: str) -> float | None:
    # An unusable champion must not make training fail after the new model is logged:
    # it is reported as "cannot be evaluated" and the decision is left to a person.
    try:
        value = champion_value(uri)
    except Exception as exc:  # noqa: BLE001 -- any failure means "not comparable"
        log.warning("%s champion version %s could not be evaluated: %s: %s", name, champion,
                    type(exc).__name__, exc)
        return None
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _gate(task: str, version: str, new: float, champion: str, old: float | None) -> tuple[bool, str]:
    metric, better = MODEL_SPECS[task].primary, MODEL_SPECS[task].direction
    if old is None:
        return False, (f"champion version {champion} cannot be evaluated on this test snapshot: it stays champion "
                       f"and version {version} ({metric} {new:.6g}) stays challenger; promote by hand if wanted "
                       f"(cvm models promote {task} {version})")
    if not math.isfinite(new):
        return False, f"{metric} of version {version} is {new}: champion version {champion} ({old:.6g}) kept"
    wins = new >= old if better == "max" else new <= old
    rel, direction = (">=" if wins else "<", "higher") if better == "max" else ("<=" if wins else ">", "lower")
    verdict = "promoted" if wins else f"champion version {champion} kept"
    return wins, (f"{metric} {new:.6g} {rel} champion version {champion} {old:.6g} "
                  f"on the same test snapshot ({direction} is better): {verdict}")


def promote(client: MlflowClient, task_or_name: str, version: str, reason: str = "manual") -> GateDecision:
    """Make ``version`` the champion by hand, without the gate (the previous champion is remembered)."""
    task, name = resolve(task_or_name)
    metric = MODEL_SPECS[task].primary
    version = _version(client, name, version)
    champion = _aliases(client, name).get(CHAMPION)
    tags = client.get_model_version(name, version).tags
    champ_value = _tag_value(client, name, champion, metric) if champion else None
    if champion == version:
        return GateDecision(name, version, False, f"version {version} is already the champion: nothing to do",
                            _tag_float(tags, metric), champion, champ_value)
    why = f"promoted by hand: {reason}" + (f" (champion was version {champion})" if champion else "")
    _move_champion(client, name, version, why)
    log.info("%s version %s: %s", name, version, why)
    return GateDecision(name, version, True, why, _tag_float(tags, metric), champion, champ_value)


def rollback(client: MlflowClient, task_or_name: str) -> GateDecision:
    """Give the champion alias back to the previous champion; repeated calls walk further back."""
    task, name = resolve(task_or_name)
    metric = MODEL_SPECS[task].primary
    aliases = _aliases(client, name, must_exist=True)
    current, previous = aliases.get(CHAMPION), aliases.get(PREVIOUS)
    if current is None:
        raise RegistryError(f"{name} has no champion: nothing to roll back")
    if previous is None:
        raise RegistryError(f"{name} has no previous champion to roll back to (champion is version {current})")
    previous = _version(client, name, previous)

    history = _history(client, name)
    if history and history[-1]["version"] == current:
        history.pop()
    if not history or history[-1]["version"] != previous:  # aliases moved outside this module: trust them
        history.append({"version": previous, "since": None, "reason": "restored by rollback"})
    earlier = history[-2]["version"] if len(history) >= 2 else None

    client.set_registered_model_alias(name, CHAMPION, previous)
    if earlier and earlier != previous:
        client.set_registered_model_alias(name, PREVIOUS, earlier)
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    _write_history(client, name, history)
    client.set_model_version_tag(name, current, "rolled_back", f"{_now()}: champion returned to version {previous}")
    reason = f"rollback: champion version {current} -> version {previous}"
    log.info("%s: %s", name, reason)
    return GateDecision(name, previous, True, reason, _tag_value(client, name, previous, metric),
                        current, _tag_value(client, name, current, metric))


def list_versions(client: MlflowClient, tasks: list[str] | None = None) -> list[dict[str, Any]]:
    """Every registered version of the given tasks (all by default), newest first per model.

    Models that were never registered are skipped; an empty list means nothing is registered.
    """
    names = [resolve(t) for t in tasks] if tasks else [(t, s.model_name) for t, s in MODEL_SPECS.items()]
    rows: list[dict[str, Any]] = []
    for task, name in names:
        aliases_of: dict[str, list[str]] = {}
        for alias, version in _aliases(client, name).items():
            aliases_of.setdefault(str(version), []).append(alias)
        metric = MODEL_SPECS[task].primary
        for mv in sorted(_all_versions(client, name), key=lambda v: int(v.version), reverse=True):
            tags = mv.tags or {}
            rows.append({
                "name": name, "task": task, "version": str(mv.version),
                "aliases": sorted(aliases_of.get(str(mv.version), [])),
                "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC)
                .isoformat(timespec="seconds"),
                "run_id": mv.run_id,
                "metric": metric, "value": _tag_float(tags, metric, default=None),
                **{k: tags.get(k) for k in DATA_TAGS},
                "gate_decision": tags.get("gate_decision"),
            })
    return rows


# --------------------------------------------------------------------------- helpers
def _move_champion(client: MlflowClient, name: str, version: str, reason: str) -> None:
    """Champion -> ``version``; the outgoing champion becomes ``previous-champion`` and is pushed on the history."""
    current = _aliases(client, name).get(CHAMPION)
    if current == version:
        return
    history = _history(client, name)
    if current is not None and (not history or history[-1]["version"] != current):
        history.append({"version": current, "since": None, "reason": "champion before history was kept"})
    history.append({"version": version, "since": _now(), "reason": reason[:300]})
    # The alias is what serving reads: move it first, bookkeeping after.
    client.set_registered_model_alias(name, CHAMPION, version)
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, current)
    _write_history(client, name, history[-_HISTORY_MAX:])


def _aliases(client: MlflowClient, name: str, must_exist: bool = False) -> dict[str, str]:
    try:
        return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}
    except MlflowException as exc:
        if exc.error_code != _NOT_FOUND:
            raise
        if must_exist:
            raise RegistryError(f"no registered model {name}: train one first (cvm train)") from None
        return {}


def _version(client: MlflowClient, name: str, version: str) -> str:
    """The version as MLflow spells it ("v3" and "03" accepted), checked to exist."""
    v = str(version).strip()
    v = v[1:] if v[:1] in ("v", "V") else v
    if not (v.isascii() and v.isdigit()):  # "²".isdigit() too, but int() refuses it
        raise RegistryError(f"version {version!r} is not a version number")
    v = str(int(v))  # "03" is version 3: aliases and the history compare the canonical spelling
    _aliases(client, name, must_exist=True)
    try:
        client.get_model_version(name, v)
    except MlflowException as exc:
        if exc.error_code != _NOT_FOUND:
            raise
        known = ", ".join(sorted((str(m.version) for m in _all_versions(client, name)), key=int)) or "none"
        raise RegistryError(f"{name} has no version {v} (versions: {known})") from None
    return v


def _all_versions(client: MlflowClient, name: str) -> list:
    found, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{name}'", page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _history(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    try:
        raw = client.get_registered_model(name).tags.get(HISTORY_TAG)
    except MlflowException as exc:
        if exc.error_code != _NOT_FOUND:
            raise
        return []
    try:
        history = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        log.warning("%s: unreadable %s tag, starting a new history", name, HISTORY_TAG)
        return []
    return [h for h in history if isinstance(h, dict) and "version" in h]


def _write_history(client: MlflowClient, name: str, history: list[dict[str, Any]]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history, separators=(",", ":")))


def _tag_value(client: MlflowClient, name: str, version: str | None, metric: str) -> float:
    if version is None:
        return math.nan
    return _tag_float(client.get_model_version(name, version).tags, metric)


def _tag_float(tags: dict[str, str], key: str, default: float | None = math.nan) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, TypeError, ValueError):
        return default


def _fmt_tag(value: float) -> str:
    return repr(float(value))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
