"""The backlog timer: finds failures the trigger never queued (rows written while triggers
were off, before the first migrate, or by replication), however old, and queues them."""

from __future__ import annotations

from selfheal.db.store import Store
from selfheal.logs import get_logger
from selfheal.services.base import Service, Wakeup
from selfheal.settings import Settings

__all__ = ["Scanner"]

log = get_logger()


class Scanner(Service):
    name = "scanner"

    def __init__(
        self, store: Store, settings: Settings, wakeup: Wakeup, claimer_wakeup: Wakeup
    ) -> None:
        super().__init__(
            wakeup,
            period=settings.scan_interval_seconds,
            reconnect_cap=settings.reconnect_max_seconds,
        )
        self._store = store
        self._chunk = settings.scan_chunk_size
        self._claimer_wakeup = claimer_wakeup

    async def step(self) -> None:
        seen, queued = await self._store.enqueue_backlog(self._chunk)
        log.info("scanner.swept", failures_seen=seen, queued=queued)
        if queued:
            self._claimer_wakeup.set()
