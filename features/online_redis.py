"""The online store on Redis (``CVM_REDIS_URL=redis://host:port/db``): the same interface as
``SQLiteOnlineStore`` (``features.online_store.OnlineStore``), shared by every service
worker and machine that reaches the server.

Keys, under ``cvm:<dataset>:``::

    current                 the manifest readers serve (JSON, as CURRENT.json)
    v:<version>:f           a hash: customer_id -> the row as a JSON array in store column order
    v:<version>:contacts    the contact history published with it (Parquet bytes)
    v:<version>:sample      customer ids spread evenly over the snapshot (JSON), for priors
    versions                published versions, oldest first (the last ``keep`` are kept)

A publish writes the new version's keys completely, then switches ``current`` in one
``SET``: a reader sees the old snapshot or the new one, never a mix. A read is one round trip
(a pipeline of the pointer and the row(s) of the version the reader knows); when the
pointer moved, the reader switches and reads again. Rows hold the values the SQLite store
holds (dates as ISO text, NaN as null) and come back through the same layout, so both
stores return identical dicts and frames. A server that cannot be reached raises
``SnapshotUnavailableError`` (the service answers 503 with the reason) and the next read
reconnects by itself.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pyarrow.parquet as pq

from base.redis_client import redis_client
from features.online_store import (
    KEY_COLUMN,
    PublishedSnapshot,
    RowLayout,
    SnapshotUnavailableError,
    SnapshotValidationError,
    check_as_of,
    check_batch,
    json_safe,
    open_contacts,
    open_parts,
    plan_columns,
    row_batches,
    row_tuples,
)

log = logging.getLogger(__name__)

_PIPELINE_ROWS = 5000
_SAMPLE = 20_000


def _clean(row: tuple[object, ...]) -> list[object]:
    """The values SQLite would store: NaN as null, booleans as 0/1."""
    return [None if isinstance(v, float) and math.isnan(v) else int(v) if isinstance(v, bool) else v for v in row]


class RedisOnlineStore:
    def __init__(self, url: str, dataset: str, *, keep: int = 2, client=None):
        import redis

        if keep < 1:
            raise ValueError("keep must be at least 1: the current snapshot is always kept")
        self.url = url
        self.dataset = dataset
        self.keep = keep
        self.prefix = f"cvm:{dataset}:"
        self._redis = client or redis_client(url, socket_timeout=2)
        self._errors = (redis.RedisError, OSError)
        self._lock = threading.Lock()
        self._layout: RowLayout | None = None
        self._raw_pointer: bytes | None = None

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _down(self, exc: Exception) -> SnapshotUnavailableError:
        where = urlsplit(self.url)  # never the password
        return SnapshotUnavailableError(f"the online store on Redis ({where.hostname}:{where.port}{where.path}) cannot "
                                        "be read: "
                                        f"{type(exc).__name__}: {exc}")

    # -- publishing -------------------------------------------------------------
    def publish(self, snapshot_dir: Path, *, as_of: date, metadata: Mapping[str, object] | None = None,
                contacts: Path | None = None) -> PublishedSnapshot:
        started = time.perf_counter()
        snapshot_dir = Path(snapshot_dir)
        check_as_of(as_of)
        meta = json_safe(metadata)
        dataset = open_parts(snapshot_dir)
        columns = plan_columns(dataset.schema, snapshot_dir)
        rows = dataset.count_rows()
        if rows == 0:
            raise SnapshotValidationError(f"snapshot {snapshot_dir} has zero rows: nothing to publish")
        history = open_contacts(contacts) if contacts is not None else None
        published_at = datetime.now(UTC)
        version = f"{published_at:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"
        snapshot = PublishedSnapshot(version=version, as_of=as_of, rows=rows, columns=columns,
                                     path=Path(f"redis/{self.dataset}/{version}"), published_at=published_at,
                                     metadata=meta, contacts=None if history is None else history.count_rows())
        dtypes = tuple(columns.values())
        fkey = self._key("v", version, "f")
        step = max(1, rows // _SAMPLE)
        sample: list[str] = []
        seen = 0
        try:
            pipe = self._redis.pipeline(transaction=False)
            pending = 0
            for batch in row_batches(dataset, snapshot):
                check_batch(batch, as_of, snapshot_dir)
                mapping = {}
                for row in row_tuples(batch, dtypes):
                    mapping[row[0]] = json.dumps(_clean(row), separators=(",", ":"))
                    if seen % step == 0 and len(sample) < _SAMPLE:
                        sample.append(str(row[0]))
                    seen += 1
                for i in range(0, len(mapping), _PIPELINE_ROWS):
                    part = dict(list(mapping.items())[i:i + _PIPELINE_ROWS])
                    pipe.hset(fkey, mapping=part)
                    pending += 1
                    if pending >= 4:
                        pipe.execute()
                        pending = 0
            pipe.execute()
            if self._redis.hlen(fkey) != rows:
                raise SnapshotValidationError(f"snapshot {snapshot_dir}: {KEY_COLUMN} is not unique")
            if history is not None:
                buf = io.BytesIO()
                pq.write_table(history.to_table(), buf)
                self._redis.set(self._key("v", version, "contacts"), buf.getvalue())
            self._redis.set(self._key("v", version, "sample"), json.dumps(sample))
            manifest = snapshot.manifest(Path("."))
            self._redis.rpush(self._key("versions"), version)
            self._redis.set(self._key("current"), json.dumps(manifest))
        except self._errors as exc:
            self._drop(version)
            raise self._down(exc) from exc
        except BaseException:
            self._drop(version)
            raise
        self._prune()
        log.info("online store redis: published snapshot %s (as_of %s, %d rows) in %.1fs", version, as_of, rows,
                 time.perf_counter() - started)
        return snapshot

    def _drop(self, version: str) -> None:
        try:
            self._redis.unlink(*(self._key("v", version, k) for k in ("f", "contacts", "sample")))
            self._redis.lrem(self._key("versions"), 0, version)
        except self._errors:
            log.error("online store redis: could not remove the partial version %s", version)

    def _prune(self) -> None:
        versions = [v.decode() for v in self._redis.lrange(self._key("versions"), 0, -1)]
        for old in versions[: -self.keep]:
            self._drop(old)

    # -- reading ----------------------------------------------------------------
    def _switch(self, raw: bytes | None) -> RowLayout:
        if raw is None:
            from features.online_store import NoSnapshotError

            raise NoSnapshotError(f"no snapshot published for dataset {self.dataset!r} on Redis: run `cvm features "
                                  "publish ...` with CVM_REDIS_URL set first")
        if raw != self._raw_pointer or self._layout is None:
            data = json.loads(raw)
            self._layout = RowLayout.of(PublishedSnapshot.from_manifest(data, Path(".")))
            self._raw_pointer = raw
        return self._layout

    def _read(self, command: str, *args):
        """(layout, reply) of ``command`` on the current version's hash, in one round trip when the
        version did not move."""
        layout = self._layout
        for _ in range(3):
            try:
                pipe = self._redis.pipeline(transaction=False)
                pipe.get(self._key("current"))
                if layout is not None:
                    getattr(pipe, command)(self._key("v", layout.snapshot.version, "f"), *args)
                replies = pipe.execute()
            except self._errors as exc:
                raise self._down(exc) from exc
            with self._lock:
                current = self._switch(replies[0])
            if layout is not None and current is layout:
                return layout, replies[1]
            layout = current
        raise SnapshotUnavailableError("the online store on Redis switched snapshots three times during one read")

    def current(self) -> PublishedSnapshot | None:
        from features.online_store import NoSnapshotError

        try:
            raw = self._redis.get(self._key("current"))
        except self._errors as exc:
            raise self._down(exc) from exc
        try:
            with self._lock:
                return self._switch(raw).snapshot
        except NoSnapshotError:
            return None

    def feature_names(self) -> list[str]:
        snap = self.current()
        return snap.feature_names if snap is not None else []

    def get(self, customer_id: str) -> dict[str, object] | None:
        if not isinstance(customer_id, str):
            raise TypeError(f"customer_id must be a str, got {type(customer_id).__name__}")
        layout, raw = self._read("hget", customer_id)
        return None if raw is None else layout.record(tuple(json.loads(raw)))

    def get_many(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        ids = list(customer_ids)
        if not all(isinstance(cid, str) for cid in ids):
            raise TypeError("customer_ids must all be str")
        if not ids:
            layout = self._read("hget", "")[0]
            return layout.frame([], {})
        layout, raws = self._read("hmget", ids)
        return layout.frame(ids, {cid: tuple(json.loads(r)) for cid, r in zip(ids, raws, strict=True)
                                  if r is not None})

    def contacts(self) -> pd.DataFrame | None:
        snap = self.current()
        if snap is None or snap.contacts is None:
            return None
        try:
            raw = self._redis.get(self._key("v", snap.version, "contacts"))
        except self._errors as exc:
            raise self._down(exc) from exc
        frame = pq.read_table(io.BytesIO(raw)).to_pandas()
        frame["customer_id"] = frame["customer_id"].astype(str)
        frame["campaign_id"] = frame["campaign_id"].astype(str)
        stamps = pd.to_datetime(frame["timestamp"])
        frame["timestamp"] = stamps.dt.tz_convert("UTC").dt.tz_localize(None) if stamps.dt.tz is not None else stamps
        return frame[["customer_id", "campaign_id", "timestamp"]]

    def sample_ids(self, n: int) -> list[str]:
        snap = self.current()
        if snap is None or n < 1:
            return []
        try:
            raw = self._redis.get(self._key("v", snap.version, "sample"))
        except self._errors as exc:
            raise self._down(exc) from exc
        ids = json.loads(raw) if raw else []
        step = max(1, len(ids) // n)
        return ids[::step][:n]

    def warm_up(self) -> PublishedSnapshot | None:
        return self.current()

    def close(self) -> None:
        try:
            self._redis.close()
        except self._errors:
            pass
