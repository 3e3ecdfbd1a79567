"""The claimer: leases failures from the inbox, diagnoses them (core/diagnose.py) and
records the decisions; a row that keeps breaking this is retried alone, then parked."""

from __future__ import annotations

import contextlib
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from selfheal import metrics
from selfheal.core.diagnose import diagnose, parked_signals
from selfheal.core.sanitize import scrub_text
from selfheal.db.store import Store
from selfheal.errors import DatabaseUnavailable, PermanentError, innermost
from selfheal.logs import error_fields, first_line, get_logger
from selfheal.models import ClaimedFailure, Clock, Diagnosis, Recorded, utcnow
from selfheal.services.base import Gate, Service, Wakeup
from selfheal.settings import Settings

__all__ = ["Claimer"]

log = get_logger()


class Claimer(Service):
    name = "claimer"

    def __init__(
        self,
        store: Store,
        settings: Settings,
        wakeup: Wakeup,
        on_recorded: Callable[[list[Recorded]], None] = lambda _: None,
        clock: Clock = utcnow,
        backlog: Gate | None = None,
    ) -> None:
        super().__init__(
            wakeup,
            period=settings.poll_interval_seconds,
            reconnect_cap=settings.reconnect_max_seconds,
        )
        self._store = store
        self._settings = settings
        self._alerts = settings.alert_policy()
        self._advice = settings.advice_policy()
        self._on_recorded = on_recorded
        self._clock = clock
        # Closed while a backlog drains (full batches): diagnoses go first, recovery waits.
        self._backlog = backlog or Gate()

    async def step(self) -> None:
        await self.drain()

    async def drain(self) -> int:
        """Claim and record batches until the inbox has nothing due."""
        limit = self._settings.batch_size
        claimed = await self._store.claim(limit, self._settings.lease_seconds)
        in_flight: deque[list[uuid.UUID]] = deque([[c.event_id for c in claimed]], maxlen=2)
        try:
            if len(claimed) < limit:  # a few failures, the common case: write them now
                return len(await self._write(self._diagnose(claimed)))
            self._backlog.close()
            try:
                return await self._drain_backlog(claimed, in_flight)
            finally:
                self._backlog.open()
        except anyio.get_cancelled_exc_class():
            # Shutdown ran out of grace: hand the batches back now, not at lease expiry.
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._store.release([i for ids in in_flight for i in ids])
            raise
        except DatabaseUnavailable:
            # Best effort: else these wait for their lease to run out.
            with contextlib.suppress(DatabaseUnavailable):
                await self._store.release([i for ids in in_flight for i in ids])
            raise

    async def _drain_backlog(
        self, claimed: list[ClaimedFailure], in_flight: deque[list[uuid.UUID]]
    ) -> int:
        """Batch N is written while batch N+1 is claimed and diagnosed: Postgres and
        Python work side by side. `in_flight` holds the batches not yet written."""
        written = [0]
        limit = self._settings.batch_size
        send, receive = anyio.create_memory_object_stream[_Batch]()  # a hand-over, no buffer
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_batches, receive, written)
                async with send:
                    while True:
                        batch = self._diagnose(claimed)
                        await send.send(batch)  # once the writer has finished the one before
                        if len(claimed) < limit or self.stopping:
                            break
                        claimed = await self._store.claim(limit, self._settings.lease_seconds)
                        in_flight.append([c.event_id for c in claimed])
        except BaseExceptionGroup as group:
            raise innermost(group) from None
        return written[0]

    async def _write_batches(
        self, receive: MemoryObjectReceiveStream[_Batch], written: list[int]
    ) -> None:
        async with receive:
            async for batch in receive:
                # Let the claimer send its next claim first: writing starts with building
                # the batch's arrays (tens of ms of CPU), and Postgres should be answering
                # the claim meanwhile, not waiting for it.
                await anyio.lowlevel.checkpoint()
                written[0] += len(await self._write(batch, overlap=True))

    async def process_events(self, event_ids: Sequence[uuid.UUID]) -> list[Recorded]:
        """Diagnose and record the named events now (`selfheal heal`, `selfheal scan`)."""
        claimed = await self._store.claim_events(event_ids)
        return await self._write(self._diagnose(claimed))

    def _diagnose(self, claimed: Sequence[ClaimedFailure]) -> _Batch:
        # A row claimed before was in flight when its daemon died or its batch failed:
        # it goes alone, so that one poison row cannot take a batch down with it.
        now = self._clock()
        batch = _Batch()
        for c in claimed:
            if c.vanished:
                batch.done.append(c.event_id)
            elif c.attempts > 1:
                batch.suspects.append(c)
            else:
                try:
                    batch.diagnoses.append(diagnose(c, now))
                except Exception as exc:
                    log.warning(
                        "failure.diagnose_failed",
                        event_id=str(c.event_id),
                        error=scrub_text(first_line(exc), max_length=300),
                    )
                    batch.suspects.append(c)
                    continue
                batch.done.append(c.event_id)
                batch.claimed.append(c)
        return batch

    async def _write(self, batch: _Batch, *, overlap: bool = False) -> list[Recorded]:
        self.beat()  # a backlog's drain is one long step: each batch is progress
        recorded: list[Recorded] = []
        suspects = batch.suspects
        if batch.done:
            try:
                recorded = await self._store.record(
                    batch.diagnoses,
                    batch.done,
                    self._alerts,
                    advice=self._advice,
                    overlap=overlap,
                )
            except PermanentError as exc:
                log.warning("claimer.batch_failed", error=first_line(exc), size=len(batch.done))
                suspects = [*batch.claimed, *suspects]
            self._log_recorded(recorded)
        for suspect in suspects:
            self.beat()  # one by one, each its own round trips: progress all the same
            recorded.extend(await self._process_suspect(suspect))
        _count(batch, recorded)
        return recorded

    async def _process_suspect(self, suspect: ClaimedFailure) -> list[Recorded]:
        if suspect.attempts > self._settings.max_processing_attempts:
            await self._park(suspect, {"error": "claimed repeatedly without being recorded"})
            return []
        try:
            recorded = await self._store.record(
                [diagnose(suspect, self._clock())],
                [suspect.event_id],
                self._alerts,
                advice=self._advice,
            )
        except DatabaseUnavailable:
            raise
        except Exception as exc:  # a poison row: whatever it breaks, it breaks alone
            fields = error_fields(exc)
            if suspect.attempts >= self._settings.max_processing_attempts:
                await self._park(suspect, fields)
            else:
                delay = min(60.0, 2.0**suspect.attempts)
                log.warning(
                    "failure.processing_failed",
                    event_id=str(suspect.event_id),
                    service_name=suspect.service_name,
                    attempt=suspect.attempts,
                    retry_in=delay,
                    **fields,
                )
                await self._store.defer(
                    suspect.event_id, suspect.attempts, delay, _stored(fields["error"])
                )
            return []
        self._log_recorded(recorded)
        return recorded

    async def _park(self, suspect: ClaimedFailure, fields: dict[str, str]) -> None:
        log.error(
            "failure.parked",
            event_id=str(suspect.event_id),
            service_name=suspect.service_name,
            attempts=suspect.attempts,
            **fields,
        )
        error = _stored(fields["error"])
        await self._store.park(
            suspect.event_id, f"parked: {error}", parked_signals(error, suspect.attempts)
        )

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


@dataclass(slots=True)
class _Batch:
    claimed: list[ClaimedFailure] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    done: list[uuid.UUID] = field(default_factory=list)  # to take out of the inbox
    suspects: list[ClaimedFailure] = field(default_factory=list)


def _stored(error: str) -> str:
    """An error line as it may be stored: sanitized and short."""
    return scrub_text(error, max_length=500)


def _count(batch: _Batch, recorded: list[Recorded]) -> None:
    """The metrics of what a batch recorded: by service and category, and how long each
    took from its row to its record."""
    metrics.count_by_service(
        metrics.FAILURES_RECORDED,
        ((r.diagnosis.service_name, r.diagnosis.analysis.category.value) for r in recorded),
    )
    ids = {r.diagnosis.event_id for r in recorded}
    now = utcnow()
    for claimed in (*batch.claimed, *batch.suspects):
        if claimed.event_id in ids and claimed.failed_at is not None:
            lag = (now - claimed.failed_at).total_seconds()
            metrics.NOTIFICATION_LAG.observe(max(0.0, lag))
