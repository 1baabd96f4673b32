"""Group commit: the decisions of concurrent requests share one transaction and one fsync.

A durable decision costs a commit, and a commit waits for the disk: 0.2 ms to 4 ms here
(SQLite in WAL mode with ``synchronous=FULL``; ``benchmarks/bench_decisions.py``). Run inline
on a service's event loop, every request waits for its own fsync and the worker cannot take
the next request meanwhile: at 200 req/s that wait alone filled a third of the loop.

``GroupCommitter`` owns one writer thread per store. Callers ``submit`` a decision (the
customer, the oldest event the policy counts, and the pure ``choose`` function) and get a
future. The writer takes everything queued, up to ``max_group``, runs it in one
transaction with ``store.decide_group`` (each decision sees the ones before it, so caps
hold within a group as across groups), commits once, and only then resolves the futures:
an answer is never sent before its decision is on disk. While the writer waits for the
disk, the event loop scores the next requests, which form the next group.

A store error fails the whole group (every caller gets ``DecisionStoreUnavailable``); an
error raised by one ``choose`` fails only that caller.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from scoring.decisions.records import Decision, DecisionStoreUnavailable, LiveHistory

#: most decisions one transaction takes
MAX_GROUP = 64

_Choose = Callable[[LiveHistory], Decision | None]
_STOP = object()


class GroupCommitter:
    """Decisions of one store, committed in groups by a writer thread (started on first use)."""

    def __init__(self, store, *, max_group: int = MAX_GROUP):
        self.store = store
        self.max_group = max_group
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self._closed = False
        #: size of every group committed so far (count, total): for metrics and tests
        self.groups = 0
        self.grouped = 0

    def submit(self, customer_id: str, since_us: int, choose: _Choose) -> Future:
        """Queue one decision; the future gives the logged ``Decision`` (or None), or raises."""
        future: Future = Future()
        with self._guard:
            if self._closed:
                raise DecisionStoreUnavailable("the decision log is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="decision-group-commit", daemon=True)
                self._thread.start()
            self._queue.put((customer_id, since_us, choose, future))
        return future

    async def decide(self, customer_id: str, since_us: int, choose: _Choose) -> Decision | None:
        """``store.decide`` for a coroutine: the event loop runs while the group commits."""
        return await asyncio.wrap_future(self.submit(customer_id, since_us, choose))

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            while len(group) < self.max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)  # stop after this group
                    break
                group.append(item)
            self._commit(group)

    def _commit(self, group: list[tuple]) -> None:
        live = [item for item in group if item[3].set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self.store.decide_group([(c, s, f) for c, s, f, _ in live])
        except BaseException as exc:  # noqa: BLE001 - every caller of the group gets it
            err = exc if isinstance(exc, DecisionStoreUnavailable) else DecisionStoreUnavailable(
                f"decision log: {type(exc).__name__}: {exc}")
            for item in live:
                item[3].set_exception(err)
            return
        self.groups += 1
        self.grouped += len(live)
        for item, result in zip(live, results, strict=True):
            if isinstance(result, Exception):
                item[3].set_exception(result)
            else:
                item[3].set_result(result)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the writer."""
        with self._guard:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)
