"""The claimer (inbox -> diagnosis -> record) and the backlog scanner."""

from __future__ import annotations

import contextlib
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import anyio
from anyio.abc import TaskGroup

from selfheal.core.diagnose import ClaimedFailure, Diagnosis, diagnose, parked_signals
from selfheal.core.sanitize import scrub_text
from selfheal.db.store import DatabaseUnavailable, Recorded, Store
from selfheal.logs import first_line, get_logger
from selfheal.models import Clock, utcnow
from selfheal.services.base import Gate, Wakeup, reconnect_delay
from selfheal.settings import Settings

__all__ = ["Claimer", "Scanner"]

log = get_logger()


class _Loop:
    """A worker that does its step, then waits for a wake-up or its period; backs off
    while Postgres is away. `stop()` ends it after the step in progress."""

    name = "worker"

    def __init__(self, store: Store, settings: Settings, wakeup: Wakeup) -> None:
        self._store = store
        self._settings = settings
        self._wakeup = wakeup
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    def period(self) -> float:
        return self._settings.poll_interval_seconds

    async def step(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self.step()
                failures = 0
            except DatabaseUnavailable as exc:
                delay = reconnect_delay(failures, self._settings.reconnect_max_seconds)
                log.warning(f"{self.name}.db_unavailable", error=first_line(exc), retry_in=delay)
                failures += 1
                await anyio.sleep(delay)
                continue
            await self._wakeup.wait(self.period())


class Claimer(_Loop):
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
        super().__init__(store, settings, wakeup)
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
        total = 0
        limit = self._settings.batch_size
        writing: _Background | None = None
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            try:
                while True:
                    batch = self._diagnose(claimed)
                    if writing is not None:
                        total += len(await writing.result())
                        writing = None
                    if len(claimed) < limit or self._stopping:
                        total += len(await self._write(batch))
                        break
                    writing = _Background(tg, partial(self._write, overlap=True), batch)
                    claimed = await self._store.claim(limit, self._settings.lease_seconds)
                    in_flight.append([c.event_id for c in claimed])
                if writing is not None:
                    total += len(await writing.result())
            except Exception as exc:  # raised as itself, not in an ExceptionGroup
                error = exc
                tg.cancel_scope.cancel()
        if error is not None:
            raise error
        return total

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
        recorded: list[Recorded] = []
        suspects = batch.suspects
        if batch.done:
            try:
                recorded = await self._store.record(batch.diagnoses, batch.done, overlap=overlap)
            except DatabaseUnavailable:
                raise
            except Exception as exc:
                log.warning("claimer.batch_failed", error=first_line(exc), size=len(batch.done))
                suspects = [*batch.claimed, *suspects]
            self._log_recorded(recorded)
        for suspect in suspects:
            recorded.extend(await self._process_suspect(suspect))
        return recorded

    async def _process_suspect(self, suspect: ClaimedFailure) -> list[Recorded]:
        if suspect.attempts > self._settings.max_processing_attempts:
            await self._park(suspect, "claimed repeatedly without being recorded")
            return []
        try:
            recorded = await self._store.record(
                [diagnose(suspect, self._clock())], [suspect.event_id]
            )
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            error = scrub_text(f"{type(exc).__name__}: {first_line(exc)}", max_length=500)
            if suspect.attempts >= self._settings.max_processing_attempts:
                await self._park(suspect, error)
            else:
                delay = min(60.0, 2.0**suspect.attempts)
                log.warning(
                    "failure.processing_failed",
                    event_id=str(suspect.event_id),
                    service_name=suspect.service_name,
                    attempt=suspect.attempts,
                    retry_in=delay,
                    error=error,
                )
                await self._store.defer(suspect.event_id, suspect.attempts, delay, error)
            return []
        self._log_recorded(recorded)
        return recorded

    async def _park(self, suspect: ClaimedFailure, error: str) -> None:
        log.error(
            "failure.parked",
            event_id=str(suspect.event_id),
            service_name=suspect.service_name,
            attempts=suspect.attempts,
            error=error,
        )
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


class _Background:
    """One batch being written in the task group; `result()` waits and re-raises."""

    def __init__(
        self,
        tg: TaskGroup,
        write: Callable[[_Batch], Awaitable[list[Recorded]]],
        batch: _Batch,
    ) -> None:
        self._done = anyio.Event()
        self._value: list[Recorded] = []
        self._error: Exception | None = None
        tg.start_soon(self._run, write, batch)

    async def _run(
        self, write: Callable[[_Batch], Awaitable[list[Recorded]]], batch: _Batch
    ) -> None:
        try:
            self._value = await write(batch)
        except Exception as exc:
            self._error = exc
        finally:
            self._done.set()

    async def result(self) -> list[Recorded]:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class Scanner(_Loop):
    """The backlog timer: finds failures the trigger never queued (rows written while
    triggers were off, before the first migrate, or by replication) however old."""

    name = "scanner"

    def __init__(
        self, store: Store, settings: Settings, wakeup: Wakeup, claimer_wakeup: Wakeup
    ) -> None:
        super().__init__(store, settings, wakeup)
        self._claimer_wakeup = claimer_wakeup

    def period(self) -> float:
        return self._settings.scan_interval_seconds

    async def step(self) -> None:
        seen, queued = await self._store.enqueue_backlog(self._settings.scan_chunk_size)
        log.info("scanner.swept", failures_seen=seen, queued=queued)
        if queued:
            self._claimer_wakeup.set()
