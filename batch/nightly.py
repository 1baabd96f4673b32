"""The nightly job: rescore every customer as of a date, end to end (``cvm score-batch``).

Build the feature snapshot of the date (or reuse it), load the champions and the offer
catalog, score every customer in chunks (DuckDB/pandas) or over Spark executors, check
that each customer was scored exactly once, swap the outputs in atomically and publish
the snapshot for the service. Every input the scoring reads beyond the models comes with
the snapshot: its feature windows and its contact history.

Failures carry the exit code a scheduler acts on (``BatchError.exit_code``): 2 bad input
or configuration (nothing written), 3 reconciliation failed, 1 anything else; an
``OSError`` while writing (disk full, permissions) leaves the previous output in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from base.dates import cutoff, partition_dir
from base.engines import open_engine
from base.errors import InputError
from base.home import Home
from batch.job import BatchError, BatchResult, parquet_rows, run_scoring
from batch.score import BatchDecision
from batch.segments_job import NightlySegments, prepare_nightly
from features.build_config import BuildConfig
from features.definitions import feature_set_from_dict
from features.publish import build_and_publish, check_engine, publish_snapshot
from features.snapshot import (
    SchemaMismatchError,
    data_files,
    feature_config,
    read_contacts,
    read_metadata,
    read_schema,
)
from scoring.catalog import Catalog, CatalogError, load_catalog, no_catalog_message, resolve_catalog_path
from scoring.champions import (
    Champion,
    ModelLoadError,
    NotReadyError,
    RegistrySource,
    categories_of,
    model_versions,
)
from scoring.contacts import ContactHistory
from scoring.decisions import DecisionStoreUnavailable, open_decision_store, to_us
from scoring.live import since_us
from scoring.segments.definitions import SegmentError, load_segments, resolve_segments_path
from scoring.uplift_scores import missing_columns
from sources.dataset import DatasetError, resolve_dataset

log = logging.getLogger(__name__)


class BadInputError(BatchError):
    """The dataset, the configuration, the catalog or the registry cannot be used: nothing is written."""

    exit_code = 2


@dataclass
class NightlyResult:
    batch: BatchResult
    as_of: date
    seconds: float
    features_seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> dict:
        return self.batch.manifest

    @property
    def out_dir(self) -> Path:
        return self.batch.out_dir


def run_nightly(as_of: date, home: Home, *, dataset: str = "completejourney", out: Path | None = None,
                config: BuildConfig | None = None, catalog_path: Path | None = None, k: int = 3,
                publish: bool = True, engine: str = "duckdb", spark_master: str | None = None,
                say: Callable[[str], None] | None = None,
                progress: Callable[[int, int], None] | None = None, decisions_url: str | None = None,
                decided_us: int | None = None, segments_path: Path | None = None) -> NightlyResult:
    """Score every customer of ``dataset`` as of ``as_of`` and write the outputs under
    ``out`` (default ``$CVM_HOME/batch/<dataset>``), in ``as_of=DATE/``.

    ``say`` receives one line per notable step; ``progress(done, total)`` the customers scored.
    With a catalog, every customer is a decision logged in the decision log
    (``decisions_url``, default the dataset's embedded log) at ``decided_us`` (default the start of ``as_of``)
    before the outputs are published; the log's live contacts count toward the caps."""
    tell = say or log.info
    t0 = time.perf_counter()
    warnings: list[str] = []
    try:
        engine_name = check_engine(engine, spark_master)
        ds = resolve_dataset(dataset, home)
    except (InputError, DatasetError) as exc:
        raise BadInputError(str(exc)) from None
    snap_dir = partition_dir(home.features(ds.name), as_of)
    with ExitStack() as stack:
        spark = None
        if engine_name == "spark":  # one JVM for the feature build and the scoring, stopped at the end
            spark = stack.enter_context(open_engine("spark", spark_master=spark_master,
                                                    temp_dir=home.tmp(ensure=True)))
        if snap_dir.exists():
            tell(f"reusing the feature snapshot {snap_dir}")
        else:
            try:
                build_and_publish(ds, as_of, home, config=config, engine=spark or engine_name,
                                  spark_master=spark_master)
            except (InputError, DatasetError, SchemaMismatchError) as exc:
                raise BadInputError(str(exc)) from None
        t_features = time.perf_counter() - t0
        champions = _champions(home)
        catalog = _catalog(dataset, ds.name, catalog_path, categories_of(champions), warnings)
        meta = read_metadata(snap_dir.parent, as_of)
        try:
            window_days = feature_config(meta).rfm_window_days
        except (SchemaMismatchError, ValueError) as exc:
            raise BadInputError(str(exc)) from None
        segments = _segments(dataset, segments_path, ds, as_of, home, snap_dir, config)
        info = snapshot_info(snap_dir, meta)
        history = read_contacts(snap_dir)
        contacts = ContactHistory.from_frame(history, as_of) if history is not None else None
        root = out or home.batch(ds.name)
        timings = {"features_seconds": round(t_features, 3)}
        # the segments are evaluated on the staged scores and written beside them, before the swap
        before_swap = None if segments is None else (lambda staging: segments.write(staging, root, as_of))
        uplift = _uplift(home, catalog, snap_dir, warnings)
        decision, store = None, None
        if catalog is not None:  # every offer the batch writes is a logged decision
            store = stack.enter_context(closing(open_decision_store(decisions_url, home, ds.name)))
            decision = batch_decision(store, catalog, champions, info, dataset=ds.name, as_of=as_of,
                                      decided_us=decided_us, uplift=uplift)
        if spark is not None:
            from batch.spark_job import run_scoring_spark

            tell(f"scoring {info['rows']:,} customers on Spark ({spark.session.sparkContext.master})")
            result = run_scoring_spark(spark.session, snap_dir, info, champions, catalog, contacts, as_of, root,
                                       window_days=window_days, k=k, timings=timings, decision=decision,
                                       log_decisions=store.log_table if store is not None else None,
                                       uplift=uplift, before_swap=before_swap)
        else:
            import pandas as pd

            snapshot = pd.read_parquet(snap_dir)
            total, done = len(snapshot), 0

            def advance(n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(done, total)

            result = run_scoring(snapshot, info, champions, catalog, contacts, as_of, root, window_days=window_days,
                                 k=k, progress=advance, timings=timings, decision=decision,
                                 log_decisions=store.log_table if store is not None else None, uplift=uplift,
                                 before_swap=before_swap)
    if segments is not None and segments.summary is not None:
        result.manifest.setdefault("segments", segments.summary)
        tell("segments: " + ", ".join(f"{x['segment']} {x['size']:,}" for x in segments.summary["segments"]))
    if publish:
        publish_snapshot(home, ds.name, snap_dir, as_of)
    warnings += [f"no champion for {t}: its columns are null" for t in result.manifest["missing_tasks"]]
    return NightlyResult(result, as_of, time.perf_counter() - t0, t_features, warnings)


def batch_decision(store, catalog: Catalog, champions: dict, info: dict, *, dataset: str, as_of: date,
                   decided_us: int | None, uplift=None) -> BatchDecision:
    """The decision context of one run: its time (default: the start of ``as_of``, UTC, so a
    rerun decides alike), its key (decision ids derive from the dataset and the date: a
    rerun replaces the run's decisions instead of adding to them), the live log read once."""
    now_us = to_us(cutoff(as_of)) if decided_us is None else decided_us
    try:
        contacts, outcomes = store.live(since_us(catalog, now_us))
    except DecisionStoreUnavailable as exc:
        raise BadInputError(f"{exc}: no offer can be decided without the decision log") from None
    # what was logged before this run's moment (not a previous attempt of this same run)
    live = (contacts[contacts["decided_us"] < now_us], outcomes[outcomes["occurred_us"] < now_us])
    versions = (model_versions(champions, uplift), catalog.version,
                str(info.get("feature_set_fingerprint") or ""))
    return BatchDecision(now_us, f"{dataset}:{as_of.isoformat()}", live, versions)


def snapshot_info(snap_dir: Path, meta: dict) -> dict:
    """What the manifest records of the snapshot a run scored."""
    quarantined = sum(int(t.get("rows_quarantined", 0)) for t in (meta.get("sources") or {}).values()
                      if isinstance(t, dict))
    return {"path": str(snap_dir), "rows": parquet_rows(snap_dir), "feature_set_fingerprint": meta.get("fingerprint"),
            "built_at": meta.get("built_at"), "rows_quarantined": quarantined}


def _segments(dataset: str, explicit: Path | None, ds, as_of: date, home: Home, snap_dir: Path,
              config: BuildConfig | None) -> NightlySegments | None:
    """The dataset's segments (``--segments``, else its own file), checked against the snapshot's
    feature set, with the event counts the snapshot does not hold, before anything is scored;
    None when the dataset has no segment file."""
    path = resolve_segments_path(dataset, explicit)
    if path is None:
        return None
    try:
        fs = feature_set_from_dict(read_schema(snap_dir.parent))
        return prepare_nightly(path, load_segments(path, fs), ds, as_of, home, snap_dir, fs, config)
    except (SegmentError, InputError, DatasetError, ValueError, TypeError) as exc:
        raise BadInputError(str(exc)) from None


def _champions(home: Home) -> dict[str, Champion]:
    try:
        return RegistrySource(home.mlflow_tracking_uri()).champions()
    except NotReadyError as exc:
        raise BadInputError(str(exc)) from None


def _uplift(home: Home, catalog: Catalog | None, snap_dir: Path, warnings: list[str]):
    """The cvm-uplift champion when there are offers to score it for (None without one). One
    that cannot be loaded or does not fit the snapshot is left out with a warning: offers
    with ``propensity: uplift`` then say "no uplift model for this offer"."""
    if catalog is None:
        return None
    try:
        uplift = RegistrySource(home.mlflow_tracking_uri()).uplift()
    except (NotReadyError, ModelLoadError) as exc:
        warnings.append(f"uplift model not used: {exc}")
        return None
    if uplift is None:
        return None
    import pyarrow.parquet as pq

    parts = data_files(snap_dir)
    missing = missing_columns(uplift, pq.read_schema(parts[0]).names) if parts else []
    if missing:
        warnings.append(f"uplift model {uplift.name} version {uplift.version} not used: the snapshot lacks "
                        f"{', '.join(missing[:10])}")
        return None
    return uplift


def _catalog(spec: str, dataset_name: str, path: Path | None, categories: list[str],
             warnings: list[str]) -> Catalog | None:
    """The offer catalog of dataset ``spec`` (``--catalog`` first, then the dataset's own:
    ``scoring.catalog.resolve_catalog_path``), checked against the cross-sell champion's
    categories; None, with a warning saying how to add one, when there is none."""
    chosen = resolve_catalog_path(spec, path)
    if chosen is None:
        warnings.append(f"{no_catalog_message(dataset_name)}; offers are left empty")
        return None
    try:
        return load_catalog(chosen, categories)
    except CatalogError as exc:
        raise BadInputError(str(exc)) from None
