"""Service settings, from environment variables (``cvm serve`` sets them from its options).

========================== ==================================================================
``CVM_HOME``               state directory (online store, MLflow database), default ./cvm_home
``CVM_DATASET``            dataset whose published snapshot is served (default completejourney)
``CVM_CATALOG``            offer catalog YAML (default serving/catalogs/<dataset>.yaml)
``CVM_API_KEYS``           comma-separated bearer keys clients must send
``CVM_API_KEYS_FILE``      or a file with one key per line (a mounted secret); default
                           ``$CVM_HOME/secrets/api-keys`` when it exists (``make demo`` writes it)
``CVM_ADMIN_KEYS``         keys allowed on /admin/reload (or ``CVM_ADMIN_KEYS_FILE``)
``CVM_NO_AUTH``            ``1``: accept requests without a key (local use only, warned loudly)
``CVM_RELOAD_SECONDS``     how often champions and the snapshot are checked (default 30, 0: never)
``CVM_WORKERS``            worker processes (default 1), read when BentoML loads the service
``CVM_MODEL_SOURCE``       ``mlflow`` (the registry) or ``bentoml`` (models packed in a Bento)
``MLFLOW_TRACKING_URI``    registry location (default: the SQLite database under CVM_HOME)
========================== ==================================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: a key shorter than this is refused: it could be guessed
MIN_KEY_LENGTH = 16


class SettingsError(ValueError):
    """A setting the service cannot start with; the message names the variable."""


def _keys(value: str | None, file: str | None, what: str) -> tuple[str, ...]:
    keys: list[str] = [k.strip() for k in (value or "").split(",") if k.strip()]
    if file:
        try:
            keys += [line.strip() for line in Path(file).read_text().splitlines()
                     if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise SettingsError(f"{what}_FILE={file} cannot be read: {exc.strerror}") from None
    short = [k for k in keys if len(k) < MIN_KEY_LENGTH]
    if short:
        raise SettingsError(f"{what}: {len(short)} key(s) shorter than {MIN_KEY_LENGTH} characters; "
                            "generate one with: cvm serve --new-key")
    return tuple(dict.fromkeys(keys))


def default_keys_file(home: Path) -> Path:
    return Path(home) / "secrets" / "api-keys"


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path
    dataset: str = "completejourney"
    catalog: Path | None = None
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    no_auth: bool = False
    reload_seconds: float = Field(30.0, ge=0)
    model_source: Literal["mlflow", "bentoml"] = "mlflow"
    tracking_uri: str = ""

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("CVM_DATASET is empty")
        return v

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, in_bento: bool = False) -> "ServiceSettings":
        from cvm.home import Home

        e = dict(os.environ if env is None else env)
        home = Home.from_env(e.get("CVM_HOME"))
        try:
            reload_seconds = float(e.get("CVM_RELOAD_SECONDS", "30"))
        except ValueError:
            raise SettingsError(f"CVM_RELOAD_SECONDS must be a number of seconds, got {e['CVM_RELOAD_SECONDS']!r}") \
                from None
        keys_file = e.get("CVM_API_KEYS_FILE")
        if not keys_file and not e.get("CVM_API_KEYS") and default_keys_file(home.root).exists():
            keys_file = str(default_keys_file(home.root))
        source = e.get("CVM_MODEL_SOURCE") or ("bentoml" if in_bento else "mlflow")
        if source not in ("mlflow", "bentoml"):
            raise SettingsError(f"CVM_MODEL_SOURCE must be 'mlflow' or 'bentoml', got {source!r}")
        settings = cls(
            home=home.root, dataset=e.get("CVM_DATASET", "completejourney"),
            catalog=Path(e["CVM_CATALOG"]) if e.get("CVM_CATALOG") else None,
            api_keys=_keys(e.get("CVM_API_KEYS"), keys_file, "CVM_API_KEYS"),
            admin_keys=_keys(e.get("CVM_ADMIN_KEYS"), e.get("CVM_ADMIN_KEYS_FILE"), "CVM_ADMIN_KEYS"),
            no_auth=e.get("CVM_NO_AUTH", "").lower() in ("1", "true", "yes"),
            reload_seconds=reload_seconds, model_source=source,  # type: ignore[arg-type]
            tracking_uri=e.get("MLFLOW_TRACKING_URI") or home.mlflow_tracking_uri(),
        )
        if not settings.api_keys and not settings.no_auth:
            raise SettingsError("no API key configured: set CVM_API_KEYS (comma-separated) or CVM_API_KEYS_FILE, "
                                "or CVM_NO_AUTH=1 for local use only")
        return settings
