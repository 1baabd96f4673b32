"""Service settings, from environment variables (``cvm serve`` sets them from its options),
read when the service starts (never at import).

========================== ==================================================================
``CVM_HOME``               state directory (online store, MLflow database), default ./cvm_home
``CVM_DATASET``            dataset whose published snapshot is served (default completejourney)
``CVM_CATALOG``            offer catalog YAML (default scoring/catalogs/<dataset>.yaml)
``CVM_API_KEYS``           comma-separated bearer keys clients must send
``CVM_API_KEYS_FILE``      or a file with one key per line (a mounted secret); default
                           ``$CVM_HOME/secrets/api-keys`` when it exists (``make demo`` writes it)
``CVM_ADMIN_KEYS``         keys allowed on /admin/reload (or ``CVM_ADMIN_KEYS_FILE``)
``CVM_NO_AUTH``            ``1``: accept requests without a key (local use only, warned loudly)
``CVM_RELOAD_SECONDS``     how often champions and the snapshot are checked (default 30, 0: never)
``CVM_MODEL_SOURCE``       ``mlflow`` (the registry) or ``bentoml`` (models packed in a Bento)
``CVM_SIMULATION_CLOCK``   ``1``: /recommend accepts ``at`` (the decision's time), for ``cvm simulate
                           --url`` driving simulated days; never on a production server
``CVM_DECISIONS_URL``      the decision log: ``postgresql://user@host:port/db`` (default: SQLite
                           under ``$CVM_HOME/decisions/<dataset>/``, shared by the workers)
``CVM_TRIGGERS``           trigger rules YAML (``scoring.triggers.rules``): fired decisions go to the
                           outbox and the webhook; the HMAC key is in the variable the file names
``MLFLOW_TRACKING_URI``    registry location (default: the SQLite database under CVM_HOME)
========================== ==================================================================

The number of worker processes is BentoML's own setting: ``cvm serve --workers N`` passes
it in ``BENTOML_CONFIG_OVERRIDES`` (``{"services": {"cvm-scoring": {"workers": N}}}``).

``ServiceEnv`` is the variables as they are (pydantic-settings, one typed field per
variable); ``ServiceSettings`` is what the service runs with, resolved from them: the home
made absolute, keys read from their files and checked, the registry URI filled in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from base.home import DEFAULT_HOME, Home

#: a key shorter than this is refused: it could be guessed
MIN_KEY_LENGTH = 16
#: the BentoML service name (``@bentoml.service(name=...)``), which its worker setting is keyed by
SERVICE_NAME = "cvm-scoring"

#: the environment ``ServiceEnv`` reads (None: the process's own)
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("cvm_service_environ", default=None)


class SettingsError(ValueError):
    """A setting the service cannot start with; the message names the variable."""


class _Environ(EnvSettingsSource):
    """The process environment, or the mapping ``ServiceSettings.from_env`` was given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENVIRON.get()
        return parse_env_vars(os.environ if env is None else env, self.case_sensitive, self.env_ignore_empty,
                              self.env_parse_none_str)


def _split(value: object) -> object:
    """``a,b, c`` -> ``("a", "b", "c")``; a tuple or list passes through."""
    if isinstance(value, str):
        return tuple(k.strip() for k in value.split(",") if k.strip())
    return value


class ServiceEnv(BaseSettings):
    """The service's environment variables, typed (each field is ``CVM_`` + its name, upper case)."""

    model_config = SettingsConfigDict(env_prefix="CVM_", case_sensitive=False, extra="forbid", frozen=True)

    home: str | None = Field(None, description="State directory (default ./cvm_home).")
    dataset: str = Field("completejourney", description="Dataset whose published snapshot is served.")
    catalog: Path | None = Field(None, description="Offer catalog YAML (default: the dataset's shipped one).")
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field((), description="Comma-separated bearer keys.")
    api_keys_file: Path | None = Field(None, description="File with one bearer key per line.")
    admin_keys: Annotated[tuple[str, ...], NoDecode] = Field((), description="Keys allowed on /admin/*.")
    admin_keys_file: Path | None = Field(None, description="File with one admin key per line.")
    no_auth: bool = Field(False, description="Accept requests without a key (local use only).")
    simulation_clock: bool = Field(False, description="Let /recommend callers set the decision time (simulations).")
    reload_seconds: float = Field(30.0, ge=0, description="Seconds between checks for new champions and "
                                  "snapshots (0: only on /admin/reload).")
    model_source: Literal["mlflow", "bentoml"] | None = Field(
        None, description="Where champions come from (default: bentoml inside a Bento, else mlflow).")
    decisions_url: str | None = Field(None, description="Decision log (postgresql://...; default SQLite "
                                      "under CVM_HOME).")
    triggers: Path | None = Field(None, description="Trigger rules YAML (none: no triggers).")
    mlflow_tracking_uri: str | None = Field(None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI"),
                                            description="Model registry (default: SQLite under CVM_HOME).")

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)

    @field_validator("decisions_url")
    @classmethod
    def _decisions_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError("expected postgresql://user@host:port/database or sqlite:///path")
        return value

    @field_validator("home", "mlflow_tracking_uri", "catalog", "decisions_url", "api_keys_file",
                     "admin_keys_file", "triggers", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("no_auth", "simulation_clock", mode="before")
    @classmethod
    def _empty_is_false(cls, value: object) -> object:
        return False if value == "" else value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings, _Environ(settings_cls))


def _read_keys(file: Path | None, what: str) -> list[str]:
    if file is None:
        return []
    try:
        return [line.strip() for line in Path(file).read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    except OSError as exc:
        raise SettingsError(f"{what}_FILE={file} cannot be read: {exc.strerror}") from None


def _keys(listed: tuple[str, ...], file: Path | None, what: str) -> tuple[str, ...]:
    keys = [*listed, *_read_keys(file, what)]
    short = [k for k in keys if len(k) < MIN_KEY_LENGTH]
    if short:
        raise SettingsError(f"{what}: {len(short)} key(s) shorter than {MIN_KEY_LENGTH} characters; "
                            "generate one with: cvm serve --new-key")
    return tuple(dict.fromkeys(keys))


def default_keys_file(home: Path) -> Path:
    return Path(home) / "secrets" / "api-keys"


class ServiceSettings(BaseModel):
    """What the service runs with, resolved from ``ServiceEnv``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path
    dataset: str = "completejourney"
    catalog: Path | None = None
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    no_auth: bool = False
    simulation_clock: bool = False
    reload_seconds: float = Field(30.0, ge=0)
    model_source: Literal["mlflow", "bentoml"] = "mlflow"
    tracking_uri: str = ""
    decisions_url: str | None = None
    triggers: Path | None = None

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("CVM_DATASET is empty")
        return v

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, in_bento: bool = False) -> ServiceSettings:
        """The settings from ``env`` (default: the process environment); ``SettingsError``
        naming the variable when one cannot be used."""
        token = _ENVIRON.set(None if env is None else dict(env))
        try:
            raw = ServiceEnv()
        except ValidationError as exc:
            problems = "; ".join(f"{_variable(e['loc'])}: {e['msg']}" for e in exc.errors())
            raise SettingsError(problems) from None
        finally:
            _ENVIRON.reset(token)
        home = Home.from_env(raw.home or DEFAULT_HOME)
        keys_file = raw.api_keys_file
        if keys_file is None and not raw.api_keys and default_keys_file(home.root).exists():
            keys_file = default_keys_file(home.root)
        settings = cls(
            home=home.root, dataset=raw.dataset, catalog=raw.catalog,
            api_keys=_keys(raw.api_keys, keys_file, "CVM_API_KEYS"),
            admin_keys=_keys(raw.admin_keys, raw.admin_keys_file, "CVM_ADMIN_KEYS"),
            no_auth=raw.no_auth, simulation_clock=raw.simulation_clock, reload_seconds=raw.reload_seconds,
            model_source=raw.model_source or ("bentoml" if in_bento else "mlflow"),
            tracking_uri=raw.mlflow_tracking_uri or home.default_mlflow_uri(),
            decisions_url=raw.decisions_url, triggers=raw.triggers,
        )
        if not settings.api_keys and not settings.no_auth:
            raise SettingsError("no API key configured: set CVM_API_KEYS (comma-separated) or CVM_API_KEYS_FILE, "
                                "or CVM_NO_AUTH=1 for local use only")
        return settings


def _variable(loc: tuple) -> str:
    """The environment variable a validation error is about."""
    if not loc:
        return "environment"
    name = str(loc[0])
    return name.upper() if name.upper().startswith("MLFLOW_") else f"CVM_{name.upper()}"
