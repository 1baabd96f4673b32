"""Build a dataset's snapshot for a date and publish it to the online store: the job behind
``cvm features build [--publish]``, ``cvm features publish`` and the nightly batch's
feature step.

Publishing hands the serving layer everything it needs from a snapshot, so that no
reader goes back to the raw sources: the feature rows, the feature configuration they
were computed with (windows the offer values are scaled by), the contact history
before ``as_of`` (caps and cooldowns) and base(as_of + 1) with the open carts, which the
service brings up to the last event with (``features.online_fresh``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from base.dates import partition_dir
from base.engines import Engine, EngineName, open_engine
from base.errors import InputError
from base.home import Home
from features.build_config import BuildConfig
from features.online import open_online_store
from features.online_fresh import publish_fresh
from features.online_store import PublishedSnapshot
from features.pipeline import BuildResult, build_snapshot
from features.snapshot import CONTACTS_DIR, read_metadata
from sources.dataset import Dataset, DatasetError, resolve_dataset

ENGINES: tuple[EngineName, ...] = ("duckdb", "spark")


@dataclass
class Built:
    result: BuildResult
    published: PublishedSnapshot | None


def check_engine(engine: str, spark_master: str | None = None) -> EngineName:
    """``engine`` if it is one of ``ENGINES``; ``InputError`` naming the choices otherwise."""
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r}: choose duckdb or spark")
    if spark_master and engine != "spark":
        raise InputError("--spark-master needs --engine spark")
    return engine  # type: ignore[return-value]


def build_and_publish(dataset: Dataset, as_of: date, home: Home, *, config: BuildConfig | None = None,
                      engine: str | Engine = "duckdb", spark_master: str | None = None, out: Path | None = None,
                      category_column: str | None = None, publish: bool = False, replace_schema: bool = False,
                      step: Callable[[str], None] | None = None) -> Built:
    """Build the snapshot of ``dataset`` as of ``as_of`` (and publish it). An engine named
    here is opened for the build and closed on every path out; an open ``Engine`` passed
    in is used and left open for its owner."""
    if publish and out is not None:
        raise InputError("--publish publishes the snapshot under CVM_HOME; it cannot be combined with --out")
    cfg = config or BuildConfig()
    with ExitStack() as stack:
        if isinstance(engine, str):
            name = check_engine(engine, spark_master)
            eng = stack.enter_context(open_engine(name, spark_master=spark_master, temp_dir=home.tmp(ensure=True)))
        else:
            eng = engine
        result = build_snapshot(dataset, as_of, eng, home, config=cfg.features, validation=cfg.validation,
                                profiles=cfg.profiles, out=out, category_column=category_column,
                                replace_schema=replace_schema, step=step)
    published = publish_snapshot(home, dataset.name, result.path, as_of) if publish else None
    return Built(result, published)


def publish_snapshot(home: Home, dataset_name: str, snapshot_dir: Path, as_of: date) -> PublishedSnapshot:
    """Make a built snapshot the one the serving layer reads (atomic switch), with its
    feature configuration and its contact history."""
    meta = read_metadata(snapshot_dir.parent, as_of)
    contacts = snapshot_dir / CONTACTS_DIR
    store = open_online_store(home, dataset_name)
    try:
        published = store.publish(snapshot_dir, as_of=as_of,
                                  metadata={"fingerprint": meta.get("fingerprint"), "dataset": dataset_name,
                                            "feature_config": meta.get("feature_config")},
                                  contacts=contacts if contacts.exists() else None)
    finally:
        store.close()
    # what the service brings the vectors up to the last event with (features.fresh)
    publish_fresh(home.online(dataset_name), snapshot_dir, as_of, published.version)
    return published


def publish_built(home: Home, dataset_spec: str, as_of: date) -> PublishedSnapshot:
    """Publish the snapshot already built for ``as_of`` (``cvm features publish``)."""
    name = resolve_dataset(dataset_spec, home).name
    path = partition_dir(home.features(name), as_of)
    if not path.exists():
        raise DatasetError(f"no snapshot for {name} as_of {as_of}: run `cvm features build --dataset "
                           f"{dataset_spec} --as-of {as_of}` first")
    return publish_snapshot(home, name, path, as_of)
