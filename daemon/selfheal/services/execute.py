"""Executing a plan: the category's recipe, with HTTP at the edge and the clock, sleep and
randomness passed in, so that tests can drive time. Every decision is core/plan.py's."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

import anyio

from selfheal.core import plan as planning
from selfheal.core.circuit import probe_counts, probe_delay, service_down
from selfheal.core.diagnose import replay_failure_reason
from selfheal.core.ratelimit import SHORT_WAIT_LIMIT, rate_limit_wait
from selfheal.core.retry import retry_delays
from selfheal.http.clients import HttpClients
from selfheal.http.oauth import RefreshFailed, refresh_access_token
from selfheal.http.replay import ADDRESS_REFUSED, ReplayRequest, replay, replayable
from selfheal.logs import get_logger
from selfheal.models import (
    Category,
    Clock,
    Failure,
    Job,
    Outcome,
    Recipe,
    ReplayResult,
    Status,
    TokenGrant,
    UserConnectionTokens,
)
from selfheal.services.circuits import Circuits, Stop

__all__ = ["Executor", "RequestLimits", "TokenStore", "token_digest"]

log = get_logger()

Sleep = Callable[[float], Awaitable[None]]


class TokenSession(Protocol):
    """One user connection's tokens, read and written under its refresh lock."""

    async def tokens(self) -> UserConnectionTokens | None: ...
    async def save(self, grant: TokenGrant) -> datetime: ...
    async def mark_reauth_required(self, digest: str) -> None: ...


class TokenStore(Protocol):
    """The database side of token refresh, serialized per user connection."""

    def refresh_lock(
        self, user_connection_id: uuid.UUID, lease_seconds: float
    ) -> AbstractAsyncContextManager[TokenSession]: ...


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RequestLimits:
    """Outbound requests in flight: at most `total`, and `per_service` to any one service,
    so that a failing service is never hammered. Waits (backoff) hold no slot."""

    def __init__(self, total: int, per_service: int) -> None:
        self._total = self._semaphore(total)
        self._per_service = per_service
        self._services: dict[str, anyio.Semaphore] = {}

    @staticmethod
    def _semaphore(value: int) -> anyio.Semaphore:
        # fast_acquire: no event-loop round trip when a slot is free (the common case).
        return anyio.Semaphore(value, max_value=value, fast_acquire=True)

    @asynccontextmanager
    async def request(self, service_name: str) -> AsyncIterator[None]:
        limiter = self._services.get(service_name)
        if limiter is None:
            limiter = self._services[service_name] = self._semaphore(self._per_service)
        async with limiter, self._total:
            yield


@dataclass(frozen=True, slots=True)
class _Fresh:
    token: str
    refreshed_at: datetime | None


@dataclass(slots=True)
class _Visit:
    """One visit's replays so far."""

    attempts: int = 0
    result: ReplayResult | None = None
    refreshed: bool = False  # it asked the token endpoint for a new token


class _Halt(Exception):
    """The next request must not go out (a disable, an open circuit), or the last one
    opened the circuit: the visit ends here."""

    def __init__(self, stop: Stop | None) -> None:
        super().__init__(stop)
        self.stop = stop  # None: the visit's own replay opened the circuit


#: Backoff runs from the original failure only while that is recent; an older failure
#: (a backlog, a re-enabled service) gets the schedule's spacing from now.
_FRESH_FAILURE = timedelta(seconds=5)


class Executor:
    """Runs each job's plan: the pure plan first, then the recipe's requests, each of them
    only while the job's service and user connection are neither disabled nor down."""

    def __init__(
        self,
        clients: HttpClients,
        tokens: TokenStore,
        limits: RequestLimits,
        circuits: Circuits,
        *,
        max_wait: float,
        clock: Clock,
        sleep: Sleep = anyio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._clients = clients
        self._tokens = tokens
        self._limits = limits
        self._circuits = circuits
        self._max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._rand = rand

    async def recover(self, job: Job) -> Outcome:
        decided = planning.plan(job, replayable(job.http_method, job.endpoint))
        if decided.outcome is not None:
            return decided.outcome
        visit = _Visit()
        try:
            outcome = await self._run(job, decided.recipe, visit)
        except _Halt as halt:
            outcome = self._halted(job, halt.stop, visit)
        # Admins hear of token refreshes (core/alerts.py): the visit that asked for one says so.
        return replace(outcome, token_refreshed=True) if visit.refreshed else outcome

    async def _run(self, job: Job, recipe: Recipe | None, visit: _Visit) -> Outcome:
        if job.probe:
            return await self._probe(job, visit)
        if recipe is Recipe.REFRESH_AND_REPLAY:
            return await self._refresh_and_replay(job, visit)
        if recipe is Recipe.AFTER_RATE_LIMIT:
            return await self._after_rate_limit(job, visit)
        return await self._backoff(job, visit)

    def _halted(self, job: Job, stop: Stop | None, visit: _Visit) -> Outcome:
        reason = replay_failure_reason(job.service_name, visit.result)
        if stop is None:
            return planning.circuit_opened(job, visit.attempts, reason, self._next_probe(0))
        if stop is Stop.CIRCUIT_OPEN:
            waiting = planning.held(job, self._next_probe(0))
            return replace(waiting, attempts=visit.attempts, reason=reason)
        if stop is Stop.ADDRESS_REFUSED:
            refused = visit.result.body_sample if visit.result else "refused"
            return Outcome(
                job,
                Status.PENDING,
                f"not sent: {refused}; an operator must fix the event's endpoint",
                attempts=visit.attempts,
            )
        whom = "this user connection" if stop is Stop.USER_CONNECTION_DISABLED else job.service_name
        return Outcome(
            job,
            Status.DISABLED,
            f"recovery disabled for {whom} while it ran; no further request",
            attempts=visit.attempts,
            reason=reason,
        )

    def _next_probe(self, failed_probes: int) -> datetime:
        delay = probe_delay(failed_probes, self._rand(), self._circuits.policy)
        return self._clock() + timedelta(seconds=delay)

    def _schedule(self, job: Job, first_delay: float) -> _Schedule:
        # The backoff runs from the original failure (on a first visit): attempts go out
        # at failure + 0.5 s, + 1.5 s, + 3.5 s, whatever recording and replaying took. A
        # later visit (a deferred retry come due, a circuit that closed) has waited
        # already: its first attempt goes at once, the rest keep their spacing.
        now = self._clock()
        if job.first_visit and now - job.failed_at < _FRESH_FAILURE:
            start = job.failed_at
        elif job.first_visit:
            start = now
        else:
            start = now - timedelta(seconds=first_delay)
        return _Schedule(start, self._clock, self._sleep)

    def _later(
        self,
        job: Job,
        category: Category,
        what: str,
        visit: _Visit,
        *,
        unhealed: bool = True,
    ) -> Outcome:
        return planning.later(
            job,
            category,
            what,
            visit.attempts,
            replay_failure_reason(job.service_name, visit.result),
            now=self._clock(),
            rand=self._rand(),
            max_wait=self._max_wait,
            unhealed=unhealed,
        )

    async def _replay(
        self, job: Job, visit: _Visit, token: str | None, backoff: float
    ) -> ReplayResult:
        """One request, if the job's targets still allow it when its turn comes (after the
        wait for a free slot); its answer feeds the circuit."""
        attempt = job.attempts + visit.attempts + 1
        request = ReplayRequest(
            event_id=job.event_id,
            method=job.http_method or "POST",
            endpoint=job.endpoint or "",
            payload=job.payload,
            attempt=attempt,
            access_token=token,
        )
        async with self._limits.request(job.service_name):
            stop = self._circuits.stop(job)
            if stop is not None:
                raise _Halt(stop)
            result = await replay(self._clients, job.service_name, request)
        visit.result = result
        if result.error_code == ADDRESS_REFUSED:
            raise _Halt(Stop.ADDRESS_REFUSED)  # nothing went out: no attempt, no circuit
        visit.attempts += 1
        if not result.succeeded:  # a success is told by the outcome's own line
            log.info(
                "recovery.replay_failed",
                event_id=str(job.event_id),
                service_name=job.service_name,
                category=job.category.value,
                attempt=attempt,
                backoff=round(backoff, 6),
                http_status=result.status,
                error_code=result.error_code,
            )
        if self._circuits.replayed(job, result):  # False for a probe: its circuit is open
            raise _Halt(None)
        return result

    # --- a circuit's probe: one request -------------------------------------------------

    async def _probe(self, job: Job, visit: _Visit) -> Outcome:
        if not job.service_circuit_open and job.category is Category.AUTH:
            return await self._refresh_and_replay(job, visit, budget=1)
        result = await self._replay(job, visit, job.access_token, 0.0)
        if result.succeeded:
            return planning.resolved(job, visit.attempts, "probe succeeded: replayed", 0.0)
        if not service_down(result):
            # The service answered: it is up, and this failure is the request's own. The
            # circuit closes; the failure is settled by its own category.
            answered = self._later(job, job.category, "the probe's own request failed", visit)
            return replace(answered, closes_circuit=True)
        return planning.probe_failed(
            job,
            visit.attempts,
            replay_failure_reason(job.service_name, result),
            self._next_probe(job.service_failed_probes + 1),
            counts=probe_counts(job.circuit_counted_at, self._clock(), self._circuits.policy),
        )

    # --- network and unknown: backoff replays --------------------------------------------

    async def _backoff(self, job: Job, visit: _Visit) -> Outcome:
        delays = retry_delays(job.category, self._rand)
        schedule = self._schedule(job, delays[0])
        for delay in delays:
            await schedule.wait(delay)
            result = await self._replay(job, visit, job.access_token, delay)
            if result.succeeded:
                return planning.resolved(
                    job, visit.attempts, "replayed after backoff", schedule.total
                )
        return self._later(job, job.category, f"{len(delays)} replays failed", visit)

    # --- rate_limit: never before the server allows --------------------------------------

    async def _after_rate_limit(self, job: Job, visit: _Visit) -> Outcome:
        # Headers of the original failure count only on the first visit; later the
        # schedule already honoured them.
        wait = None
        if job.first_visit:
            headers = Failure.coerce(response_headers=job.response_headers).response_headers
            wait = rate_limit_wait(headers, self._clock(), self._max_wait)
        if wait is not None and wait >= SHORT_WAIT_LIMIT:
            return planning.rate_limit_window(job, wait, 0, None, now=self._clock())
        server_wait = 0.0  # a short wait demanded by a replay's own 429
        backoffs = retry_delays(Category.RATE_LIMIT, self._rand, server_wait=wait)
        schedule = self._schedule(job, backoffs[0])
        for backoff in backoffs:
            delay = backoff + server_wait
            await schedule.wait(delay)
            result = await self._replay(job, visit, job.access_token, delay)
            if result.succeeded:
                return planning.resolved(
                    job, visit.attempts, "replayed after the rate-limit window", schedule.total
                )
            again = rate_limit_wait(result.headers, self._clock(), self._max_wait)
            if result.status == 429 and again is not None and again >= SHORT_WAIT_LIMIT:
                reason = replay_failure_reason(job.service_name, result)
                return planning.rate_limit_window(
                    job, again, visit.attempts, reason, now=self._clock()
                )
            server_wait = again if result.status == 429 and again is not None else 0.0
        # Rate limits never disable: nothing here counts towards a threshold.
        what = f"{visit.attempts} replays still rate limited"
        return self._later(job, Category.RATE_LIMIT, what, visit, unhealed=False)

    # --- auth: refresh, then replay with the new token ------------------------------------

    async def _refresh_and_replay(self, job: Job, visit: _Visit, budget: int = 3) -> Outcome:
        if job.user_connection_id is None:
            return self._auth_failed(job, "no user connection to refresh", visit)
        if not job.oauth_config:
            return self._auth_failed(job, "no oauth_config for this service", visit)
        stale_before: datetime | None = job.failed_at
        delays = retry_delays(Category.AUTH, self._rand)[:budget]
        schedule = self._schedule(job, delays[0])
        for delay in delays:
            await schedule.wait(delay)
            try:
                fresh = await self._fresh_token(job, stale_before, visit)
            except RefreshFailed as exc:
                return self._refresh_failed(job, exc, visit)
            result = await self._replay(job, visit, fresh.token, delay)
            if result.succeeded:
                return planning.resolved(
                    job, visit.attempts, "refreshed the OAuth token and replayed", schedule.total
                )
            if result.status not in (401, 403):
                break  # no longer an auth problem: leave it to an operator
            stale_before = fresh.refreshed_at
        return self._auth_failed(
            job,
            f"still unauthorized after {visit.attempts} refresh and replay attempts",
            visit,
        )

    async def _fresh_token(self, job: Job, stale_before: datetime | None, visit: _Visit) -> _Fresh:
        """A token newer than `stale_before`: refreshed here, or by whoever refreshed it
        meanwhile (one refresh per user connection, however many failures arrive at once)."""
        assert job.user_connection_id is not None and job.oauth_config is not None  # noqa: S101
        deadline = self._clients.timeout
        # The lease outlasts the refresh, which the HTTP deadline bounds.
        async with self._tokens.refresh_lock(job.user_connection_id, 3 * deadline) as session:
            tokens = await session.tokens()
            if tokens is None:
                raise RefreshFailed("the user connection no longer exists")
            refresh_token = tokens.refresh_token
            if not refresh_token:
                raise RefreshFailed("the user connection has no refresh token", reauthorize=True)
            if tokens.reauth_digest is not None and tokens.reauth_digest == token_digest(
                refresh_token
            ):
                raise RefreshFailed("re-authorization needed (invalid_grant)", reauthorize=True)
            refreshed_at = tokens.refreshed_at
            newer = stale_before is None or (
                refreshed_at is not None and refreshed_at > stale_before
            )
            if refreshed_at is not None and newer and tokens.access_token:
                return _Fresh(tokens.access_token, refreshed_at)
            visit.refreshed = True
            try:
                async with self._limits.request(job.service_name):
                    grant = await refresh_access_token(
                        self._clients.client, job.oauth_config, refresh_token, deadline
                    )
            except RefreshFailed as exc:
                if exc.reauthorize:
                    await session.mark_reauth_required(token_digest(refresh_token))
                raise
            refreshed_at = await session.save(grant)
            log.info(
                "recovery.token_refreshed",
                event_id=str(job.event_id),
                service_name=job.service_name,
                rotated=grant.refresh_token is not None,
            )
            return _Fresh(grant.access_token, refreshed_at)

    def _refresh_failed(self, job: Job, exc: RefreshFailed, visit: _Visit) -> Outcome:
        log.warning(
            "recovery.refresh_failed",
            event_id=str(job.event_id),
            service_name=job.service_name,
            reason=exc.reason,
            reauthorize=exc.reauthorize,
        )
        if exc.temporary:
            # The token endpoint is down: not the user's fault; back off as for a network
            # failure and try again later.
            what = f"token refresh failed: {exc.reason}"
            return self._later(job, Category.NETWORK, what, visit, unhealed=False)
        if exc.reauthorize:
            return self._auth_failed(
                job, "re-authorization needed: the user must reconnect (invalid_grant)", visit
            )
        return self._auth_failed(job, f"token refresh failed: {exc.reason}", visit)

    def _auth_failed(self, job: Job, action: str, visit: _Visit) -> Outcome:
        reason = replay_failure_reason(job.service_name, visit.result)
        return planning.auth_failed(job, action, visit.attempts, reason)


class _Schedule:
    """Attempt times as offsets from a start: each wait sleeps until the next one is due
    (at once if it is already past), so no attempt goes out before its time and the time
    spent replaying is not added to the schedule."""

    def __init__(self, start: datetime, clock: Clock, sleep: Sleep) -> None:
        self._due = start
        self._clock = clock
        self._sleep = sleep
        self.total = 0.0

    async def wait(self, delay: float) -> None:
        self.total += delay
        self._due += timedelta(seconds=delay)
        await self._sleep(max(0.0, (self._due - self._clock()).total_seconds()))
