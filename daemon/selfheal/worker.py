"""The claimer (inbox -> diagnosis -> record) and the backlog scanner."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import anyio

from selfheal.diagnose import ClaimedFailure, Diagnosis, diagnose, parked_signals
from selfheal.logs import first_line, get_logger
from selfheal.sanitize import scrub_text
from selfheal.settings import Settings
from selfheal.store import DatabaseUnavailable, Recorded, Store
from selfheal.wakeup import Wakeup, reconnect_delay

__all__ = ["Claimer", "Scanner", "diagnose_all"]

log = get_logger()

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def diagnose_all(claimed: Sequence[ClaimedFailure], now: datetime) -> list[Diagnosis]:
    return [diagnose(c, now) for c in claimed]


class Claimer:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        wakeup: Wakeup,
        on_recorded: Callable[[list[Recorded]], None] = lambda _: None,
        clock: Clock = utcnow,
    ) -> None:
        self._store = store
        self._settings = settings
        self._wakeup = wakeup
        self._on_recorded = on_recorded
        self._clock = clock
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self.drain()
                failures = 0
            except DatabaseUnavailable as exc:
                delay = reconnect_delay(failures, self._settings.reconnect_max_seconds)
                log.warning("claimer.db_unavailable", error=first_line(exc), retry_in=delay)
                failures += 1
                await anyio.sleep(delay)
                continue
            await self._wakeup.wait(self._settings.poll_interval_seconds)

    async def drain(self) -> int:
        """Claim and record batches until the inbox has nothing due."""
        total = 0
        limit = self._settings.batch_size
        while not self._stopping:
            claimed, recorded = await self._claim(limit)
            total += len(recorded)
            if claimed < limit:
                break
        return total

    async def process_events(self, event_ids: Sequence[uuid.UUID]) -> list[Recorded]:
        """Diagnose and record the named events now (`selfheal heal`, `selfheal scan`)."""
        _, recorded = await self._claim(len(event_ids), event_ids)
        return recorded

    async def _claim(
        self, limit: int, event_ids: Sequence[uuid.UUID] | None = None
    ) -> tuple[int, list[Recorded]]:
        seen: list[ClaimedFailure] = []

        def diagnose_batch(claimed: Sequence[ClaimedFailure]) -> list[Diagnosis]:
            seen.extend(claimed)
            return diagnose_all(claimed, self._clock())

        try:
            claimed, recorded = await self._store.claim_and_record(limit, diagnose_batch, event_ids)
        except DatabaseUnavailable:
            raise
        except Exception as exc:  # the batch rolled back into the inbox
            if len(seen) == 1 or (not seen and event_ids is not None and len(event_ids) == 1):
                event_id = seen[0].event_id if seen else event_ids[0]  # type: ignore[index]
                attempts = (seen[0].attempts if seen else 0) + 1
                await self._handle_poison(event_id, attempts, exc)
                return 1, []
            log.warning("claimer.batch_failed", error=first_line(exc), size=len(seen))
            # Find the poison row: one by one, each in its own transaction.
            recorded = []
            for failure in seen:
                recorded.extend((await self._claim(1, [failure.event_id]))[1])
            return len(seen), recorded
        self._log_recorded(recorded)
        return len(claimed), recorded

    async def _handle_poison(self, event_id: uuid.UUID, attempts: int, exc: Exception) -> None:
        error = scrub_text(f"{type(exc).__name__}: {exc}", max_length=500)
        if attempts >= self._settings.max_processing_attempts:
            log.error("failure.parked", event_id=str(event_id), attempts=attempts, error=error)
            await self._store.park(event_id, f"parked: {error}", parked_signals(exc, attempts))
        else:
            delay = min(60.0, 2.0**attempts)
            log.warning(
                "failure.processing_failed",
                event_id=str(event_id),
                attempt=attempts,
                retry_in=delay,
                error=error,
            )
            await self._store.defer(event_id, attempts, delay, error)

    def _log_recorded(self, recorded: list[Recorded]) -> None:
        for r in recorded:
            d = r.diagnosis
            log.info(
                "failure.recorded",
                event_id=str(d.event_id),
                recovery_id=str(r.recovery_id),
                service_name=d.service_name,
                category=d.analysis.category.value,
                confidence=d.analysis.confidence,
                action=d.action,
            )
        if recorded:
            self._on_recorded(recorded)


class Scanner:
    """The backlog timer: finds failures the trigger never queued (rows written while
    triggers were off, before the first migrate, or by replication) however old."""

    def __init__(self, store: Store, settings: Settings, wakeup: Wakeup, claimer_wakeup: Wakeup):
        self._store = store
        self._settings = settings
        self._wakeup = wakeup
        self._claimer_wakeup = claimer_wakeup
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                seen, queued = await self._store.enqueue_backlog(
                    datetime.min.replace(tzinfo=UTC), self._settings.scan_chunk_size
                )
                failures = 0
            except DatabaseUnavailable as exc:
                delay = reconnect_delay(failures, self._settings.reconnect_max_seconds)
                log.warning("scanner.db_unavailable", error=first_line(exc), retry_in=delay)
                failures += 1
                await anyio.sleep(delay)
                continue
            log.info("scanner.swept", failures_seen=seen, queued=queued)
            if queued:
                self._claimer_wakeup.set()
            await self._wakeup.wait(self._settings.scan_interval_seconds)
