"""The sampler: reads the gauges operators graph (pending, disabled, open circuits, inbox,
outbox) from Postgres every few seconds, for /metrics, /healthz and systemd's STATUS=,
so that no scrape or health check ever queries the database itself."""

from __future__ import annotations

import time

from selfheal import metrics
from selfheal.db.store import Store
from selfheal.errors import PermanentError, TemporaryError
from selfheal.logs import error_fields, first_line, get_logger
from selfheal.models import Gauges
from selfheal.services.base import Service, Wakeup

__all__ = ["Sampler"]

log = get_logger()


class Sampler(Service):
    name = "sampler"

    def __init__(self, store: Store, *, every: float, reconnect_cap: float) -> None:
        super().__init__(Wakeup(), period=every, reconnect_cap=reconnect_cap)
        self._store = store
        self.latest: Gauges | None = None
        self.unavailable: str | None = None  # why the last reading failed, while it does

    async def step(self) -> None:
        try:
            gauges = await self._store.gauges()
        except TemporaryError as exc:
            self.unavailable = first_line(exc)
            raise
        except PermanentError as exc:  # a metric is never worth the daemon
            self.unavailable = first_line(exc)
            log.error("sampler.failed", **error_fields(exc))
            return
        self.latest, self.unavailable = gauges, None
        metrics.PENDING.set(gauges.pending)
        metrics.DISABLED.labels("service").set(gauges.disabled_services)
        metrics.DISABLED.labels("user_connection").set(gauges.disabled_user_connections)
        metrics.OPEN_CIRCUITS.set(gauges.open_circuits)
        metrics.INBOX_DEPTH.set(gauges.inbox)
        metrics.OLDEST_UNRECORDED.set(gauges.oldest_inbox_seconds)
        metrics.ALERT_OUTBOX.set(gauges.outbox)
        metrics.SAMPLED_AT.set(time.time())
