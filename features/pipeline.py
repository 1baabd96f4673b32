"""Wiring: dataset -> validated sources -> golden ids -> features -> snapshot (-> online store).

The logic lives in pure functions (``sources.validate``, ``profiles``, ``features.build``);
this module only connects them, times the steps and reports progress.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time as dtime
from pathlib import Path

import ibis
import pandas as pd

from cvm.engines import Engine, release_memory
from cvm.home import Home
from features.build import build_features
from features.config import FeatureConfig
from features.definitions import DatasetShape, FeatureSet, declare
from features.snapshot import write_snapshot
from profiles.config import ResolutionConfig
from sources.contract import CUSTOMER_KEYED
from sources.dataset import Dataset, DatasetError
from sources.load import Sources, load_sources
from sources.validate import ValidationConfig

log = logging.getLogger(__name__)

Step = Callable[[str], None]


@dataclass
class BuildResult:
    dataset: str
    as_of: date
    engine: str
    path: Path
    rows: int
    feature_set: FeatureSet
    sources: dict[str, dict]
    timings: dict[str, float] = field(default_factory=dict)
    profiles: dict | None = None

    @property
    def rows_quarantined(self) -> int:
        return sum(r["rows_quarantined"] for r in self.sources.values())


class _Timer:
    def __init__(self, step: Step | None) -> None:
        self.timings: dict[str, float] = {}
        self._step = step

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self._step:
            self._step(name)
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 3)


def main_categories(sources: Sources, dataset: Dataset, config: FeatureConfig) -> tuple[str, ...]:
    """The categories that get a spend-share column, fixed per dataset (not per date).

    Explicit lists win (feature config, then dataset.yaml); otherwise the catalog's
    categories ranked by how many products they hold: a property of the catalog, not of
    any period's sales, so it cannot leak the future into a snapshot's shape.
    """
    if config.categories:
        return tuple(config.categories)
    if dataset.config.categories:
        return tuple(dataset.config.categories)
    tx = sources["transactions"]
    if "category" not in tx.columns:
        return ()
    column = sources.category_from or dataset.config.category_column
    if sources.has("products") and column in sources["products"].columns:
        catalog = sources["products"]
        items = catalog.select("product_id", category=catalog[column].cast("string")).distinct()
        ranked = items.group_by("category").agg(n=items.product_id.nunique())
    elif "product_id" in tx.columns:
        items = tx.select("product_id", "category").distinct()
        ranked = items.group_by("category").agg(n=items.product_id.nunique())
    else:
        ranked = tx.group_by("category").agg(n=tx.count())
    ranked = ranked.filter(ranked.category.notnull()).order_by([ibis.desc("n"), "category"]).limit(
        config.top_categories)
    return tuple(sources.engine.execute(ranked)["category"].tolist())


def dataset_shape(sources: Sources, dataset: Dataset, config: FeatureConfig) -> DatasetShape:
    tx = sources["transactions"]
    attributes: tuple[tuple[str, bool], ...] = ()
    if sources.has("customers"):
        schema = sources["customers"].schema()
        attributes = tuple(
            (name, schema[name].is_numeric()) for name in schema.names
            if name not in ("customer_id", "updated_at", "source_system", "_record")
        )
    return DatasetShape(
        categories=main_categories(sources, dataset, config),
        has_discount="discount" in tx.columns,
        has_coupon_discount="coupon_discount" in tx.columns,
        has_events=sources.has("events"),
        has_contacts=sources.has("contacts"),
        has_responses=sources.has("contacts") and sources.has("responses"),
        attributes=attributes,
    )


def linked_tables(sources: Sources, as_of: date | None, home: Home | None = None,
                  config: ResolutionConfig | None = None, *,
                  golden: bool = False) -> tuple[dict[str, ibis.Table], dict | None]:
    """The source tables keyed by golden customer ids, and the resolution's stats.

    Without an ``identities`` table the tables come back as they are. Point in time: with
    ``seen_at`` on identities, only links seen before ``as_of`` count, so a snapshot for a
    date only merges what was known then. The mapping (and, with ``golden``, the golden
    records) are written under ``$CVM_HOME/profiles/<dataset>/as_of=.../``.
    """
    tables = dict(sources.tables)
    if not sources.has("identities"):
        return tables, None
    from profiles.resolve import resolve_identities

    engine = sources.engine
    identities = engine.execute(sources["identities"])
    cutoff = datetime.combine(as_of, dtime()) if as_of and "seen_at" in identities.columns else None
    resolution = resolve_identities(identities, config or ResolutionConfig(), cutoff=cutoff)
    mapping = resolution.mapping[["source_system", "source_id", "customer_id"]]
    if home is not None:
        _save_profiles(home, sources, identities, resolution, as_of, golden)
    ambiguous = mapping["source_id"].duplicated().any()
    m = engine.register(mapping.rename(columns={"customer_id": "_golden"}))
    stats = resolution.stats
    del identities, resolution, mapping
    release_memory()
    for name in CUSTOMER_KEYED:
        if name not in tables:
            continue
        t = tables[name]
        if "source_system" in t.columns:
            cond = (t.source_system == m.source_system) & (t.customer_id == m.source_id)
        elif ambiguous:
            raise DatasetError(
                f"table '{name}' has no source_system column, and some source_id values exist in "
                "several source systems of identities: add source_system to that table")
        else:
            cond = t.customer_id == m.source_id
        j = t.left_join(m, cond)
        tables[name] = j.select(
            *[t[c] for c in t.columns if c != "customer_id"],
            customer_id=ibis.coalesce(j["_golden"], t.customer_id),
            _record=t.customer_id,
        )
    return tables, stats


def _save_profiles(home: Home, sources: Sources, identities: pd.DataFrame, resolution,
                   as_of: date | None, golden: bool) -> None:
    out = home.profiles(sources.dataset.name, ensure=True)
    target = out / (f"as_of={as_of.isoformat()}" if as_of else "latest")
    target.mkdir(parents=True, exist_ok=True)
    resolution.mapping.to_parquet(target / "profile_map.parquet", index=False)
    if golden:
        from profiles.survivorship import golden_records

        customers = sources.engine.execute(sources["customers"]) if sources.has("customers") else None
        golden_records(identities, resolution, customers).to_parquet(target / "profiles.parquet", index=False)


def build_steps(dataset: Dataset) -> list[str]:
    """The named steps ``build_snapshot`` reports, in order (for progress bars)."""
    steps = ["validate sources", "declare features", "compute and write features"]
    if dataset.has("identities"):
        steps.insert(1, "resolve identities")
    return steps


def build_snapshot(
    dataset: Dataset,
    as_of: date,
    engine: Engine,
    home: Home,
    *,
    config: FeatureConfig | None = None,
    validation: ValidationConfig | None = None,
    out: Path | None = None,
    category_column: str | None = None,
    profiles: ResolutionConfig | None = None,
    replace_schema: bool = False,
    step: Step | None = None,
) -> BuildResult:
    """Build the feature snapshot of ``dataset`` for ``as_of`` and write it."""
    config = config or FeatureConfig()
    timer = _Timer(step)
    with timer("validate sources"):
        sources = load_sources(dataset, engine, validation=validation,
                               quarantine_dir=home.quarantine(dataset.name, ensure=True),
                               category_column=category_column)
    tables, profile_stats = sources.tables, None
    if sources.has("identities"):
        with timer("resolve identities"):
            tables, profile_stats = linked_tables(sources, as_of, home, profiles)
    with timer("declare features"):
        fs = declare(config, dataset_shape(sources, dataset, config))
        expr = build_features(tables, as_of, fs)
    root = out or home.features(dataset.name)
    meta = {
        "dataset": dataset.name,
        "dataset_root": str(dataset.root),
        "engine": engine.name,
        "built_at": datetime.now().isoformat(timespec="seconds"),
        "sources": {k: v.as_dict() for k, v in sources.reports.items()},
        "profiles": profile_stats,
    }
    with timer("compute and write features"):
        path, rows = write_snapshot(root, as_of, fs, lambda d: engine.write_parquet(expr, d), meta,
                                    replace_schema=replace_schema)
    log.info("feature snapshot %s: %d customers, %d features", path, rows, len(fs.features))
    return BuildResult(dataset.name, as_of, engine.name, path, rows, fs,
                       {k: v.as_dict() for k, v in sources.reports.items()}, timer.timings, profile_stats)
