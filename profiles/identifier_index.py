"""Which golden customer an identifier names: the lookup behind ``POST /events``'s
``identifier: {"type": ..., "value": ...}``.

``identifier_index`` is built with each identity resolution (``identifiers.parquet`` beside
``profile_map.parquet``): every identifier of the ``identities`` table, normalised by the
same rules the resolver links on (``profiles.normalize``: an email's case and plus tag, a
phone's formats), with the golden customer its source record resolved to. An identifier
that names several golden customers (a household landline, a shared device the resolver
refused to merge on) names no one and is left out. ``normalize_one`` normalises a posted
value the same way, and ``anonymous_id`` gives an identifier nobody knows yet a stable id of
its own, so its events are kept and can be linked by a later resolution.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from profiles.config import ResolutionConfig
from profiles.normalize import normalize_id_type, normalize_identifiers

#: the columns of the index
INDEX_COLUMNS = ("id_type", "value", "customer_id")
#: prefix of the customer id given to an identifier no profile holds
ANONYMOUS_PREFIX = "anon-"


def identifier_index(identities: pd.DataFrame, mapping: pd.DataFrame,
                     config: ResolutionConfig | None = None) -> pd.DataFrame:
    """``INDEX_COLUMNS``, one row per normalised identifier that names exactly one golden customer.
    ``identities``: source_system, source_id, id_type, value; ``mapping``: source_system,
    source_id, customer_id (the resolution's)."""
    cfg = config or ResolutionConfig()
    types = normalize_id_type(identities["id_type"].astype("str").reset_index(drop=True))
    values = normalize_identifiers(types, identities["value"].astype("str").reset_index(drop=True),
                                   default_country_code=cfg.default_country_code,
                                   strip_plus_tags_all_domains=cfg.strip_plus_tags_all_domains)
    rows = pd.DataFrame({"source_system": identities["source_system"].astype("str").to_numpy(),
                         "source_id": identities["source_id"].astype("str").to_numpy(),
                         "id_type": types.to_numpy(), "value": values.to_numpy()}).dropna(subset=["id_type", "value"])
    m = mapping[["source_system", "source_id", "customer_id"]].astype("str")
    joined = rows.merge(m, on=["source_system", "source_id"], how="inner")
    pairs = joined[list(INDEX_COLUMNS)].drop_duplicates()
    named = pairs.groupby(["id_type", "value"])["customer_id"].transform("size") == 1
    return pairs[named].sort_values(["id_type", "value"], kind="stable").reset_index(drop=True)


def normalize_one(id_type: str, value: str, config: ResolutionConfig | None = None) -> str | None:
    """A posted identifier's value as the index holds it (None: not an identifier of its type)."""
    cfg = config or ResolutionConfig()
    out = normalize_identifiers(pd.Series([id_type], dtype="str"), pd.Series([value], dtype="str"),
                                default_country_code=cfg.default_country_code,
                                strip_plus_tags_all_domains=cfg.strip_plus_tags_all_domains).iloc[0]
    return None if pd.isna(out) else str(out)


def anonymous_id(id_type: str, normalized: str) -> str:
    """A stable customer id for an identifier no golden record holds (no PII in it: a hash)."""
    digest = hashlib.blake2b(f"{id_type}|{normalized}".encode(), digest_size=8).hexdigest()
    return ANONYMOUS_PREFIX + digest


class IdentifierLookup:
    """The index in memory: (id_type, normalised value) -> customer id."""

    def __init__(self, index: pd.DataFrame, config: ResolutionConfig | None = None):
        self.config = config or ResolutionConfig()
        self._map = dict(zip(zip(index["id_type"], index["value"], strict=True), index["customer_id"], strict=True))

    def __len__(self) -> int:
        return len(self._map)

    def resolve(self, id_type: str, value: str) -> tuple[str | None, str | None]:
        """(customer id or None when unknown, the normalised value or None when it is not a valid
        identifier of its type)."""
        norm = normalize_one(id_type, value, self.config)
        if norm is None:
            return None, None
        return self._map.get((id_type, norm)), norm
