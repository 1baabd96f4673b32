"""Wiring: dataset -> validated sources -> golden ids -> features -> snapshot (-> online store).

The logic lives in pure functions (``sources.validate``, ``profiles``, ``features.build``);
this module only connects them, times the steps and reports progress.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import ibis

from base.dates import cutoff
from base.engines import Engine
from base.home import Home
from features.build import build_features, data_before, open_carts
from features.config import FeatureConfig
from features.definitions import DatasetShape, FeatureSet, declare
from features.snapshot import CONTACT_COLUMNS, CONTACTS_DIR, FRESH_DIR, OPEN_CARTS_DIR, write_snapshot
from profiles.config import ResolutionConfig
from profiles.link import linked_tables
from sources.dataset import Dataset
from sources.event_log.open import open_event_log
from sources.event_log.source import with_event_log
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


def contacts_before(tables: dict[str, ibis.Table], as_of: date) -> ibis.Table | None:
    """The campaign contacts strictly before ``as_of`` (golden customer ids), published with
    the snapshot for the offer engine's caps and cooldowns; None without a contacts table."""
    if "contacts" not in tables:
        return None
    c = tables["contacts"]
    c = c.filter(c.timestamp < ibis.timestamp(cutoff(as_of)))
    return c.select(customer_id=c.customer_id.cast("string"), campaign_id=c.campaign_id.cast("string"),
                    timestamp=c.timestamp).order_by(list(CONTACT_COLUMNS))


def _with_log(tables: dict[str, ibis.Table], home: Home, dataset_name: str, engine: Engine
              ) -> tuple[dict[str, ibis.Table], dict[str, int]]:
    """``tables`` with the events posted to POST /events (golden ids already) appended, so that
    tonight's features see today's purchases; and how many rows each table got."""
    log_of_events = open_event_log(home, dataset_name)
    try:
        return with_event_log(tables, log_of_events, engine)
    finally:
        log_of_events.close()


def source_tables(dataset: Dataset, as_of: date, engine: Engine, home: Home, *,
                  tables: tuple[str, ...] | None = None, validation: ValidationConfig | None = None,
                  category_column: str | None = None, profiles: ResolutionConfig | None = None
                  ) -> dict[str, ibis.Table]:
    """The source tables a snapshot of ``as_of`` is built from, as ``build_snapshot`` reads them:
    validated (bad rows left out; nothing is quarantined or saved here), keyed by golden ids,
    with the event log appended. ``tables`` limits which are read (identities and products are
    added when the dataset has them: they decide the ids and the categories). For readers that
    need the rows behind a snapshot (the event counts of customer segments)."""
    wanted = None
    if tables is not None:
        wanted = tuple(dict.fromkeys((*tables, *(t for t in ("identities", "products") if dataset.has(t)))))
    sources = load_sources(dataset, engine, validation=validation, tables=wanted, category_column=category_column)
    linked = sources.tables
    if sources.has("identities"):
        linked, _ = linked_tables(sources, as_of, None, profiles)
    return _with_log(linked, home, dataset.name, engine)[0]


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
    fresh: bool = True,
) -> BuildResult:
    """Build the feature snapshot of ``dataset`` for ``as_of`` and write it. With ``fresh``, also
    base(as_of + 1) and the open carts the service brings up to the last event with
    (``features.fresh``)."""
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
    tables, from_log = _with_log(tables, home, dataset.name, engine)
    with timer("declare features"):
        # the shape (main categories...) counts the event log's purchases as the files' own
        shaped = replace(sources, tables={**sources.tables, **{k: tables[k] for k in from_log}})
        fs = declare(config, dataset_shape(shaped, dataset, config))
        expr = build_features(tables, as_of, fs)
        contacts = contacts_before(tables, as_of)
        if fresh:
            morning = data_before(tables, as_of)
            tomorrow = build_features(morning, as_of + timedelta(days=1), fs)
            carts = open_carts(tables, as_of, fs)
    root = out or home.features(dataset.name)
    meta = {
        "dataset": dataset.name,
        "dataset_root": str(dataset.root),
        "engine": engine.name,
        "built_at": datetime.now().isoformat(timespec="seconds"),
        "sources": {k: v.as_dict() for k, v in sources.reports.items()},
        "profiles": profile_stats,
        "event_log_rows": from_log,
    }
    def write(staged: Path) -> None:
        engine.write_parquet(expr, staged)
        if contacts is not None:
            engine.write_parquet(contacts, staged / CONTACTS_DIR)
        if fresh:
            engine.write_parquet(tomorrow, staged / FRESH_DIR)
            if carts is not None:
                engine.write_parquet(carts, staged / OPEN_CARTS_DIR)

    with timer("compute and write features"):
        path, rows = write_snapshot(root, as_of, fs, write, meta, replace_schema=replace_schema)
    log.info("feature snapshot %s: %d customers, %d features", path, rows, len(fs.features))
    return BuildResult(dataset.name, as_of, engine.name, path, rows, fs,
                       {k: v.as_dict() for k, v in sources.reports.items()}, timer.timings, profile_stats)
