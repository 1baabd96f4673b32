"""Run a ``TriggerEngine`` in the background: a firing loop and a delivery loop (so a slow
receiver never delays a deadline), in whichever process holds the store's lease. Service
workers each start a runner; one leads, the others take over within ``LEASE_SECONDS`` if
it dies.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from scoring.triggers.engine import TriggerEngine

log = logging.getLogger(__name__)

#: how long a lease lasts without renewal
LEASE_SECONDS = 5.0
#: how often the loops look for new events, due timers and due deliveries
TICK_SECONDS = 0.05


class TriggerRunner:
    def __init__(self, engine: TriggerEngine, *, tick: float = TICK_SECONDS):
        self.engine = engine
        self.tick = tick
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.leading = False

    def _now_us(self) -> int:
        return time.time_ns() // 1000

    def _lead(self) -> bool:
        try:
            self.leading = self.engine.store.take_lease(self.owner, self._now_us(), int(LEASE_SECONDS * 1e6))
        except Exception as exc:  # noqa: BLE001 - a locked or broken store: try again next tick
            log.error("trigger lease: %s: %s", type(exc).__name__, exc)
            self.leading = False
        return self.leading

    def _loop(self, step, name: str) -> None:
        while not self._stop.is_set():
            try:
                if (self._lead() if name == "fire" else self.leading):
                    step(self._now_us())
            except Exception as exc:  # noqa: BLE001 - keep running; the state is in the store
                log.error("trigger %s loop: %s: %s", name, type(exc).__name__, exc)
            self._stop.wait(self.tick)

    def start(self) -> None:
        for name, step in (("fire", self.engine.fire_step), ("deliver", self.engine.deliver_step)):
            t = threading.Thread(target=self._loop, args=(step, name), name=f"cvm-triggers-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        if self.leading:
            self.engine.store.release_lease(self.owner)
        self.engine.close()
