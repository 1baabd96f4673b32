"""Posted events, named by customer id or by identifier, resolved to golden records and appended
to the event log (``sources.event_log``): what ``POST /events`` and ``cvm events ingest`` run.

An event names its customer by ``customer_id`` (taken as the golden id it is) or by an
``identifier`` looked up in the latest identity resolution's index
(``profiles.identifier_index``). An identifier the index does not hold is, by ``unknown``:

* ``anonymous`` (default): a new anonymous profile with a stable id of its own
  (``anonymous_id``: a hash, no PII), so nothing is lost and a later resolution can link it;
* ``reject``: the batch is refused, naming the event.

A value that is not an identifier of its type (an email without ``@``, a phone of too few
digits) always refuses the batch. Refused means nothing of the batch is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from base.dates import to_us
from profiles.identifier_index import IdentifierLookup, anonymous_id
from sources.event_log.records import EventError, EventLimits, check_batch
from sources.event_log.store import AppendCounts, EventLog

Unknown = Literal["anonymous", "reject"]
#: the index file written beside profile_map.parquet by each resolution
INDEX_FILE = "identifiers.parquet"


def latest_lookup(profiles_root: Path) -> IdentifierLookup:
    """The index of the latest resolution under ``$CVM_HOME/profiles/<dataset>`` (empty without one)."""
    files = sorted(profiles_root.glob(f"*/{INDEX_FILE}")) if profiles_root.exists() else []
    if not files:
        return IdentifierLookup(pd.DataFrame({"id_type": [], "value": [], "customer_id": []}))
    return IdentifierLookup(pd.read_parquet(files[-1]))


def resolve_customers(events, lookup: IdentifierLookup, unknown: Unknown = "anonymous") -> list[str]:
    """The golden customer id of each checked event (``EventError`` naming the first that cannot be)."""
    out = []
    for i, e in enumerate(events):
        if e.customer_id is not None:
            out.append(e.customer_id)
            continue
        cid, norm = lookup.resolve(e.identifier.type, e.identifier.value)
        where = f"events[{i}] (event_id {e.event_id!r}): identifier"
        if norm is None:
            raise EventError(f"{where}: not a valid {e.identifier.type}; nothing of this batch was written")
        if cid is None:
            if unknown == "reject":
                raise EventError(f"{where}: no customer has this {e.identifier.type} (unknown identifiers are "
                                 "refused by configuration); nothing of this batch was written")
            cid = anonymous_id(e.identifier.type, norm)
        out.append(cid)
    return out


def ingest(raw: Sequence[object], log: EventLog, lookup: IdentifierLookup, *, now: datetime,
           limits: EventLimits | None = None, unknown: Unknown = "anonymous") -> AppendCounts:
    """Check, resolve and append one batch, all or nothing; durable when this returns."""
    events = check_batch(raw, now=now, limits=limits or EventLimits())
    customers = resolve_customers(events, lookup, unknown)
    return log.append(events, customers, received_us=to_us(now))
