"""Source tables keyed by golden customer ids: identity resolution applied to a dataset.

``linked_tables`` resolves the dataset's ``identities`` (point in time: only links seen
before ``as_of`` count) and rewrites every customer-keyed table's ``customer_id`` to the
golden id, keeping the source record id in ``_record``. The features, the labels, the
report and ``cvm profiles`` all read the sources through it.
"""

from __future__ import annotations

from datetime import date

import ibis
import pandas as pd

from base.dates import cutoff, partition_name
from base.engines import release_memory
from base.home import Home
from profiles.config import ResolutionConfig
from sources.contract import CUSTOMER_KEYED
from sources.dataset import DatasetError
from sources.load import Sources


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
    until = cutoff(as_of) if as_of and "seen_at" in identities.columns else None
    resolution = resolve_identities(identities, config or ResolutionConfig(), cutoff=until)
    mapping = resolution.mapping[["source_system", "source_id", "customer_id"]]
    if home is not None:
        _save_profiles(home, sources, identities, resolution, as_of, golden, config)
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
                   as_of: date | None, golden: bool, config: ResolutionConfig | None = None) -> None:
    out = home.profiles(sources.dataset.name, ensure=True)
    target = out / (partition_name(as_of) if as_of else "latest")
    target.mkdir(parents=True, exist_ok=True)
    resolution.mapping.to_parquet(target / "profile_map.parquet", index=False)
    from profiles.events import INDEX_FILE
    from profiles.identifier_index import identifier_index

    identifier_index(identities, resolution.mapping, config).to_parquet(target / INDEX_FILE, index=False)
    if golden:
        from profiles.survivorship import golden_records

        customers = sources.engine.execute(sources["customers"]) if sources.has("customers") else None
        golden_records(identities, resolution, customers).to_parquet(target / "profiles.parquet", index=False)
