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
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from selfheal import queries
from selfheal.diagnose import ClaimedFailure, Diagnosis

__all__ = ["DatabaseUnavailable", "Recorded", "Store"]


class DatabaseUnavailable(Exception):
    """Postgres cannot be reached right now; try again later (temporary)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    recovery_id: uuid.UUID
    diagnosis: Diagnosis


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # A commit lost in a Postgres crash loses the record and its inbox deletion together
    # (one statement): the lease runs out and the failure is diagnosed again. So no
    # fsync wait on the hot path. Recovery outcomes (side effects) commit synchronously.
    await conn.execute("SET synchronous_commit TO off")


class _Dedicated:
    """One connection kept for one job: on the hot path a pool checkout costs as much as
    the query. A connection found dead (Postgres restarted while it was idle) is replaced
    and the statement sent once more; every statement run here is safe to repeat."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
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
                    cur = await self._conn.execute(query, params)
                    return await cur.fetchall()
                except psycopg.OperationalError as exc:
                    await self.close()
                    if fresh or attempt == 2:
                        raise DatabaseUnavailable(str(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        self._conn = None


class Store:
    def __init__(self, pool: AsyncConnectionPool[Any], conninfo: str) -> None:
        self._pool = pool
        # Claims and records run on connections of their own, so that the claimer can
        # diagnose one batch while the previous one is being written.
        self._claims = _Dedicated(conninfo)
        self._records = _Dedicated(conninfo)

    @classmethod
    @asynccontextmanager
    async def open(cls, conninfo: str, max_size: int = 4) -> AsyncIterator[Store]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=_configure,
            open=False,
            timeout=5.0,
            reconnect_timeout=0,  # never give up; the daemon logs and waits
            name="selfheal",
        )
        await pool.open(wait=False)
        store = cls(pool, conninfo)
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
        except (psycopg.OperationalError, PoolTimeout) as exc:
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

    async def enqueue_backlog(self, since: datetime, chunk: int) -> tuple[int, int]:
        """Put every unrecorded failure since `since` into the inbox; returns (seen, queued)."""
        seen = queued = 0
        after: tuple[Any, Any] = (None, uuid.UUID(int=0))
        async with self._connection() as conn:
            while True:
                cur = await conn.execute(
                    queries.ENQUEUE_BACKLOG,
                    {
                        "after_created_at": after[0],
                        "after_id": after[1],
                        "since": since,
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
