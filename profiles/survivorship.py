"""Golden records: one row per customer profile, each field chosen from its records.

A profile's records disagree (an old address in the CRM, a new one in the app), so
every field has a survivorship rule, and every rule ends in a tie-break that does not
depend on row order: the same inputs always give the same golden record.

- ``email``, ``phone``: the normalised value carried by most of the profile's records;
  ties to the most recently seen, then the smallest value. Hub identifiers (shared by
  more records than the resolution allows) are never chosen: "noemail@none.com" is
  nobody's address.
- attribute columns of ``customers``: ``most_recent`` (latest ``updated_at`` with a
  value, ties to the smallest record key, then the smallest value), ``most_frequent``
  (value on most records, ties to the most recent, then the smallest value), ``max``
  or ``min``. Default: ``most_recent`` when ``customers`` has ``updated_at``, else
  ``most_frequent``.

A ``customers`` record that is not in the mapping (no identity rows, or none before the
cutoff) is a profile of its own, with the id the anchor rule gives a single-record
profile (``profile_id(source_system, customer_id)``; source system "" when unknown).
With the resolution's cutoff, ``customers`` rows with ``updated_at`` at or after it, or
missing, are not used; without an ``updated_at`` column every row is used (the source
contract: point in time when present).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from profiles.config import AttributeRule, SurvivorshipConfig
from profiles.identities import (
    LONG_AGO,
    IdentityRows,
    as_timestamps,
    before,
    prepare_identities,
    require_columns,
    sortable_ns,
)
from profiles.resolve import Resolution, match_records

__all__ = ["GOLDEN_COLUMNS", "SurvivorshipConfig", "golden_records"]

#: columns of every golden record, before the attribute columns
GOLDEN_COLUMNS = ["customer_id", "n_records", "source_systems", "first_seen", "last_seen", "email", "phone"]
#: columns of ``customers`` that describe the row, not the customer
_CUSTOMER_META = ("customer_id", "source_system", "updated_at")
#: prefix of a ``customers`` attribute whose name is already a golden-record column
CLASH_PREFIX = "customers_"
_MAX_BITMASK_SYSTEMS = 62


def _record_profiles(rows: IdentityRows, mapping: pd.DataFrame) -> pd.Series:
    """Per identity record: its customer_id in the mapping.

    When the mapping was made from these rows it lists the same records in the same
    (key) order, and the positional fast path avoids a join of millions of keys.
    """
    same = (len(mapping) == rows.n_records
            and mapping["source_system"].reset_index(drop=True).equals(rows.record_system)
            and mapping["source_id"].reset_index(drop=True).equals(rows.record_id))
    if same:
        return mapping["customer_id"].reset_index(drop=True).astype("str")
    return match_records(rows.record_id, rows.record_system, mapping)["customer_id"]


def _customer_rows(customers: pd.DataFrame, resolution: Resolution,
                   config: SurvivorshipConfig) -> pd.DataFrame:
    """``customers`` rows usable at the cutoff, with their record key and profile id."""
    require_columns(customers, ["customer_id"], "customers")
    df = customers.reset_index(drop=True)
    if "updated_at" in df.columns:
        df = df.assign(updated_at=as_timestamps(df["updated_at"], "updated_at"))
        if resolution.cutoff is not None:
            df = df[before(df["updated_at"], resolution.cutoff)].reset_index(drop=True)
    systems = df["source_system"] if "source_system" in df.columns else None
    if config.customers_source_system is not None:
        systems = (pd.Series(config.customers_source_system, index=df.index, dtype="str") if systems is None
                   else systems.astype("str").fillna(config.customers_source_system))
    keys = match_records(df["customer_id"], systems, resolution.mapping)
    attributes = df.drop(columns=[c for c in _CUSTOMER_META if c in df.columns])
    out = pd.concat([keys, attributes], axis=1)
    if "updated_at" in df.columns:
        out["updated_at"] = df["updated_at"]
    return out


def _joined_systems(profile: np.ndarray, systems: pd.Series, n_profiles: int) -> np.ndarray:
    """Per profile: its records' source systems, sorted and comma-joined.

    With few systems (the usual case) each profile ORs one bit per system and only the
    distinct bit patterns are turned into strings.
    """
    codes, names = pd.factorize(systems, sort=True)
    if len(names) > _MAX_BITMASK_SYSTEMS:
        frame = pd.DataFrame({"p": profile, "s": systems.to_numpy()}).drop_duplicates().sort_values(["p", "s"])
        joined = frame.groupby("p")["s"].agg(",".join)
        return joined.reindex(range(n_profiles)).to_numpy(dtype=object)
    masks = np.zeros(n_profiles, dtype=np.int64)
    np.bitwise_or.at(masks, profile, np.left_shift(np.int64(1), codes.astype(np.int64)))
    patterns, inverse = np.unique(masks, return_inverse=True)
    labels = [",".join(str(n) for i, n in enumerate(names) if (int(m) >> i) & 1) for m in patterns]
    return np.asarray(labels, dtype=object)[inverse]


def _seen_range(rows: IdentityRows, row_profile: np.ndarray, n_profiles: int) -> tuple[pd.Series, pd.Series]:
    """Per profile: first and last ``seen_at`` over its identity rows (null when unknown)."""
    if rows.seen_at is None:
        empty = pd.Series(pd.NaT, index=range(n_profiles), dtype="datetime64[us]")
        return empty, empty.copy()
    grouped = rows.seen_at.groupby(row_profile)
    return (grouped.min().reindex(range(n_profiles)).reset_index(drop=True),
            grouped.max().reindex(range(n_profiles)).reset_index(drop=True))


def _best_identifier(rows: IdentityRows, row_profile: np.ndarray, id_type: str, hub: np.ndarray,
                     n_profiles: int) -> pd.Series:
    """Per profile: the value of ``id_type`` on most records; ties to latest seen, then smallest."""
    usable = (rows.id_type == id_type).to_numpy(dtype=bool) & (rows.identifier >= 0)
    usable &= ~hub[np.maximum(rows.identifier, 0)]
    seen = (sortable_ns(rows.seen_at, missing=LONG_AGO) if rows.seen_at is not None
            else np.full(len(rows.record), LONG_AGO, dtype=np.int64))
    cand = pd.DataFrame({
        "profile": row_profile[usable], "identifier": rows.identifier[usable],
        "record": rows.record[usable], "seen": seen[usable],
        "value": rows.value[usable].to_numpy(),
    })
    per_record = cand.groupby(["profile", "identifier", "record"], sort=False).agg(
        seen=("seen", "max"), value=("value", "first"))
    per_value = per_record.groupby(level=["profile", "identifier"], sort=False).agg(
        records=("seen", "size"), seen=("seen", "max"), value=("value", "first")).reset_index()
    best = (per_value.sort_values(["profile", "records", "seen", "value"], ascending=[True, False, False, True])
            .drop_duplicates("profile"))
    return _per_profile(best.set_index("profile")["value"], n_profiles, dtype="str")


def _per_profile(values: pd.Series, n_profiles: int, dtype: object | None = None) -> pd.Series:
    out = values.reindex(range(n_profiles))
    return (out.astype(dtype) if dtype is not None else out).reset_index(drop=True)


def _most_recent(frame: pd.DataFrame) -> pd.Series:
    ordered = frame.sort_values(["profile", "updated", "source_system", "source_id", "value"],
                                ascending=[True, False, True, True, True], kind="stable")
    return ordered.drop_duplicates("profile").set_index("profile")["value"]


def _most_frequent(frame: pd.DataFrame) -> pd.Series:
    per_record = frame.groupby(["profile", "value", "source_system", "source_id"], sort=False)["updated"].max()
    per_value = per_record.groupby(level=["profile", "value"], sort=False).agg(["size", "max"]).reset_index()
    ordered = per_value.sort_values(["profile", "size", "max", "value"], ascending=[True, False, False, True],
                                    kind="stable")
    return ordered.drop_duplicates("profile").set_index("profile")["value"]


def _extreme(how: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda frame: getattr(frame.groupby("profile")["value"], how)()


_RULES: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "most_recent": _most_recent, "most_frequent": _most_frequent, "max": _extreme("max"), "min": _extreme("min"),
}


def _attribute_rules(cust: pd.DataFrame, config: SurvivorshipConfig) -> dict[str, AttributeRule]:
    attributes = [c for c in cust.columns if c not in ("source_system", "source_id", "customer_id", "updated_at")]
    unknown = sorted(set(config.attribute_rules) - set(attributes))
    if unknown:
        raise ValueError(f"attribute_rules name columns not in customers: {', '.join(unknown)}")
    has_time = "updated_at" in cust.columns
    default: AttributeRule = "most_recent" if has_time else "most_frequent"
    rules = {c: config.attribute_rules.get(c, default) for c in attributes}
    if not has_time and "most_recent" in rules.values():
        wrong = [c for c, r in rules.items() if r == "most_recent"]
        raise ValueError(f"rule most_recent needs customers.updated_at (columns: {', '.join(wrong)})")
    return rules


def _attributes(cust: pd.DataFrame, profile: np.ndarray, config: SurvivorshipConfig,
                n_profiles: int) -> dict[str, pd.Series]:
    """Per attribute column: the surviving value of each profile."""
    updated = (sortable_ns(cust["updated_at"], missing=LONG_AGO) if "updated_at" in cust.columns
               else np.full(len(cust), LONG_AGO, dtype=np.int64))
    out: dict[str, pd.Series] = {}
    for column, rule in _attribute_rules(cust, config).items():
        present = cust[column].notna().to_numpy()
        frame = pd.DataFrame({
            "profile": profile[present], "updated": updated[present],
            "source_system": cust["source_system"].to_numpy()[present],
            "source_id": cust["source_id"].to_numpy()[present],
            "value": cust[column][present].reset_index(drop=True),
        })
        name = CLASH_PREFIX + column if column in GOLDEN_COLUMNS else column
        survived = _RULES[rule](frame)
        out[name] = _per_profile(survived, n_profiles, dtype=cust[column].dtype if survived.empty else None)
    return out


def golden_records(
    identities: pd.DataFrame,
    resolution: Resolution,
    customers: pd.DataFrame | None = None,
    config: SurvivorshipConfig | None = None,
) -> pd.DataFrame:
    """One row per customer_id, sorted by customer_id: the golden record table.

    ``identities`` must be the table ``resolution`` was made from; it is prepared again
    with the resolution's config and cutoff, so both see the same rows. Columns:
    GOLDEN_COLUMNS, then each attribute column of ``customers`` (an attribute named like
    a golden column is output as ``customers_<name>``).
    """
    config = config or SurvivorshipConfig()
    rows = prepare_identities(identities, resolution.config, resolution.cutoff)
    identity_records = pd.DataFrame({"source_system": rows.record_system, "source_id": rows.record_id,
                                     "customer_id": _record_profiles(rows, resolution.mapping)})
    cust = _customer_rows(customers, resolution, config) if customers is not None else None
    records = identity_records
    if cust is not None:
        records = pd.concat([identity_records, cust[["source_system", "source_id", "customer_id"]]],
                            ignore_index=True).drop_duplicates(["source_system", "source_id"])
    profile, ids = pd.factorize(records["customer_id"], sort=True)
    n_profiles = len(ids)
    index = pd.Index(ids)
    # identity records come first in `records` (duplicates dropped are customers rows)
    row_profile = profile[: len(identity_records)][rows.record]
    first_seen, last_seen = _seen_range(rows, row_profile, n_profiles)
    hub = rows.hub(resolution.config)
    golden = pd.DataFrame({
        "customer_id": pd.Series(ids, dtype="str"),
        "n_records": np.bincount(profile, minlength=n_profiles).astype(np.int64),
        "source_systems": pd.Series(_joined_systems(profile, records["source_system"], n_profiles), dtype="str"),
        "first_seen": first_seen,
        "last_seen": last_seen,
        "email": _best_identifier(rows, row_profile, "email", hub, n_profiles),
        "phone": _best_identifier(rows, row_profile, "phone", hub, n_profiles),
    })
    if cust is not None:
        attributes = _attributes(cust, index.get_indexer(cust["customer_id"]), config, n_profiles)
        golden = pd.concat([golden, pd.DataFrame(attributes)], axis=1)
    return golden
