"""The healer: leases due records, plans and executes their recoveries with bounded
concurrency (global and per service), and writes the outcomes in batches. Wakes when work
arrives or comes due."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from selfheal import metrics
from selfheal.core import plan as planning
from selfheal.core.alerts import touches
from selfheal.core.effects import settle
from selfheal.core.thresholds import Thresholds
from selfheal.db.store import Store
from selfheal.errors import DatabaseUnavailable, ServiceRegistrationFailed
from selfheal.http.clients import HttpClients
from selfheal.logs import error_fields, first_line, get_logger
from selfheal.models import CircuitChange, Clock, Job, Outcome, Settled, Status, utcnow
from selfheal.services.base import Every, Gate, Service, Wakeup, retry_until_done
from selfheal.services.circuits import Circuits
from selfheal.services.execute import Executor, RequestLimits, Sleep
from selfheal.settings import Settings

__all__ = ["Healer", "open_healer"]

log = get_logger()

_OUTCOME_BATCH = 500


@asynccontextmanager
async def open_healer(
    store: Store,
    settings: Settings,
    wakeup: Wakeup,
    owner: str,
    backlog: Gate | None = None,
    *,
    on_alerts: Callable[[], None] = lambda: None,
    clock: Clock = utcnow,
    sleep: Sleep = anyio.sleep,
    rand: Callable[[], float] | None = None,
) -> AsyncIterator[Healer]:
    """A healer with its HTTP clients, closed when it is done. Tests pass their own
    clock, sleep and randomness; everything else is the production wiring."""
    clients = HttpClients(
        settings.http_timeout_seconds,
        settings.service_concurrency,
        network=settings.http_network_backend,
        allow_loopback=settings.allow_loopback,
    )
    thresholds = settings.thresholds()
    circuits = Circuits(settings.circuit_policy())
    randomness = rand or random.random
    try:
        executor = Executor(
            clients,
            store,
            RequestLimits(settings.max_concurrency, settings.service_concurrency),
            circuits,
            max_wait=settings.max_retry_wait_seconds,
            clock=clock,
            sleep=sleep,
            rand=randomness,
        )
        yield Healer(
            store,
            settings,
            executor,
            thresholds,
            circuits,
            wakeup,
            owner,
            clock,
            randomness,
            backlog,
            on_alerts,
        )
    finally:
        with anyio.CancelScope(shield=True):
            await clients.aclose()


class Healer(Service):
    name = "healer"

    def __init__(
        self,
        store: Store,
        settings: Settings,
        executor: Executor,
        thresholds: Thresholds,
        circuits: Circuits,
        wakeup: Wakeup,
        owner: str,
        clock: Clock,
        rand: Callable[[], float],
        backlog: Gate | None = None,
        on_alerts: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(
            wakeup,
            period=settings.poll_interval_seconds,
            reconnect_cap=settings.reconnect_max_seconds,
        )
        self._backlog = backlog or Gate()  # closed while the claimer drains a backlog
        self._store = store
        self._settings = settings
        self._executor = executor
        self._thresholds = thresholds
        self._circuits = circuits
        self._owner = owner
        self._clock = clock
        self._rand = rand
        self._on_alerts = on_alerts  # a batch told alert groups something: the notifier looks
        # A probe is one request: its lease outlasts it (a refresh and a replay).
        self._probe_lease = 3 * settings.http_timeout_seconds
        self._slots = anyio.CapacityLimiter(settings.max_recoveries)
        self._registration_warned = False
        self._tidying = Every(1.0)
        # At most five probe claims a second: a busy healer need not pay a round trip a step.
        self._probing = Every(0.2)
        self._recoveries: TaskGroup | None = None
        self._outcomes: MemoryObjectSendStream[Outcome] | None = None

    async def main(self) -> None:
        send, receive = anyio.create_memory_object_stream[Outcome](math.inf)
        try:
            async with anyio.create_task_group() as writing:
                writing.start_soon(self._write_outcomes, receive)
                async with send, anyio.create_task_group() as helpers:
                    helpers.start_soon(self._renew_leases)
                    helpers.start_soon(self._watch_targets)
                    # Leaving this group waits for the recoveries in flight (within the grace).
                    async with anyio.create_task_group() as recoveries:
                        self._recoveries, self._outcomes = recoveries, send
                        await self.loop()
                    helpers.cancel_scope.cancel()
        finally:
            self._recoveries = self._outcomes = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._store.release_records(self._owner)

    async def step(self) -> float | None:
        """Claim what is due and free slots allow; how soon to look again."""
        with self.rest():  # diagnosing a backlog goes first
            await self._backlog.wait_open()
        free = int(self._slots.available_tokens)
        if free == 0:
            return None  # a finishing recovery wakes us
        await self._tidy()
        jobs = await self._claim_probes(free)
        jobs += await self._claim(min(free - len(jobs), self._settings.batch_size))
        assert self._recoveries is not None  # noqa: S101 - main() is the only caller
        for job in jobs:
            token = object()
            self._slots.acquire_on_behalf_of_nowait(token)
            self._recoveries.start_soon(self._heal, job, token)
        if len(jobs) == free:
            return 0.0  # more may be due: claim again at once
        # Sleep until the earliest record comes due, new work arrives or a slot frees.
        return await self._store.seconds_until_due()

    async def heal_now(self, record_ids: Sequence[uuid.UUID]) -> list[Outcome]:
        """Recover the named records now, those pending and due (`heal`, `scan`)."""
        await self._store.tidy_circuits()
        jobs = await self._claim(len(record_ids), record_ids)
        outcomes: list[Outcome] = []

        async def heal(job: Job) -> None:
            outcomes.append(await self._recover(job))

        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(heal, job)
        settled = self._settle(outcomes)
        if settled.outcomes:
            await self._record(settled)
            _count(settled)
        return list(settled.outcomes)

    async def _claim(
        self,
        limit: int,
        record_ids: Sequence[uuid.UUID] | None = None,
        probe_ids: Sequence[uuid.UUID] = (),
    ) -> list[Job]:
        if limit <= 0:
            return []
        jobs = await self._store.claim_due(
            limit,
            self._owner,
            self._settings.lease_seconds,
            self._thresholds,
            record_ids,
            probe_ids,
        )
        self._circuits.learn(jobs)
        return await self._with_services(jobs)

    async def _tidy(self) -> None:
        """At most once a second: successes the integrations wrote reset the counts, and
        failures no circuit holds any more are due again."""
        if self._tidying.due():
            await self._store.tidy_circuits()

    async def _claim_probes(self, free: int) -> list[Job]:
        """One probe for each circuit due one, across daemons (see CLAIM_PROBES)."""
        if not self._probing.due():
            return []
        probes = await self._store.claim_probes(self._owner, self._probe_lease, free)
        ids = [p.record_id for p in probes if p.record_id is not None][:free]
        for probe in probes:
            log.info(
                "circuit.probe",
                service_name=probe.service_name,
                user_id=str(probe.user_id) if probe.user_id else None,
                failures_waiting=probe.waiting,
            )
        return await self._claim(len(ids), ids, ids) if ids else []

    def _settle(self, outcomes: Sequence[Outcome]) -> Settled:
        return settle(
            outcomes,
            self._thresholds,
            self._circuits.policy,
            now=self._clock(),
            rand=self._rand(),
        )

    async def _record(self, settled: Settled) -> None:
        """Write a settled batch, then tell this daemon's circuits and the log what it did."""
        told = touches(settled)
        released = await self._store.record_outcomes(settled, told, self._owner)
        if told:
            self._on_alerts()
        self._circuits.written(settled)
        await self._log_circuits(settled, released)

    async def _log_circuits(self, settled: Settled, released: dict[str, int]) -> None:
        effects = settled.effects
        opened = [e.service_id for e in effects.services if e.circuit is CircuitChange.OPEN]
        waiting = await self._store.circuit_waiting(opened) if opened else {}
        for service in effects.services:
            name = service.service_name
            if service.circuit is CircuitChange.OPEN:
                log.warning(
                    "circuit.opened", service_name=name, failures_waiting=waiting.get(name, 0)
                )
            elif service.circuit is CircuitChange.CLOSE and name in released:
                log.info("circuit.closed", service_name=name, failures_released=released[name])
        for user in effects.user_connections:
            if user.circuit is CircuitChange.OPEN:
                log.warning(
                    "circuit.opened",
                    service_name=user.service_name,
                    user_connection_id=str(user.user_connection_id),
                )

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

    async def _heal(self, job: Job, token: object) -> None:
        try:
            outcome = await self._recover(job)
            assert self._outcomes is not None  # noqa: S101 - open while recoveries run
            self._outcomes.send_nowait(outcome)
        finally:
            self._slots.release_on_behalf_of(token)
            self.wakeup.set()  # a slot is free

    async def _recover(self, job: Job) -> Outcome:
        try:
            outcome = await self._executor.recover(job)
        except Exception as exc:  # a bug must not take the daemon down or lose the record
            log.error(
                "recovery.crashed",
                event_id=str(job.event_id),
                service_name=job.service_name,
                **error_fields(exc),
            )
            outcome = planning.crashed(job, type(exc).__name__, now=self._clock())
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

    async def _watch_targets(self) -> None:
        """While recoveries run, what other daemons disabled or found down reaches them
        within a second (each checks before its next request)."""
        while True:
            await anyio.sleep(1.0)
            if self._slots.borrowed_tokens:
                try:
                    await self.refresh_targets()
                except DatabaseUnavailable as exc:
                    log.warning("healer.watch_failed", error=first_line(exc))

    async def refresh_targets(self) -> None:
        """Read what the database says is down or disabled (other daemons' decisions)."""
        self._circuits.sync(await self._store.target_states())

    async def _renew_leases(self) -> None:
        every = self._settings.lease_seconds / 3
        while True:
            await anyio.sleep(every)
            if self._slots.borrowed_tokens:
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
                settled = self._settle(batch)
                await retry_until_done(
                    "healer", partial(self._record, settled), self._settings.reconnect_max_seconds
                )
                _count(settled)
                self.wakeup.set()  # a new next_retry_at may be the earliest now


def _count(settled: Settled) -> None:
    """The metrics of a written batch: its outcomes, and how long the healed took."""
    metrics.count_by_service(
        metrics.RECOVERIES, ((o.job.service_name, o.status.value) for o in settled.outcomes)
    )
    now = utcnow()
    for outcome in settled.outcomes:
        if outcome.status is Status.RESOLVED:
            took = (now - outcome.job.failed_at).total_seconds()
            metrics.TIME_TO_RECOVER.labels(outcome.job.category.value).observe(max(0.0, took))
