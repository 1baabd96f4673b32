"""The service's fresh vectors: the published snapshot brought up to the last event.

``publish_fresh`` puts base(S+1) of a published snapshot (``features.fresh``) in an online
store of its own (``<online root>/fresh``), tagged with the snapshot's version, beside the
snapshot's open carts. ``FreshVectors`` is what a service worker holds: on every read it
tails the event log, SQLite or Redis (one query for the rows appended since its last read,
so every worker sees an event as soon as any worker acknowledged it), and keeps, per customer
with events on day S, that day's activity; ``vectors(ids)`` gives those customers' vectors
as of S+1 and how fresh they are. Customers without events keep the snapshot's vector.

Events of another day are not applied (counted in ``late``: before S, which includes those the
snapshot already holds, and ``ahead``: S+1 or later). An event older than S that arrived after
the nightly build, and one of S+1 before the next snapshot is published, reach the features
with the next nightly snapshot.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from base.dates import from_us
from features.definitions import FeatureSet, feature_set_from_dict
from features.fresh import DayActivity, Horizon, fresh_vector, maintained, not_maintained
from features.online_store import SQLiteOnlineStore
from features.snapshot import FRESH_DIR, OPEN_CARTS_DIR, read_schema

log = logging.getLogger(__name__)

#: the fresh store's directory under the dataset's online root
FRESH_STORE = "fresh"
#: event-log rows read per query while catching up
_TAIL_ROWS = 50_000


def publish_fresh(online_root: Path, snapshot_dir: Path, as_of: date, snapshot_version: str) -> bool:
    """Publish base(as_of + 1) of the snapshot in ``snapshot_dir`` (built with ``fresh``) for the
    snapshot published as ``snapshot_version``; False when the snapshot has none."""
    base = snapshot_dir / FRESH_DIR
    schema = read_schema(snapshot_dir.parent)
    if not base.exists() or schema is None:
        return False
    carts = snapshot_dir / OPEN_CARTS_DIR
    store = SQLiteOnlineStore(online_root / FRESH_STORE)
    try:
        store.publish(base, as_of=Horizon(as_of).as_of,
                      metadata={"snapshot_version": snapshot_version, "snapshot_as_of": as_of.isoformat(),
                                "feature_set": schema, "open_carts": str(carts) if carts.exists() else None})
    finally:
        store.close()
    return True


@dataclass(frozen=True)
class Freshness:
    """How fresh one customer's vector is (the ``freshness`` of a /score or /recommend answer)."""

    snapshot_as_of: date
    vector_as_of: date
    events: int
    last_event_us: int | None

    def as_dict(self) -> dict[str, object]:
        last = from_us(self.last_event_us).isoformat().replace("+00:00", "Z") if self.last_event_us else None
        return {"snapshot_as_of": self.snapshot_as_of.isoformat(), "vector_as_of": self.vector_as_of.isoformat(),
                "events_applied": self.events, "last_event_at": last}


class FreshVectors:
    """Per worker: day S's activity from the event log, vectors as of S+1 on demand (thread-safe)."""

    def __init__(self, online_root: Path, event_log, snapshot_version: str, snapshot_as_of: date):
        self.base = SQLiteOnlineStore(Path(online_root) / FRESH_STORE)
        self.event_log = event_log  # sources.event_log: EventLog or RedisEventLog
        self.snapshot_version = snapshot_version
        self.horizon = Horizon(snapshot_as_of)
        self._lock = threading.Lock()
        self._ready = False
        self._fs: FeatureSet | None = None
        self._carts: dict[str, list[int]] = {}
        self._day: dict[str, DayActivity] = {}
        self._rowid = 0
        self.late = 0
        self.ahead = 0

    # -------------------------------------------------------------- set-up
    def _start(self) -> bool:
        """Bind to base(S+1) once it is published for this snapshot; replay the day from the log."""
        if self._ready:
            return True
        snap = self.base.current()
        if snap is None or snap.metadata.get("snapshot_version") != self.snapshot_version:
            return False
        self._fs = feature_set_from_dict(snap.metadata["feature_set"])  # type: ignore[arg-type]
        carts = snap.metadata.get("open_carts")
        if carts and Path(str(carts)).exists():
            frame = pd.read_parquet(str(carts))
            stamps = pd.to_datetime(frame["timestamp"])
            if stamps.dt.tz is not None:
                stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
            us = (stamps.astype("datetime64[us]").astype("int64")).tolist()
            for cid, t in zip(frame["customer_id"].astype(str), us, strict=True):
                self._carts.setdefault(cid, []).append(int(t))
        self._ready = True
        return True

    # -------------------------------------------------------------- reading
    def sync(self) -> None:
        """Apply the events appended to the log since the last call (any worker's)."""
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if not self._start():
            return
        h = self.horizon
        while True:
            rows = self.event_log.tail(self._rowid, _TAIL_ROWS)
            for rowid, _, cid, etype, us, props in rows:
                self._rowid = rowid
                if us < h.start_us:
                    self.late += 1
                elif us >= h.end_us:
                    self.ahead += 1
                else:
                    self._day.setdefault(cid, DayActivity()).add(etype, us, json.loads(props))
            if len(rows) < _TAIL_ROWS:
                return

    def vectors(self, ids: list[str]) -> dict[str, tuple[dict[str, object] | None, Freshness]]:
        """The fresh vector (None: the customer has no order yet) and its freshness of each id
        that has events on day S; ids without are left out (their snapshot vector stands)."""
        with self._lock:
            self._sync_locked()
            if not self._ready or not self._day:
                return {}
            wanted = {i: self._day[i] for i in ids if i in self._day}
            carts = {i: list(self._carts.get(i, ())) for i in wanted}
        out: dict[str, tuple[dict[str, object] | None, Freshness]] = {}
        assert self._fs is not None
        for cid, act in wanted.items():
            base = self.base.get(cid)
            vec = fresh_vector(cid, base, act, carts[cid], self._fs, self.horizon)
            out[cid] = (vec, Freshness(self.horizon.day, self.horizon.as_of, act.events, act.last_event_us))
        return out

    @property
    def maintained(self) -> list[str]:
        return maintained(self._fs) if self._fs is not None else []

    @property
    def not_maintained(self) -> list[str]:
        return not_maintained(self._fs) if self._fs is not None else []

    def close(self) -> None:
        with self._lock:
            self.event_log.close()
        self.base.close()

