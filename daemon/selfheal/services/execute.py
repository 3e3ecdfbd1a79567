"""Recovery of one recorded failure: the category's recipe, with HTTP at the edge and the
clock, sleep and randomness passed in, so that tests can drive time."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio

from selfheal.core.analyzer import analyze
from selfheal.core.diagnose import failure_reason
from selfheal.core.ratelimit import SHORT_WAIT_LIMIT, rate_limit_wait
from selfheal.core.retry import retry_delays, schedule_retry
from selfheal.core.thresholds import Thresholds, crosses_threshold
from selfheal.http.outbound import (
    HttpClients,
    RefreshFailed,
    ReplayRequest,
    ReplayResult,
    TokenGrant,
    refresh_access_token,
    replay,
    replayable,
)
from selfheal.logs import get_logger
from selfheal.models import Category, Clock, Failure, Status

__all__ = ["Job", "Outcome", "Recoverer", "RequestLimits", "TokenStore", "token_digest"]

log = get_logger()


@dataclass(frozen=True, slots=True)
class Job:
    """A leased record and what its recovery needs. Tokens are never shown in repr."""

    record_id: uuid.UUID
    event_id: uuid.UUID
    service_name: str
    category: Category
    attempts: int
    deferrals: int
    endpoint: str | None
    http_method: str | None
    payload: Any
    response_headers: Any
    failed_at: datetime
    service_id: uuid.UUID | None
    service_enabled: bool
    oauth_config: Mapping[str, Any] | None
    connection_id: uuid.UUID | None
    connection_enabled: bool
    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    connection_failures: int
    threshold_count: int
    event_deleted: bool = False  # the integration_events row is gone (retention)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Job:
        values = list(row)
        values[3] = _category(values[3])
        oauth = values[13]
        values[13] = oauth if isinstance(oauth, Mapping) else None
        return cls(*values)

    @property
    def first_visit(self) -> bool:
        return self.attempts == 0 and self.deferrals == 0


def _category(value: Any) -> Category:
    try:
        return Category(value)
    except ValueError:
        return Category.UNKNOWN


@dataclass(frozen=True, slots=True)
class Outcome:
    job: Job
    status: Status
    action: str
    attempts: int = 0  # replays made by this visit
    next_retry_at: datetime | None = None
    deferrals: int = 0
    reason: str | None = None  # a newer failure_reason (sanitized), or keep the old one
    disable_service: str | None = None
    disable_connection: str | None = None
    connection_failed: bool = False
    rate_limited_until: datetime | None = None
    backoff: float = 0.0  # the waits of the schedule, in seconds (not the time they took)

    @property
    def resolved(self) -> bool:
        return self.status is Status.RESOLVED


class TokenSession(Protocol):
    async def tokens(self) -> tuple[Any, ...] | None: ...
    async def save(self, grant: TokenGrant) -> datetime: ...
    async def mark_reauth_required(self, digest: str) -> None: ...


class TokenStore(Protocol):
    """The database side of token refresh, serialized per user connection."""

    def refresh_lock(
        self, connection_id: uuid.UUID
    ) -> AbstractAsyncContextManager[TokenSession]: ...


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


Sleep = Callable[[float], Awaitable[None]]


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


class Recoverer:
    def __init__(
        self,
        clients: HttpClients,
        tokens: TokenStore,
        clock: Clock,
        sleep: Sleep = anyio.sleep,
        rand: Callable[[], float] = random.random,
        thresholds: Thresholds | None = None,
        max_wait: float = 3600.0,
        limits: RequestLimits | None = None,
    ) -> None:
        self._clients = clients
        self._tokens = tokens
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._thresholds = thresholds or Thresholds()
        self._max_wait = max_wait
        self._limits = limits or RequestLimits(64, 8)

    async def recover(self, job: Job) -> Outcome:
        if job.event_deleted:
            return Outcome(job, Status.PENDING, "the event was deleted; nothing to replay")
        if not job.service_enabled:
            return Outcome(job, Status.DISABLED, f"recovery disabled for {job.service_name}")
        if job.category is Category.AUTH and not job.connection_enabled:
            return Outcome(job, Status.DISABLED, "recovery disabled for this user connection")
        if (
            job.first_visit
            and job.category is not Category.AUTH
            and crosses_threshold(
                job.category, job.threshold_count, job.threshold_count, self._thresholds
            )
        ):
            reason = self._threshold_reason(job)
            return Outcome(
                job, Status.DISABLED, f"service disabled: {reason}", disable_service=reason
            )
        if job.category is Category.DATA:
            return Outcome(job, Status.PENDING, "no automatic retry; admin review of the payload")
        why_not = replayable(job.http_method, job.endpoint)
        if why_not is not None:
            return Outcome(job, Status.PENDING, f"cannot replay: {why_not}")
        if job.category is Category.AUTH:
            return await self._recover_auth(job)
        if job.category is Category.RATE_LIMIT:
            return await self._recover_rate_limit(job)
        return await self._recover_by_backoff(job)

    def _threshold_reason(self, job: Job) -> str:
        if job.category is Category.NETWORK:
            minutes = int(self._thresholds.network_window.total_seconds() // 60)
            return f"{job.threshold_count} network failures in {minutes} minutes"
        return f"{job.threshold_count} consecutive {job.category.value} failures"

    def _schedule(self, job: Job) -> _Schedule:
        # The backoff runs from the original failure (on a first visit): attempts go out
        # at failure + 0.5 s, + 1.5 s, + 3.5 s, whatever recording and replaying took.
        start = job.failed_at if job.first_visit else self._clock()
        return _Schedule(start, self._clock, self._sleep)

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

    async def _recover_by_backoff(self, job: Job) -> Outcome:
        result: ReplayResult | None = None
        delays = retry_delays(job.category, self._rand)
        schedule = self._schedule(job)
        for attempt, delay in enumerate(delays, start=1):
            await schedule.wait(delay)
            result = await self._replay(job, attempt, job.access_token, delay)
            if result.succeeded:
                return _resolved(job, attempt, "replayed after backoff", schedule)
        return self._later(
            job, job.category, f"{len(delays)} replays failed", len(delays), _reason(job, result)
        )

    def _later(
        self, job: Job, category: Category, what: str, attempts: int, reason: str | None
    ) -> Outcome:
        """Pending, with the category's next out-of-process retry when it has one."""
        next_retry_at = schedule_retry(
            category,
            now=self._clock(),
            deferrals=job.deferrals,
            rand=self._rand(),
            cap=self._max_wait,
        )
        scheduled = next_retry_at is not None
        return Outcome(
            job,
            Status.PENDING,
            f"{what}; {'retry scheduled' if scheduled else 'admin review'}",
            attempts=attempts,
            next_retry_at=next_retry_at,
            deferrals=job.deferrals + scheduled,
            reason=reason,
        )

    # --- rate_limit: never before the server allows --------------------------------------

    async def _recover_rate_limit(self, job: Job) -> Outcome:
        now = self._clock()
        # Headers of the original failure count only on the first visit; later the
        # schedule already honoured them.
        wait = rate_limit_wait(_headers(job.response_headers), now, self._max_wait)
        if not job.first_visit:
            wait = None
        if wait is not None and wait >= SHORT_WAIT_LIMIT:
            return self._rate_limit_window(job, wait, 0, None)
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
                return _resolved(job, attempts, "replayed after the rate-limit window", schedule)
            again = rate_limit_wait(result.headers, self._clock(), self._max_wait)
            if result.status == 429 and again is not None and again >= SHORT_WAIT_LIMIT:
                return self._rate_limit_window(job, again, attempts, result)
            server_wait = again if result.status == 429 and again is not None else 0.0
        return self._later(
            job,
            Category.RATE_LIMIT,
            f"{attempts} replays still rate limited",
            attempts,
            _reason(job, result),
        )

    def _rate_limit_window(
        self, job: Job, wait: float, attempts: int, result: ReplayResult | None
    ) -> Outcome:
        until = self._clock() + timedelta(seconds=wait)
        return Outcome(
            job,
            Status.PENDING,
            f"rate limited; retry after {round(wait)} s",
            attempts=attempts,
            next_retry_at=until,
            deferrals=job.deferrals + 1,
            reason=_reason(job, result) if result else None,
            rate_limited_until=until,
        )

    # --- auth: refresh, then replay with the new token ------------------------------------

    async def _recover_auth(self, job: Job) -> Outcome:
        if job.connection_id is None:
            return self._auth_failed(job, "no user connection to refresh", 0)
        if not job.oauth_config:
            return self._auth_failed(job, "no oauth_config for this service", 0)
        stale_before: datetime | None = job.failed_at
        result: ReplayResult | None = None
        attempts = 0
        schedule = self._schedule(job)
        for delay in retry_delays(Category.AUTH, self._rand):
            await schedule.wait(delay)
            try:
                token, refreshed_at = await self._fresh_token(job, stale_before)
            except RefreshFailed as exc:
                return self._refresh_failed(job, exc, attempts, result)
            attempts += 1
            result = await self._replay(job, attempts, token, delay)
            if result.succeeded:
                return _resolved(job, attempts, "refreshed the OAuth token and replayed", schedule)
            if result.status not in (401, 403):
                break  # no longer an auth problem: leave it to an operator
            stale_before = refreshed_at
        return self._auth_failed(
            job,
            f"still unauthorized after {attempts} refresh and replay attempts",
            attempts,
            result,
        )

    async def _fresh_token(
        self, job: Job, stale_before: datetime | None
    ) -> tuple[str, datetime | None]:
        """A token newer than `stale_before`: refreshed here, or by whoever refreshed it
        meanwhile (one refresh per connection, however many failures arrive at once)."""
        assert job.connection_id is not None and job.oauth_config is not None  # noqa: S101
        async with self._tokens.refresh_lock(job.connection_id) as session:
            row = await session.tokens()
            if row is None:
                raise RefreshFailed("the user connection no longer exists")
            access_token, refresh_token, refreshed_at, reauth_digest = row
            if not refresh_token:
                raise RefreshFailed("the user connection has no refresh token", reauthorize=True)
            if reauth_digest is not None and reauth_digest == token_digest(refresh_token):
                raise RefreshFailed("re-authorization needed (invalid_grant)", reauthorize=True)
            newer = stale_before is None or (
                refreshed_at is not None and refreshed_at > stale_before
            )
            if refreshed_at is not None and newer and access_token:
                return access_token, refreshed_at
            try:
                async with self._limits.request(job.service_name):
                    grant = await refresh_access_token(
                        self._clients.client, job.oauth_config, refresh_token
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
            return grant.access_token, refreshed_at

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
                job, "re-authorization needed: the user must reconnect (invalid_grant)", attempts
            )
        return self._auth_failed(job, f"token refresh failed: {exc.reason}", attempts, result)

    def _auth_failed(
        self, job: Job, action: str, attempts: int, result: ReplayResult | None = None
    ) -> Outcome:
        failures = job.connection_failures + 1
        if job.connection_id is not None and crosses_threshold(
            Category.AUTH, failures, failures, self._thresholds
        ):
            reason = f"{failures} consecutive auth failures after refresh attempts"
            return Outcome(
                job,
                Status.DISABLED,
                f"{action}; user connection disabled",
                attempts=attempts,
                reason=_reason(job, result),
                disable_connection=reason,
                connection_failed=True,
            )
        return Outcome(
            job,
            Status.PENDING,
            action,
            attempts=attempts,
            reason=_reason(job, result),
            connection_failed=job.connection_id is not None,
        )


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


def _resolved(job: Job, attempts: int, how: str, schedule: _Schedule) -> Outcome:
    plural = "s" if attempts != 1 else ""
    return Outcome(
        job,
        Status.RESOLVED,
        f"{how} ({attempts} attempt{plural})",
        attempts=attempts,
        backoff=schedule.total,
    )


def _reason(job: Job, result: ReplayResult | None) -> str | None:
    """The sanitized reason of the latest replay failure, for the record."""
    if result is None:
        return None
    failure = Failure.coerce(
        job.service_name, result.status, result.error_code, result.body_sample, result.headers
    )
    category = analyze(failure).category.value
    return f"replay failed ({category}): {failure_reason(failure)}"


def _headers(value: Any) -> dict[str, str]:
    return dict(Failure.coerce(response_headers=value).response_headers)
