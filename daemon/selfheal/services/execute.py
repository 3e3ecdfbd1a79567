"""Executing a plan: the category's recipe, with HTTP at the edge and the clock, sleep and
randomness passed in, so that tests can drive time. Every decision is core/plan.py's."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import anyio

from selfheal.core import plan as planning
from selfheal.core.diagnose import replay_failure_reason
from selfheal.core.ratelimit import SHORT_WAIT_LIMIT, rate_limit_wait
from selfheal.core.retry import retry_delays
from selfheal.core.thresholds import Thresholds
from selfheal.http.clients import HttpClients
from selfheal.http.oauth import RefreshFailed, refresh_access_token
from selfheal.http.replay import ReplayRequest, replay, replayable
from selfheal.logs import get_logger
from selfheal.models import (
    Category,
    Clock,
    Failure,
    Job,
    Outcome,
    Recipe,
    ReplayResult,
    TokenGrant,
    UserConnectionTokens,
)

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


class Executor:
    """Runs each job's plan: the pure plan first, then the recipe's requests."""

    def __init__(
        self,
        clients: HttpClients,
        tokens: TokenStore,
        thresholds: Thresholds,
        limits: RequestLimits,
        *,
        max_wait: float,
        clock: Clock,
        sleep: Sleep = anyio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._clients = clients
        self._tokens = tokens
        self._thresholds = thresholds
        self._limits = limits
        self._max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._rand = rand

    async def recover(self, job: Job) -> Outcome:
        decided = planning.plan(job, self._thresholds, replayable(job.http_method, job.endpoint))
        if decided.outcome is not None:
            return decided.outcome
        if decided.recipe is Recipe.REFRESH_AND_REPLAY:
            return await self._refresh_and_replay(job)
        if decided.recipe is Recipe.AFTER_RATE_LIMIT:
            return await self._after_rate_limit(job)
        return await self._backoff(job)

    def _schedule(self, job: Job) -> _Schedule:
        # The backoff runs from the original failure (on a first visit): attempts go out
        # at failure + 0.5 s, + 1.5 s, + 3.5 s, whatever recording and replaying took.
        start = job.failed_at if job.first_visit else self._clock()
        return _Schedule(start, self._clock, self._sleep)

    def _later(
        self, job: Job, category: Category, what: str, attempts: int, reason: str | None
    ) -> Outcome:
        return planning.later(
            job,
            category,
            what,
            attempts,
            reason,
            now=self._clock(),
            rand=self._rand(),
            max_wait=self._max_wait,
        )

    async def _replay(
        self, job: Job, attempt: int, token: str | None, backoff: float
    ) -> ReplayResult:
        request = ReplayRequest(
            event_id=job.event_id,
            method=job.http_method or "POST",
            endpoint=job.endpoint or "",
            payload=job.payload,
            attempt=job.attempts + attempt,
            access_token=token,
        )
        async with self._limits.request(job.service_name):
            result = await replay(self._clients, job.service_name, request)
        if not result.succeeded:  # a success is told by the outcome's own line
            log.info(
                "recovery.replay_failed",
                event_id=str(job.event_id),
                service_name=job.service_name,
                category=job.category.value,
                attempt=job.attempts + attempt,
                backoff=round(backoff, 6),
                http_status=result.status,
                error_code=result.error_code,
            )
        return result

    # --- network and unknown: backoff replays --------------------------------------------

    async def _backoff(self, job: Job) -> Outcome:
        result: ReplayResult | None = None
        delays = retry_delays(job.category, self._rand)
        schedule = self._schedule(job)
        for attempt, delay in enumerate(delays, start=1):
            await schedule.wait(delay)
            result = await self._replay(job, attempt, job.access_token, delay)
            if result.succeeded:
                return planning.resolved(job, attempt, "replayed after backoff", schedule.total)
        return self._later(
            job,
            job.category,
            f"{len(delays)} replays failed",
            len(delays),
            replay_failure_reason(job.service_name, result),
        )

    # --- rate_limit: never before the server allows --------------------------------------

    async def _after_rate_limit(self, job: Job) -> Outcome:
        # Headers of the original failure count only on the first visit; later the
        # schedule already honoured them.
        wait = None
        if job.first_visit:
            headers = Failure.coerce(response_headers=job.response_headers).response_headers
            wait = rate_limit_wait(headers, self._clock(), self._max_wait)
        if wait is not None and wait >= SHORT_WAIT_LIMIT:
            return planning.rate_limit_window(job, wait, 0, None, now=self._clock())
        attempts = 0
        result: ReplayResult | None = None
        server_wait = 0.0  # a short wait demanded by a replay's own 429
        schedule = self._schedule(job)
        for backoff in retry_delays(Category.RATE_LIMIT, self._rand, server_wait=wait):
            delay = backoff + server_wait
            await schedule.wait(delay)
            attempts += 1
            result = await self._replay(job, attempts, job.access_token, delay)
            if result.succeeded:
                return planning.resolved(
                    job, attempts, "replayed after the rate-limit window", schedule.total
                )
            again = rate_limit_wait(result.headers, self._clock(), self._max_wait)
            if result.status == 429 and again is not None and again >= SHORT_WAIT_LIMIT:
                reason = replay_failure_reason(job.service_name, result)
                return planning.rate_limit_window(job, again, attempts, reason, now=self._clock())
            server_wait = again if result.status == 429 and again is not None else 0.0
        return self._later(
            job,
            Category.RATE_LIMIT,
            f"{attempts} replays still rate limited",
            attempts,
            replay_failure_reason(job.service_name, result),
        )

    # --- auth: refresh, then replay with the new token ------------------------------------

    async def _refresh_and_replay(self, job: Job) -> Outcome:
        if job.user_connection_id is None:
            return self._auth_failed(job, "no user connection to refresh", 0, None)
        if not job.oauth_config:
            return self._auth_failed(job, "no oauth_config for this service", 0, None)
        stale_before: datetime | None = job.failed_at
        result: ReplayResult | None = None
        attempts = 0
        schedule = self._schedule(job)
        for delay in retry_delays(Category.AUTH, self._rand):
            await schedule.wait(delay)
            try:
                fresh = await self._fresh_token(job, stale_before)
            except RefreshFailed as exc:
                return self._refresh_failed(job, exc, attempts, result)
            attempts += 1
            result = await self._replay(job, attempts, fresh.token, delay)
            if result.succeeded:
                return planning.resolved(
                    job, attempts, "refreshed the OAuth token and replayed", schedule.total
                )
            if result.status not in (401, 403):
                break  # no longer an auth problem: leave it to an operator
            stale_before = fresh.refreshed_at
        return self._auth_failed(
            job,
            f"still unauthorized after {attempts} refresh and replay attempts",
            attempts,
            result,
        )

    async def _fresh_token(self, job: Job, stale_before: datetime | None) -> _Fresh:
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

    def _refresh_failed(
        self, job: Job, exc: RefreshFailed, attempts: int, result: ReplayResult | None
    ) -> Outcome:
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
            return self._later(
                job, Category.NETWORK, f"token refresh failed: {exc.reason}", attempts, None
            )
        if exc.reauthorize:
            return self._auth_failed(
                job,
                "re-authorization needed: the user must reconnect (invalid_grant)",
                attempts,
                None,
            )
        return self._auth_failed(job, f"token refresh failed: {exc.reason}", attempts, result)

    def _auth_failed(
        self, job: Job, action: str, attempts: int, result: ReplayResult | None
    ) -> Outcome:
        reason = replay_failure_reason(job.service_name, result)
        return planning.auth_failed(job, action, attempts, reason, self._thresholds)


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
