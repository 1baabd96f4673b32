"""The jobs behind ``cvm profiles build`` and ``cvm profiles evaluate``: a dataset's
identities resolved on an embedded engine (closed after), golden records written under
the home, or linkage quality measured against a ground truth."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from base.engines import open_engine
from base.home import Home
from profiles.config import ResolutionConfig
from profiles.evaluate import linkage_quality
from profiles.link import linked_tables
from profiles.resolve import resolve_identities
from sources.dataset import Dataset, DatasetError
from sources.load import load_sources
from sources.validate import ValidationConfig


def build_profiles(dataset: Dataset, home: Home, as_of: date | None, config: ResolutionConfig, *,
                   validation: ValidationConfig | None = None) -> tuple[dict, Path]:
    """Resolve the dataset's identities (those seen before ``as_of`` when given) and write the
    record -> profile mapping and the golden records; returns the stats and where they are."""
    if not dataset.has("identities"):
        raise DatasetError(f"dataset {dataset.name} has no identities table: its customer ids are used as they are")
    with open_engine("duckdb", temp_dir=home.tmp(ensure=True)) as engine:
        sources = load_sources(dataset, engine, validation=validation, tables=("identities", "customers"))
        _, stats = linked_tables(sources, as_of, home, config, golden=True)
    return stats, home.profiles(dataset.name)


def evaluate_linkage(dataset: Dataset, home: Home, truth: Path | None, config: ResolutionConfig, *,
                     validation: ValidationConfig | None = None) -> dict:
    """Pairwise precision and recall of the resolution against ``truth`` (records.parquet:
    source_system, source_id, person_id; default ``<dataset>/truth/records.parquet``)."""
    path = truth or dataset.root / "truth" / "records.parquet"
    if not path.exists():
        raise DatasetError(f"no ground truth at {path}: pass --truth")
    if not dataset.has("identities"):
        raise DatasetError(f"dataset {dataset.name} has no identities table")
    with open_engine("duckdb", temp_dir=home.tmp(ensure=True)) as engine:
        identities = engine.execute(load_sources(dataset, engine, validation=validation,
                                                 tables=("identities",))["identities"])
    resolution = resolve_identities(identities, config)
    return linkage_quality(resolution.mapping, pd.read_parquet(path))
