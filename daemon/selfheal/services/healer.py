"""The healer: leases due records, recovers them with bounded concurrency (global and per
service), and writes the outcomes in batches. Wakes when work arrives or comes due."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from selfheal.core.thresholds import Thresholds
from selfheal.db.store import DatabaseUnavailable, ServiceRegistrationFailed, Store
from selfheal.http.outbound import HttpClients
from selfheal.logs import first_line, get_logger
from selfheal.models import Clock, Status, utcnow
from selfheal.services.base import Gate, Wakeup, reconnect_delay
from selfheal.services.execute import Job, Outcome, Recoverer, RequestLimits
from selfheal.settings import Settings

__all__ = ["Healer", "open_healer"]

log = get_logger()

_OUTCOME_BATCH = 500
_CRASH_RETRY = timedelta(minutes=5)


@asynccontextmanager
async def open_healer(
    store: Store, settings: Settings, wakeup: Wakeup, owner: str, backlog: Gate | None = None
) -> AsyncIterator[Healer]:
    """A healer with its HTTP clients, closed when it is done."""
    clients = HttpClients(settings.http_timeout_seconds, settings.service_concurrency)
    try:
        clock = utcnow
        recoverer = Recoverer(
            clients,
            store,
            clock,
            limits=RequestLimits(settings.max_concurrency, settings.service_concurrency),
            max_wait=settings.max_retry_wait_seconds,
        )
        yield Healer(store, settings, recoverer, wakeup, owner, clock, backlog=backlog)
    finally:
        with anyio.CancelScope(shield=True):
            await clients.aclose()


class Healer:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        recoverer: Recoverer,
        wakeup: Wakeup,
        owner: str,
        clock: Clock,
        thresholds: Thresholds | None = None,
        backlog: Gate | None = None,
    ) -> None:
        self._backlog = backlog or Gate()  # closed while the claimer drains a backlog
        self._store = store
        self._settings = settings
        self._recoverer = recoverer
        self._wakeup = wakeup
        self._owner = owner
        self._clock = clock
        self._thresholds = thresholds or Thresholds()
        self._capacity = settings.max_recoveries
        self._active = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._stopping = False
        self._registration_warned = False

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        send, receive = anyio.create_memory_object_stream[Outcome](math.inf)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_outcomes, receive)
                async with anyio.create_task_group() as renewing, send:
                    renewing.start_soon(self._renew_leases)
                    await self._claim_loop(tg, send)
                    await self._idle.wait()  # in-flight recoveries finish (within the grace)
                    renewing.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._store.release_records(self._owner)

    async def _claim_loop(
        self, tg: anyio.abc.TaskGroup, send: MemoryObjectSendStream[Outcome]
    ) -> None:
        failures = 0
        poll = self._settings.poll_interval_seconds
        while not self._stopping:
            await self._backlog.wait_open()
            free = self._capacity - self._active
            try:
                if free > 0:
                    jobs = await self._with_services(
                        await self._store.claim_due(
                            min(free, self._settings.batch_size),
                            self._owner,
                            self._settings.lease_seconds,
                            self._thresholds,
                        )
                    )
                    for job in jobs:
                        self._started()
                        tg.start_soon(self._heal, job, send)
                    if len(jobs) == free:
                        continue  # more may be due: claim again when a slot frees
                delay = await self._store.seconds_until_due() if free > 0 else None
                failures = 0
            except DatabaseUnavailable as exc:
                delay = reconnect_delay(failures, self._settings.reconnect_max_seconds)
                log.warning("healer.db_unavailable", error=first_line(exc), retry_in=delay)
                failures += 1
            # Sleep until the earliest record comes due, new work arrives or a slot frees.
            await self._wakeup.wait(poll if delay is None else min(delay, poll))

    async def heal_now(self, record_ids: Sequence[uuid.UUID]) -> list[Outcome]:
        """Recover the named records now, those pending and due (`heal`, `scan`)."""
        jobs = await self._with_services(
            await self._store.claim_due(
                len(record_ids),
                self._owner,
                self._settings.lease_seconds,
                self._thresholds,
                record_ids,
            )
        )
        outcomes: list[Outcome] = []

        async def heal(job: Job) -> None:
            outcomes.append(await self._recover(job))

        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(heal, job)
        if outcomes:
            await self._store.record_outcomes(outcomes, self._owner)
        return outcomes

    async def _with_services(self, jobs: list[Job]) -> list[Job]:
        unknown = sorted({j.service_name for j in jobs if j.service_id is None})
        if not unknown:
            return jobs
        try:
            ids = await self._store.register_services(unknown)
        except ServiceRegistrationFailed as exc:
            if not self._registration_warned:
                log.warning("healer.service_not_registered", error=str(exc), services=unknown)
                self._registration_warned = True
            return jobs
        return [
            replace(j, service_id=ids[j.service_name]) if j.service_name in ids else j for j in jobs
        ]

    def _started(self) -> None:
        self._active += 1
        self._idle = anyio.Event() if self._idle.is_set() else self._idle

    async def _heal(self, job: Job, send: MemoryObjectSendStream[Outcome]) -> None:
        try:
            send.send_nowait(await self._recover(job))
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()
            self._wakeup.set()  # a slot is free

    async def _recover(self, job: Job) -> Outcome:
        try:
            outcome = await self._recoverer.recover(job)
        except Exception as exc:  # a bug must not take the daemon down or lose the record
            log.exception(
                "recovery.crashed", event_id=str(job.event_id), service_name=job.service_name
            )
            outcome = Outcome(
                job,
                Status.PENDING,
                f"recovery crashed ({type(exc).__name__}); retry scheduled",
                next_retry_at=self._clock() + _CRASH_RETRY,
                deferrals=job.deferrals + 1,
            )
        log.info(
            f"recovery.{outcome.status.value}",
            event_id=str(job.event_id),
            service_name=job.service_name,
            category=job.category.value,
            attempts=outcome.attempts,
            backoff=round(outcome.backoff, 6),
            action=outcome.action,
            next_retry_at=outcome.next_retry_at.isoformat() if outcome.next_retry_at else None,
        )
        return outcome

    async def _renew_leases(self) -> None:
        every = self._settings.lease_seconds / 3
        while True:
            await anyio.sleep(every)
            if self._active:
                try:
                    await self._store.renew_leases(self._owner, self._settings.lease_seconds)
                except DatabaseUnavailable as exc:
                    log.warning("healer.renew_failed", error=first_line(exc))

    async def _write_outcomes(self, receive: MemoryObjectReceiveStream[Outcome]) -> None:
        """One statement per batch of outcomes: under load they queue up and go together."""
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < _OUTCOME_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await self._write(batch)

    async def _write(self, batch: list[Outcome]) -> None:
        failures = 0
        while True:
            try:
                await self._store.record_outcomes(batch, self._owner)
                self._wakeup.set()  # a new next_retry_at may be the earliest now
                return
            except DatabaseUnavailable as exc:
                delay = reconnect_delay(failures, self._settings.reconnect_max_seconds)
                log.warning("healer.write_failed", error=first_line(exc), retry_in=delay)
                failures += 1
                await anyio.sleep(delay)
