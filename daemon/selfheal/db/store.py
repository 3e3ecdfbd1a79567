"""The one object through which the daemon talks to Postgres; errors translated at this edge."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

import anyio
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from selfheal.core.diagnose import ClaimedFailure, Diagnosis
from selfheal.core.thresholds import Thresholds
from selfheal.db import queries
from selfheal.http.outbound import TokenGrant
from selfheal.logs import first_line
from selfheal.models import Category, Status
from selfheal.services.execute import Job, Outcome

__all__ = ["DatabaseUnavailable", "Recorded", "Store"]


class DatabaseUnavailable(Exception):
    """Postgres cannot be used right now (unreachable, restarting, read-only after a
    failover, a privilege revoked): try again later."""


class ServiceRegistrationFailed(Exception):
    """integrations_master would not take a row with just a service_name (permanent)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    recovery_id: uuid.UUID
    diagnosis: Diagnosis


# Errors of the database as a whole, not of one row: wait and try again.
_UNAVAILABLE = (
    psycopg.errors.ReadOnlySqlTransaction,
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.CannotConnectNow,
    psycopg.errors.InsufficientResources,
    psycopg.errors.DiskFull,
    psycopg.errors.OutOfMemory,
    psycopg.errors.TooManyConnections,
)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # A commit lost in a Postgres crash loses the record and its inbox deletion together
    # (one statement): the lease runs out and the failure is diagnosed again. So no
    # fsync wait on the hot path. Recovery outcomes (side effects) commit synchronously.
    await conn.execute("SET synchronous_commit TO off")


def _ignore(_: psycopg.Notify) -> None:
    """The warm-up NOTIFYs carry nothing the claimer needs (the listener has them)."""


class _Dedicated:
    """One connection kept for one job: on the hot path a pool checkout costs as much as
    the query. A connection found dead (Postgres restarted while it was idle) is replaced
    and the statement sent once more; every statement run here is safe to repeat."""

    def __init__(self, conninfo: str, *, warm: bool = False) -> None:
        self._conninfo = conninfo
        # warm: the backend LISTENs too, so Postgres itself wakes it with each NOTIFY and
        # it is running when the claim arrives (a cold backend costs ~0.3 ms on a VM).
        self._warm = warm
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = anyio.Lock()

    async def fetchall(self, query: LiteralString, params: dict[str, Any]) -> list[Any]:
        async with self._lock:
            for attempt in (1, 2):
                fresh = self._conn is None
                try:
                    if self._conn is None:
                        self._conn = await psycopg.AsyncConnection.connect(
                            self._conninfo, autocommit=True
                        )
                        await _configure(self._conn)
                        if self._warm:
                            self._conn.add_notify_handler(_ignore)
                            await self._conn.execute(
                                sql.SQL("LISTEN {}").format(sql.Identifier(queries.CHANNEL))
                            )
                    cur = await self._conn.execute(query, params)
                    return await cur.fetchall()
                except psycopg.OperationalError as exc:
                    await self.close()
                    if fresh or attempt == 2:
                        raise DatabaseUnavailable(str(exc)) from exc
                except _UNAVAILABLE as exc:
                    raise DatabaseUnavailable(str(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        self._conn = None


class Store:
    def __init__(self, pool: AsyncConnectionPool[Any], conninfo: str, pool_size: int) -> None:
        self._pool = pool
        # Claims and records run on connections of their own, so that the claimer can
        # diagnose one batch while the previous one is being written.
        self._claims = _Dedicated(conninfo, warm=True)
        self._records = _Dedicated(conninfo)
        self._refresh_locks: dict[uuid.UUID, anyio.Lock] = {}
        self._refreshing = anyio.Semaphore(max(1, pool_size // 2))

    @classmethod
    @asynccontextmanager
    async def open(cls, conninfo: str, max_size: int = 8) -> AsyncIterator[Store]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            open=False,
            timeout=5.0,
            name="selfheal",
        )
        await pool.open(wait=False)
        store = cls(pool, conninfo, max_size)
        try:
            yield store
        finally:
            await store._claims.close()
            await store._records.close()
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout, *_UNAVAILABLE) as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    async def claim(self, limit: int, lease_seconds: float) -> list[ClaimedFailure]:
        """Lease up to `limit` failures from the inbox."""
        rows = await self._claims.fetchall(
            queries.CLAIM_FAILURES, {"limit": limit, "lease_seconds": lease_seconds}
        )
        return [ClaimedFailure.from_row(row) for row in rows]

    async def claim_events(self, event_ids: Sequence[uuid.UUID]) -> list[ClaimedFailure]:
        """The named failures that have no record yet."""
        async with self._connection() as conn:
            cur = await conn.execute(queries.CLAIM_EVENTS, {"event_ids": list(event_ids)})
            return [ClaimedFailure.from_row(row) for row in await cur.fetchall()]

    async def record(
        self, diagnoses: Sequence[Diagnosis], done: Sequence[uuid.UUID], *, overlap: bool = False
    ) -> list[Recorded]:
        """Store the records and take `done` out of the inbox: one statement.

        `overlap` writes on a second connection, so the next claim need not wait. Only
        for full batches: on a VM, waking an idle second backend costs more than a small
        write (about 0.8 ms here), so a lone failure stays on the warm claim connection.
        """
        dedicated = self._records if overlap else self._claims
        rows = await dedicated.fetchall(
            queries.RECORD_DIAGNOSES, {**_columns(diagnoses), "done_ids": list(done)}
        )
        ids = {event_id: record_id for record_id, event_id in rows}
        return [Recorded(ids[d.event_id], d) for d in diagnoses if d.event_id in ids]

    # --- recovery -----------------------------------------------------------------------

    async def claim_due(
        self,
        limit: int,
        owner: str,
        lease_seconds: float,
        thresholds: Thresholds,
        record_ids: Sequence[uuid.UUID] | None = None,
    ) -> list[Job]:
        """Lease records due for recovery (only the named ones, if given)."""
        async with self._connection() as conn:
            cur = await conn.execute(
                queries.CLAIM_DUE,
                {
                    "limit": limit,
                    "owner": owner,
                    "lease_seconds": lease_seconds,
                    "record_ids": None if record_ids is None else list(record_ids),
                    "window_seconds": thresholds.network_window.total_seconds(),
                    "count_cap": thresholds.count_cap,
                },
            )
            return [Job.from_row(row) for row in await cur.fetchall()]

    async def register_services(self, names: Sequence[str]) -> dict[str, uuid.UUID]:
        """Create integrations_master rows for unknown services; returns the new ids."""
        try:
            async with self._connection() as conn:
                cur = await conn.execute(queries.REGISTER_SERVICES, {"names": list(names)})
                return {name: service_id for service_id, name in await cur.fetchall()}
        except psycopg.Error as exc:  # e.g. an existing table with more required columns
            raise ServiceRegistrationFailed(first_line(exc)) from exc

    async def seconds_until_due(self) -> float | None:
        async with self._connection() as conn:
            cur = await conn.execute(queries.SECONDS_UNTIL_DUE)
            row = await cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def record_outcomes(self, outcomes: Sequence[Outcome], owner: str) -> int:
        async with self._connection() as conn:
            cur = await conn.execute(
                queries.RECORD_OUTCOMES, {**_outcome_columns(outcomes), "owner": owner}
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    @asynccontextmanager
    async def refresh_lock(self, connection_id: uuid.UUID) -> AsyncIterator[TokenSession]:
        """Held while one user connection's token is refreshed: in this process (waiters
        hold no database connection) and across daemons (an advisory lock). Reads and
        writes of the tokens go through the lock's own connection, and refreshes at once
        are capped, so refreshing can never take every connection of the pool."""
        local = self._refresh_locks.setdefault(connection_id, anyio.Lock())
        async with local, self._refreshing, self._connection() as conn:
            await conn.execute(queries.LOCK_CONNECTION, {"id": connection_id})
            try:
                yield TokenSession(conn, connection_id)
            finally:
                await conn.execute(queries.UNLOCK_CONNECTION, {"id": connection_id})
        if not local.statistics().tasks_waiting:
            self._refresh_locks.pop(connection_id, None)

    async def renew_leases(self, owner: str, lease_seconds: float) -> None:
        async with self._connection() as conn:
            await conn.execute(
                queries.RENEW_LEASES, {"owner": owner, "lease_seconds": lease_seconds}
            )

    async def release_records(self, owner: str) -> None:
        async with self._connection() as conn:
            await conn.execute(queries.RELEASE_RECORDS, {"owner": owner})

    async def release(self, event_ids: Sequence[uuid.UUID]) -> None:
        async with self._connection() as conn:
            await conn.execute(queries.RELEASE_FAILURES, {"event_ids": list(event_ids)})

    async def defer(self, event_id: uuid.UUID, attempts: int, delay: float, error: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                queries.DEFER_FAILURE,
                {"event_id": event_id, "attempts": attempts, "delay": delay, "error": error},
            )

    async def park(self, event_id: uuid.UUID, reason: str, signals_json: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                queries.PARK_FAILURE,
                {"event_id": event_id, "reason": reason, "signals": signals_json},
            )

    async def enqueue_backlog(self, chunk: int) -> tuple[int, int]:
        """Put every unrecorded failure, however old, into the inbox; (seen, queued)."""
        seen = queued = 0
        after: tuple[Any, Any] = (None, uuid.UUID(int=0))
        async with self._connection() as conn:
            while True:
                cur = await conn.execute(
                    queries.ENQUEUE_BACKLOG,
                    {
                        "after_created_at": after[0],
                        "after_id": after[1],
                        "limit": chunk,
                    },
                )
                row = await cur.fetchone()
                assert row is not None  # noqa: S101 - an aggregate always returns a row
                chunk_seen, chunk_queued, last_created_at, last_id = row
                seen += chunk_seen
                queued += chunk_queued
                if chunk_seen < chunk:
                    return seen, queued
                after = (last_created_at, last_id)

    async def unrecorded_failures(self, window_minutes: float, limit: int) -> list[uuid.UUID]:
        async with self._connection() as conn:
            cur = await conn.execute(
                queries.UNRECORDED_FAILURES, {"window_minutes": window_minutes, "limit": limit}
            )
            return [row[0] for row in await cur.fetchall()]

    async def record_for_event(self, event_id: uuid.UUID) -> tuple[Any, ...] | None:
        async with self._connection() as conn:
            cur = await conn.execute(queries.RECORD_FOR_EVENT, {"event_id": event_id})
            return await cur.fetchone()

    async def event_exists(self, event_id: uuid.UUID) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(queries.EVENT_EXISTS, {"event_id": event_id})
            row = await cur.fetchone()
            return bool(row and row[0])

    async def status(self) -> dict[str, Any]:
        async with self._connection() as conn:
            cur = await conn.execute(queries.STATUS_COUNTS)
            row = await cur.fetchone()
            assert row is not None and cur.description is not None  # noqa: S101
            counts = dict(zip((c.name for c in cur.description), row, strict=True))
            cur = await conn.execute(queries.STATUS_BY_CATEGORY)
            by_category: dict[str, dict[str, int]] = {}
            for category, status, count in await cur.fetchall():
                by_category.setdefault(category, {})[status] = count
            cur = await conn.execute(queries.DISABLED_TARGETS)
            disabled = [
                {"service_name": s, "user_id": u, "reason": r, "disabled_at": at}
                for s, u, r, at in await cur.fetchall()
            ]
        return {**counts, "by_category": by_category, "disabled_targets": disabled}

    async def enable(self, service_name: str, user_id: uuid.UUID | None) -> int:
        """Re-enable recovery for a service (or one user's connection); resets counters."""
        async with self._connection() as conn:
            if user_id is None:
                cur = await conn.execute(queries.ENABLE_SERVICE, {"service_name": service_name})
            else:
                cur = await conn.execute(
                    queries.ENABLE_USER_CONNECTION,
                    {"service_name": service_name, "user_id": user_id},
                )
            return len(await cur.fetchall())

    async def inject(self, values: dict[str, Any]) -> uuid.UUID:
        async with self._connection() as conn:
            cur = await conn.execute(queries.INJECT_FAILURE, values)
            row = await cur.fetchone()
            assert row is not None  # noqa: S101 - INSERT ... RETURNING one row
            return uuid.UUID(str(row[0]))


def _columns(diagnoses: Sequence[Diagnosis]) -> dict[str, list[Any]]:
    return {
        "event_ids": [d.event_id for d in diagnoses],
        "service_names": [d.service_name for d in diagnoses],
        "user_ids": [d.user_id for d in diagnoses],
        "reasons": [d.reason for d in diagnoses],
        "categories": [d.analysis.category.value for d in diagnoses],
        "actions": [d.action for d in diagnoses],
        "signals": [d.signals_json for d in diagnoses],
        "next_retry_at": [d.next_retry_at for d in diagnoses],
    }


class TokenSession:
    """The tokens of one user connection, read and written under its refresh lock."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], connection_id: uuid.UUID) -> None:
        self._conn = conn
        self._id = connection_id

    async def tokens(self) -> tuple[Any, ...] | None:
        cur = await self._conn.execute(queries.CONNECTION_TOKENS, {"id": self._id})
        return await cur.fetchone()

    async def save(self, grant: TokenGrant) -> datetime:
        """Store the new tokens in one statement, committed before they are used."""
        cur = await self._conn.execute(
            queries.SAVE_TOKENS,
            {
                "id": self._id,
                "access_token": grant.access_token,
                "refresh_token": grant.refresh_token,
                "expires_in": grant.expires_in,
            },
        )
        row = await cur.fetchone()
        assert row is not None  # noqa: S101 - the row was read under the same lock
        refreshed_at: datetime = row[0]
        return refreshed_at

    async def mark_reauth_required(self, digest: str) -> None:
        await self._conn.execute(queries.MARK_REAUTH_REQUIRED, {"id": self._id, "digest": digest})


def _outcome_columns(outcomes: Sequence[Outcome]) -> dict[str, list[Any]]:
    """The batch as arrays, with per-service and per-connection effects folded in order."""
    services: dict[uuid.UUID, list[Any]] = {}  # id -> [reset, failed, disable, window]
    connections: dict[uuid.UUID, list[Any]] = {}  # id -> [reset, failed, disable, errored]
    # In arrival order: the failure that crossed a threshold names the reason.
    for o in sorted(outcomes, key=lambda o: o.job.failed_at):
        job = o.job
        if job.service_id is not None:
            effect = services.setdefault(job.service_id, [False, 0, None, None])
            if o.resolved:
                effect[0:2] = [True, 0]
            elif job.category is not Category.AUTH and o.status is not Status.DISABLED:
                effect[1] += 1
            effect[2] = effect[2] or o.disable_service
            if o.rate_limited_until is not None:
                effect[3] = max(filter(None, (effect[3], o.rate_limited_until)))
        if job.connection_id is not None:
            effect = connections.setdefault(job.connection_id, [False, 0, None, False])
            if o.resolved:
                effect[0:2] = [True, 0]
            else:
                effect[1] += o.connection_failed
                effect[3] = True
            effect[2] = effect[2] or o.disable_connection
    return {
        "record_ids": [o.job.record_id for o in outcomes],
        "event_ids": [o.job.event_id for o in outcomes],
        "statuses": [o.status.value for o in outcomes],
        "actions": [o.action for o in outcomes],
        "attempts": [o.attempts for o in outcomes],
        "deferrals": [o.deferrals if o.next_retry_at else o.job.deferrals for o in outcomes],
        "next_retry_at": [o.next_retry_at for o in outcomes],
        "reasons": [o.reason for o in outcomes],
        "service_ids": list(services),
        "service_reset": [e[0] for e in services.values()],
        "service_failed": [e[1] for e in services.values()],
        "service_disable": [e[2] for e in services.values()],
        "service_window": [e[3] for e in services.values()],
        "connection_ids": list(connections),
        "connection_reset": [e[0] for e in connections.values()],
        "connection_failed": [e[1] for e in connections.values()],
        "connection_disable": [e[2] for e in connections.values()],
        "connection_errored": [e[3] for e in connections.values()],
    }
