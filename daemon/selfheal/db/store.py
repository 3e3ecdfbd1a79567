"""The one object through which the daemon talks to Postgres; errors translated at this
edge (temporary: DatabaseUnavailable; permanent: DatabaseError); rows read by name into the
values of models.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString, TypeVar, cast

import anyio
import orjson
import psycopg
from psycopg import sql
from psycopg.rows import AsyncRowFactory, class_row, dict_row, kwargs_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from selfheal import progress
from selfheal.core.alerts import AlertPolicy
from selfheal.core.llm_prompt import AdvicePolicy
from selfheal.core.thresholds import Thresholds
from selfheal.db import queries
from selfheal.db.connections import ConnectionPolicy, deadline_missed, with_keepalives
from selfheal.errors import DatabaseError, DatabaseUnavailable, ServiceRegistrationFailed
from selfheal.logs import first_line
from selfheal.models import (
    Category,
    ClaimedFailure,
    Diagnosis,
    Gauges,
    GroupTouch,
    Job,
    Recorded,
    Settled,
    TargetState,
    TokenGrant,
    UserConnectionTokens,
)

__all__ = ["Database", "DisabledTarget", "ProbeClaim", "RecordSummary", "Store"]


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """What `selfheal heal` reports of one record."""

    recovery_id: uuid.UUID
    category: str
    action_taken: str | None
    status: str
    next_retry_at: datetime | None
    in_recovery: bool = False  # leased: a healer (this daemon's or another's) is at it


@dataclass(frozen=True, slots=True)
class ProbeClaim:
    """A circuit whose probe this daemon took, and the failure to probe with."""

    service_name: str
    user_id: uuid.UUID | None  # set for a user connection's circuit
    record_id: uuid.UUID | None  # None: every waiting failure is in flight elsewhere
    waiting: int


@dataclass(frozen=True, slots=True)
class DisabledTarget:
    service_name: str
    user_id: uuid.UUID | None
    reason: str | None
    disabled_at: datetime | None


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


def _translated(exc: psycopg.Error) -> DatabaseUnavailable | DatabaseError:
    """The project's error for a psycopg one: temporary for the database as a whole,
    permanent for what a statement carried."""
    if isinstance(exc, (psycopg.OperationalError, *_UNAVAILABLE)):  # PoolTimeout is one
        return DatabaseUnavailable(first_line(exc))
    return DatabaseError(f"{type(exc).__name__}: {first_line(exc)}")


async def _configure(conn: psycopg.AsyncConnection[Any], policy: ConnectionPolicy) -> None:
    # A commit lost in a Postgres crash loses the record and its inbox deletion together
    # (one statement): the lease runs out and the failure is diagnosed again. So no
    # fsync wait on the hot path. Recovery outcomes (side effects) commit synchronously.
    # Through a transaction pooler a SET would leak to other clients: not there.
    if not policy.pooled:
        await conn.execute("SET synchronous_commit TO off")


def _ignore(_: psycopg.Notify) -> None:
    """The warm-up NOTIFYs carry nothing the claimer needs (the listener has them)."""


_Row = TypeVar("_Row")


class _HotPath:
    """The connection of one hot-path job (claims, records): a pool checkout would cost as
    much as the query. A connection found dead (Postgres restarted while it was idle) is
    replaced and the statement sent once more; every statement run here is safe to repeat."""

    def __init__(self, conninfo: str, policy: ConnectionPolicy, *, warm: bool = False) -> None:
        self._conninfo = conninfo
        self._policy = policy
        # warm: the backend LISTENs too, so Postgres itself wakes it with each NOTIFY and
        # it is running when the claim arrives (a cold backend costs ~0.3 ms on a VM).
        # Through a pooler there is no backend of our own to keep warm.
        self._warm = warm and not policy.pooled
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = anyio.Lock()

    async def fetchall(
        self, query: LiteralString, params: dict[str, Any], rows: AsyncRowFactory[_Row]
    ) -> list[_Row]:
        async with self._lock:
            for attempt in (1, 2):
                fresh = self._conn is None
                try:
                    with anyio.fail_after(self._policy.deadline):
                        conn = self._conn or await self._connect()
                        async with conn.cursor(row_factory=rows) as cur:
                            await cur.execute(query, params)
                            fetched = await cur.fetchall()
                    progress.beat()
                    return fetched
                except TimeoutError:
                    await self.close()
                    raise deadline_missed(self._policy.deadline) from None
                except psycopg.OperationalError as exc:
                    await self.close()
                    if fresh or attempt == 2:
                        raise _translated(exc) from exc
                except psycopg.Error as exc:
                    raise _translated(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        self._conn = await psycopg.AsyncConnection.connect(
            self._conninfo, **self._policy.connect_kwargs
        )
        await _configure(self._conn, self._policy)
        if self._warm:
            self._conn.add_notify_handler(_ignore)
            await self._conn.execute(
                sql.SQL("LISTEN {}").format(sql.Identifier(queries.FAILURES_CHANNEL))
            )
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        self._conn = None


@dataclass(frozen=True, slots=True)
class Database:
    """Where the daemon's database is, and how to connect to it."""

    conninfo: str
    policy: ConnectionPolicy

    def store(self, max_size: int) -> AbstractAsyncContextManager[Store]:
        return Store.open(self.conninfo, max_size, self.policy)


_CLAIMED = class_row(ClaimedFailure)
_JOB = kwargs_row(Job.from_columns)


class Store:
    def __init__(
        self, pool: AsyncConnectionPool[Any], conninfo: str, policy: ConnectionPolicy
    ) -> None:
        self._pool = pool
        self._policy = policy
        # Claims and records run on connections of their own, so that the claimer can
        # diagnose one batch while the previous one is being written.
        self._claims = _HotPath(conninfo, policy, warm=True)
        self._records = _HotPath(conninfo, policy)
        self._refresh_locks: dict[uuid.UUID, anyio.Lock] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls, conninfo: str, max_size: int = 8, policy: ConnectionPolicy | None = None
    ) -> AsyncIterator[Store]:
        policy = policy or ConnectionPolicy()
        conninfo = with_keepalives(conninfo, policy.deadline)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs=policy.connect_kwargs,
            open=False,
            timeout=5.0,
            name="selfheal",
        )
        await pool.open(wait=False)
        store = cls(pool, conninfo, policy)
        try:
            yield store
        finally:
            await store._claims.close()
            await store._records.close()
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection whose round trips must end within the deadline; one that
        does not is closed (the pool drops it) and the pool's others replaced: a dead link
        is seldom alone."""
        try:
            async with self._pool.connection() as conn:
                try:
                    with anyio.fail_after(self._policy.deadline):
                        yield conn
                    progress.beat()
                except TimeoutError:
                    await conn.close()
                    await self._pool.drain()
                    raise deadline_missed(self._policy.deadline) from None
        except psycopg.Error as exc:
            raise _translated(exc) from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _fetchall(
        self, query: LiteralString, params: dict[str, Any], rows: AsyncRowFactory[_Row]
    ) -> list[_Row]:
        async with self._connection() as conn, conn.cursor(row_factory=rows) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()

    async def _execute(self, query: LiteralString, params: dict[str, Any]) -> None:
        async with self._connection() as conn:
            await conn.execute(query, params)

    # --- claim, diagnose, record ---------------------------------------------------------

    async def claim(self, limit: int, lease_seconds: float) -> list[ClaimedFailure]:
        """Lease up to `limit` failures from the inbox."""
        return await self._claims.fetchall(
            queries.CLAIM_FAILURES, {"limit": limit, "lease_seconds": lease_seconds}, _CLAIMED
        )

    async def claim_events(self, event_ids: Sequence[uuid.UUID]) -> list[ClaimedFailure]:
        """The named failures that have no record yet."""
        return await self._fetchall(queries.CLAIM_EVENTS, {"event_ids": list(event_ids)}, _CLAIMED)

    async def record(
        self,
        diagnoses: Sequence[Diagnosis],
        done: Sequence[uuid.UUID],
        alerts: AlertPolicy,
        *,
        advice: AdvicePolicy | None = None,
        overlap: bool = False,
    ) -> list[Recorded]:
        """Store the records and take `done` out of the inbox: one statement. The alert
        groups they join count them; with `advice`, a group wants the LLM's second opinion
        when one of them leaves the analyzer unsure.

        `overlap` writes on a second connection, so the next claim need not wait. Only
        for full batches: on a VM, waking an idle second backend costs more than a small
        write (about 0.8 ms here), so a lone failure stays on the warm claim connection.
        """
        hot_path = self._records if overlap else self._claims
        rows = await hot_path.fetchall(
            queries.RECORD_DIAGNOSES,
            {
                **_diagnosis_columns(diagnoses),
                "second_opinions": [bool(advice and advice.wants(d.analysis)) for d in diagnoses],
                "done_ids": list(done),
                "group_wait": alerts.group_wait.total_seconds(),
                "group_interval": alerts.group_interval.total_seconds(),
                "channel": queries.RECORDED_CHANNEL,
            },
            tuple_row,
        )
        ids = {event_id: record_id for record_id, event_id in rows}
        return [Recorded(ids[d.event_id], d) for d in diagnoses if d.event_id in ids]

    async def defer(self, event_id: uuid.UUID, attempts: int, delay: float, error: str) -> None:
        await self._execute(
            queries.DEFER_FAILURE,
            {"event_id": event_id, "attempts": attempts, "delay": delay, "error": error},
        )

    async def park(self, event_id: uuid.UUID, reason: str, signals_json: str) -> None:
        await self._execute(
            queries.PARK_FAILURE, {"event_id": event_id, "reason": reason, "signals": signals_json}
        )

    async def release(self, event_ids: Sequence[uuid.UUID]) -> None:
        await self._execute(queries.RELEASE_FAILURES, {"event_ids": list(event_ids)})

    async def enqueue_backlog(self, chunk: int) -> tuple[int, int]:
        """Put every unrecorded failure, however old, into the inbox; (seen, queued).
        One short statement per chunk, each under the deadline."""
        seen = queued = 0
        after: tuple[Any, Any] = (None, uuid.UUID(int=0))
        while True:
            [(chunk_seen, chunk_queued, last_created_at, last_id)] = await self._fetchall(
                queries.ENQUEUE_BACKLOG,
                {"after_created_at": after[0], "after_id": after[1], "limit": chunk},
                tuple_row,
            )
            seen += chunk_seen
            queued += chunk_queued
            if chunk_seen < chunk:
                return seen, queued
            after = (last_created_at, last_id)

    async def unrecorded_failures(self, window_minutes: float, limit: int) -> list[uuid.UUID]:
        rows = await self._fetchall(
            queries.UNRECORDED_FAILURES,
            {"window_minutes": window_minutes, "limit": limit},
            tuple_row,
        )
        return [row[0] for row in rows]

    # --- plan, execute, record the outcome -----------------------------------------------

    async def claim_due(
        self,
        limit: int,
        owner: str,
        lease_seconds: float,
        thresholds: Thresholds,
        record_ids: Sequence[uuid.UUID] | None = None,
        probe_ids: Sequence[uuid.UUID] = (),
    ) -> list[Job]:
        """Lease records due for recovery (only the named ones, if given); `probe_ids` are
        leased although a circuit holds them, as its probes."""
        return await self._fetchall(
            queries.CLAIM_DUE if record_ids is None else queries.CLAIM_NAMED,
            {
                "limit": limit,
                "owner": owner,
                "lease_seconds": lease_seconds,
                "record_ids": None if record_ids is None else list(record_ids),
                "probe_ids": list(probe_ids),
                "window_seconds": thresholds.network_window.total_seconds(),
                "count_cap": thresholds.count_cap,
            },
            _JOB,
        )

    async def register_services(self, names: Sequence[str]) -> dict[str, uuid.UUID]:
        """Create integrations_master rows for unknown services; the ids of all named."""
        try:
            rows = await self._fetchall(
                queries.REGISTER_SERVICES, {"names": list(names)}, tuple_row
            )
        except DatabaseError as exc:  # e.g. an existing table with more required columns
            raise ServiceRegistrationFailed(str(exc)) from exc
        return {name: service_id for service_id, name in rows}

    async def seconds_until_due(self) -> float | None:
        rows = await self._fetchall(queries.SECONDS_UNTIL_DUE, {}, tuple_row)
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def record_outcomes(
        self, settled: Settled, touches: Sequence[GroupTouch], owner: str
    ) -> dict[str, int]:
        """Write a settled batch, and what it tells alert groups; the failures a closed
        circuit released, by service."""
        [(_, released)] = await self._fetchall(
            queries.RECORD_OUTCOMES,
            {
                **_outcome_columns(settled),
                **_touch_columns(touches),
                "owner": owner,
                "channel": queries.OUTCOMES_CHANNEL,
            },
            tuple_row,
        )
        return {str(name): int(count) for name, count in released.items()}

    async def claim_probes(self, owner: str, lease_seconds: float, limit: int) -> list[ProbeClaim]:
        """Take the probe of circuits that are due one, at most `limit` of each kind (see
        CLAIM_PROBES)."""
        return await self._fetchall(
            queries.CLAIM_PROBES,
            {"owner": owner, "lease_seconds": lease_seconds, "limit": limit},
            class_row(ProbeClaim),
        )

    async def tidy_circuits(self) -> int:
        """Release failures no circuit holds any more, and apply the successes the
        integrations wrote; how many successes."""
        await self._execute(queries.RELEASE_STRANDED, {})
        [(successes,)] = await self._fetchall(queries.APPLY_SUCCESSES, {}, tuple_row)
        return int(successes)

    async def target_states(self) -> list[TargetState]:
        return await self._fetchall(queries.TARGET_STATES, {}, class_row(TargetState))

    async def circuit_waiting(self, service_ids: Sequence[uuid.UUID]) -> dict[str, int]:
        rows = await self._fetchall(
            queries.CIRCUIT_WAITING, {"service_ids": list(service_ids)}, tuple_row
        )
        return {name: int(waiting) for _, name, waiting in rows}

    @asynccontextmanager
    async def refresh_lock(
        self, user_connection_id: uuid.UUID, lease_seconds: float
    ) -> AsyncIterator[_LockedTokens]:
        """Held while one user connection's token is refreshed: in this process (an anyio
        lock; waiters hold no database connection) and across daemons (a lease on the row,
        so that no lock outlives a transaction, through PgBouncer too, and a crashed
        holder's claim runs out after `lease_seconds`)."""
        local = self._refresh_locks.setdefault(user_connection_id, anyio.Lock())
        async with local:
            holder = uuid.uuid4()
            await self._claim_refresh(user_connection_id, holder, lease_seconds)
            try:
                yield _LockedTokens(self, user_connection_id)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._execute(
                        queries.RELEASE_REFRESH, {"id": user_connection_id, "holder": holder}
                    )
        if not local.statistics().tasks_waiting:
            self._refresh_locks.pop(user_connection_id, None)

    async def _claim_refresh(
        self, user_connection_id: uuid.UUID, holder: uuid.UUID, lease_seconds: float
    ) -> None:
        """Wait until this process holds the refresh lease (another daemon's refresh takes
        one token request: the wait is short), or the user connection is gone."""
        params = {"id": user_connection_id, "holder": holder, "lease_seconds": lease_seconds}
        pause = 0.05
        while True:
            [(claimed, present)] = await self._fetchall(queries.CLAIM_REFRESH, params, tuple_row)
            if claimed or not present:
                return
            await anyio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def renew_leases(self, owner: str, lease_seconds: float) -> None:
        await self._execute(queries.RENEW_LEASES, {"owner": owner, "lease_seconds": lease_seconds})

    async def release_records(self, owner: str) -> None:
        await self._execute(queries.RELEASE_RECORDS, {"owner": owner})

    # --- operators -----------------------------------------------------------------------

    async def record_for_event(self, event_id: uuid.UUID) -> RecordSummary | None:
        rows = await self._fetchall(
            queries.RECORD_FOR_EVENT, {"event_id": event_id}, class_row(RecordSummary)
        )
        return rows[0] if rows else None

    async def report_failure(self, values: dict[str, Any]) -> None:
        await self._execute(queries.REPORT_FAILURE, values)

    async def event_exists(self, event_id: uuid.UUID) -> bool:
        rows = await self._fetchall(queries.EVENT_EXISTS, {"event_id": event_id}, tuple_row)
        return bool(rows and rows[0][0])

    async def status(self) -> dict[str, Any]:
        """The KPIs: active failures, disabled integrations, the last day's recovery rate,
        time to recover, category distribution and top failing services, open circuits."""
        standing = await self.standing()
        by_category: dict[str, dict[str, int]] = {}
        for category, status, count in await self._fetchall(
            queries.STATUS_BY_CATEGORY, {}, tuple_row
        ):
            by_category.setdefault(category, {})[status] = count
        return {
            "pending": standing.pop("pending"),
            "oldest_pending": standing.pop("oldest_pending"),
            **await self.last_day(),
            **standing,
            "by_category": by_category,
            "top_failing_services": await self._fetchall(
                queries.TOP_FAILING_SERVICES, {}, dict_row
            ),
        }

    async def standing(self) -> dict[str, Any]:
        """What stands now: active failures, the inbox, what is disabled, open circuits
        (cheap: each is small or behind its own index)."""
        [counts] = await self._fetchall(queries.STATUS_COUNTS, {}, dict_row)
        pending = await self._fetchall(queries.STATUS_PENDING, {}, dict_row)
        disabled = await self._fetchall(queries.DISABLED_TARGETS, {}, dict_row)
        return {
            "pending": sum(int(p["pending"]) for p in pending),
            "oldest_pending": min((p["oldest"] for p in pending), default=None),
            **counts,
            "disabled": len(disabled),
            "pending_by_category": {p["category"]: p["pending"] for p in pending},
            "disabled_integrations": disabled,
            "circuits": await self._fetchall(queries.OPEN_CIRCUITS, {}, dict_row),
        }

    async def last_day(self) -> dict[str, Any]:
        """The last 24 hours' failures, recovery rate and times to recover: a read of every
        record of the day (a second or more when a day holds a million)."""
        [figures] = await self._fetchall(queries.LAST_DAY, {}, dict_row)
        return figures

    async def gauges(self) -> Gauges:
        [gauges] = await self._fetchall(queries.GAUGES, {}, class_row(Gauges))
        return gauges

    async def enable(
        self, service_name: str, user_id: uuid.UUID | None, *, via: str, client: str | None = None
    ) -> int:
        """Re-enable recovery for a service (or one user's connection); resets counters.
        The action is recorded (selfheal_operator_actions) with `via` and `client`."""
        values = {"service_name": service_name, "via": via, "client": client}
        if user_id is None:
            rows = await self._fetchall(queries.ENABLE_SERVICE, values, tuple_row)
        else:
            rows = await self._fetchall(
                queries.ENABLE_USER_CONNECTION, {**values, "user_id": user_id}, tuple_row
            )
        return len(rows)

    async def inject(self, values: dict[str, Any]) -> list[uuid.UUID]:
        rows = await self._fetchall(queries.INJECT_FAILURE, values, tuple_row)
        return [uuid.UUID(str(event_id)) for (event_id,) in rows]


class _LockedTokens:
    """The tokens of one user connection, read and written under its refresh lease."""

    def __init__(self, store: Store, user_connection_id: uuid.UUID) -> None:
        self._store = store
        self._id = user_connection_id

    async def tokens(self) -> UserConnectionTokens | None:
        rows = await self._store._fetchall(
            queries.USER_CONNECTION_TOKENS, {"id": self._id}, class_row(UserConnectionTokens)
        )
        return rows[0] if rows else None

    async def save(self, grant: TokenGrant) -> datetime:
        """Store the new tokens in one statement, committed before they are used."""
        [(refreshed_at,)] = await self._store._fetchall(
            queries.SAVE_TOKENS,
            {
                "id": self._id,
                "access_token": grant.access_token,
                "refresh_token": grant.refresh_token,
                "expires_in": grant.expires_in,
            },
            tuple_row,
        )
        return cast(datetime, refreshed_at)

    async def mark_reauth_required(self, digest: str) -> None:
        await self._store._execute(queries.MARK_REAUTH_REQUIRED, {"id": self._id, "digest": digest})


def _diagnosis_columns(diagnoses: Sequence[Diagnosis]) -> dict[str, list[Any]]:
    return {
        "event_ids": [d.event_id for d in diagnoses],
        "service_names": [d.service_name for d in diagnoses],
        "user_ids": [d.user_id for d in diagnoses],
        "reasons": [d.reason for d in diagnoses],
        "categories": [d.analysis.category.value for d in diagnoses],
        "actions": [d.action for d in diagnoses],
        "signals": [d.signals_json for d in diagnoses],
        "next_retry_at": [d.next_retry_at for d in diagnoses],
        "alert_groups": [d.alert_group for d in diagnoses],
        "alert_codes": [d.alert_code for d in diagnoses],
    }


def _touch_columns(touches: Sequence[GroupTouch]) -> dict[str, list[Any]]:
    return {
        "touch_groups": [t.fingerprint for t in touches],
        "touch_services": [t.service_name for t in touches],
        "touch_categories": [t.category for t in touches],
        "touch_resolutions": [t.resolution for t in touches],
        "touch_notices": [orjson.dumps(t.notices).decode() for t in touches],
    }


def _outcome_columns(settled: Settled) -> dict[str, list[Any]]:
    """The batch as arrays: one per record column, one per service and user-connection
    effect (core/effects.py settled them), one per failure the thresholds count."""
    outcomes = settled.outcomes
    services, users = settled.effects.services, settled.effects.user_connections
    counted = [
        (o.job.service_id, o.job.category.value)
        for o in outcomes
        if o.counted and o.job.service_id is not None and o.job.category is not Category.AUTH
    ]
    return {
        "record_ids": [o.job.record_id for o in outcomes],
        "event_ids": [o.job.event_id for o in outcomes],
        "statuses": [o.status.value for o in outcomes],
        "actions": [o.action for o in outcomes],
        "attempts": [o.attempts for o in outcomes],
        "deferrals": [o.deferrals if o.next_retry_at else o.job.deferrals for o in outcomes],
        "next_retry_at": [o.next_retry_at for o in outcomes],
        "reasons": [o.reason for o in outcomes],
        "held": [o.held for o in outcomes],
        "counted": [o.counted for o in outcomes],
        "counted_service_ids": [service_id for service_id, _ in counted],
        "counted_categories": [category for _, category in counted],
        "service_ids": [e.service_id for e in services],
        "service_reset": [e.reset for e in services],
        "service_failed": [e.failed for e in services],
        "service_disable": [e.disable_reason for e in services],
        "service_window": [e.rate_limited_until for e in services],
        "service_circuit": [e.circuit and e.circuit.value for e in services],
        "service_next_probe": [e.next_probe_at for e in services],
        "service_probe_counted": [e.probe_counted for e in services],
        "user_connection_ids": [e.user_connection_id for e in users],
        "user_connection_reset": [e.reset for e in users],
        "user_connection_failed": [e.failed for e in users],
        "user_connection_disable": [e.disable_reason for e in users],
        "user_connection_errored": [e.errored for e in users],
        "user_connection_circuit": [e.circuit and e.circuit.value for e in users],
        "user_connection_next_probe": [e.next_probe_at for e in users],
    }
