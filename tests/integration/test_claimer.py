"""The claimer against a real Postgres: records, leases, poison rows, vanished events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import psycopg
import pytest

from selfheal.db.store import Store
from selfheal.services.base import Wakeup
from selfheal.services.claimer import Claimer
from selfheal.services.scanner import Scanner
from selfheal.settings import Settings
from tests.support.events import (
    assert_exactly_one_record_per_failure,
    insert_burst,
    insert_failure,
)

pytestmark = pytest.mark.anyio

Conn = psycopg.Connection[tuple[object, ...]]


def settings(**overrides: object) -> Settings:
    return Settings(**{"database_url": None, "batch_size": 100, **overrides})


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    async with Store.open(db_url) as opened:
        yield opened


@pytest.fixture
def conn(db_url: str) -> Conn:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c  # type: ignore[misc]


async def test_records_the_diagnosis_sanitized_and_pending(store: Store, conn: Conn) -> None:
    event_id = insert_failure(
        conn,
        error_message='{"ok": false, "error": "invalid_auth"} token=xoxb-123456789012-secret',
        http_status=200,
        error_code=None,
    )
    assert await Claimer(store, settings(), Wakeup()).drain() == 1
    row = conn.execute(
        "SELECT failure_category, status, failure_reason, analyzer_signals, action_taken "
        "FROM system_integrity_events WHERE event_id = %s",
        (event_id,),
    ).fetchone()
    assert row is not None
    category, status, reason, signals, action = row
    assert (category, status) == ("auth", "pending")
    assert "xoxb-123456789012" not in str(reason)
    assert set(signals) >= {"signals", "confidence", "advice"}  # type: ignore[arg-type]
    assert action
    assert conn.execute("SELECT count(*) FROM selfheal_inbox").fetchone() == (0,)


async def test_three_claimers_at_once_record_each_failure_once(db_url: str, conn: Conn) -> None:
    insert_burst(conn, 3_000)

    async def run_one() -> None:
        async with Store.open(db_url) as own:
            await Claimer(own, settings(batch_size=50), Wakeup()).drain()

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(run_one)
    assert assert_exactly_one_record_per_failure(conn) == 3_000


async def test_a_leased_batch_is_invisible_until_its_lease_expires(
    store: Store, conn: Conn
) -> None:
    insert_burst(conn, 10)
    leased = await store.claim(100, lease_seconds=3600)
    assert len(leased) == 10
    assert await Claimer(store, settings(), Wakeup()).drain() == 0
    # The daemon that leased them died; its lease runs out.
    conn.execute("UPDATE selfheal_inbox SET available_at = now()")
    assert await Claimer(store, settings(), Wakeup()).drain() == 10
    assert assert_exactly_one_record_per_failure(conn) == 10


async def test_a_poison_row_is_retried_then_parked_and_never_blocks_the_rest(
    store: Store, conn: Conn
) -> None:
    # A database-side failure for one row only: a constraint that rejects its record.
    conn.execute(
        "ALTER TABLE system_integrity_events ADD CONSTRAINT reject_poison "
        "CHECK (failure_reason NOT LIKE '%%POISON-PILL%%')"
    )
    poison = insert_failure(conn, error_message="POISON-PILL")
    healthy = [insert_failure(conn, error_message=f"fine {n}") for n in range(5)]
    claimer = Claimer(store, settings(max_processing_attempts=3), Wakeup())

    await claimer.drain()
    recorded = {r[0] for r in conn.execute("SELECT event_id FROM system_integrity_events")}
    assert recorded == set(healthy)
    for _ in range(3):  # each retry waits out its backoff; here the clock is moved instead
        conn.execute("UPDATE selfheal_inbox SET available_at = now()")
        await claimer.drain()
    row = conn.execute(
        "SELECT action_taken, failure_reason, analyzer_signals->>'attempts' "
        "FROM system_integrity_events WHERE event_id = %s",
        (poison,),
    ).fetchone()
    assert row is not None
    assert row[0] == "parked"
    assert "CheckViolation" in str(row[1])
    assert row[2] == "3"
    assert conn.execute("SELECT count(*) FROM selfheal_inbox").fetchone() == (0,)


async def test_a_row_that_keeps_crashing_its_daemon_is_parked(store: Store, conn: Conn) -> None:
    event_id = insert_failure(conn)
    # Claimed three times by daemons that died before recording it.
    conn.execute("UPDATE selfheal_inbox SET attempts = 3")
    await Claimer(store, settings(max_processing_attempts=3), Wakeup()).drain()
    row = conn.execute(
        "SELECT action_taken FROM system_integrity_events WHERE event_id = %s", (event_id,)
    ).fetchone()
    assert row == ("parked",)


async def test_a_deleted_event_leaves_the_inbox_without_a_record(store: Store, conn: Conn) -> None:
    event_id = insert_failure(conn)
    conn.execute("DELETE FROM integration_events WHERE id = %s", (event_id,))
    await Claimer(store, settings(), Wakeup()).drain()
    assert conn.execute("SELECT count(*) FROM selfheal_inbox").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM system_integrity_events").fetchone() == (0,)


async def test_scanner_finds_old_unqueued_failures_however_old(store: Store, conn: Conn) -> None:
    conn.execute("SET session_replication_role = replica")
    insert_burst(conn, 25)
    conn.execute("UPDATE integration_events SET created_at = now() - interval '400 days'")
    conn.execute("SET session_replication_role = origin")
    claimer_wakeup = Wakeup()
    scanner = Scanner(store, settings(scan_chunk_size=7), Wakeup(), claimer_wakeup)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scanner.run)
        assert await claimer_wakeup.wait(30)
        scanner.stop()
    assert await Claimer(store, settings(), Wakeup()).drain() == 25
    assert assert_exactly_one_record_per_failure(conn) == 25


async def test_named_events_skip_successes_and_recorded_ones(store: Store, conn: Conn) -> None:
    failure = insert_failure(conn)
    row = conn.execute(
        "INSERT INTO integration_events (service_name, status) VALUES ('s', 'success') RETURNING id"
    ).fetchone()
    assert row is not None
    success = uuid.UUID(str(row[0]))
    claimer = Claimer(store, settings(), Wakeup())
    assert [r.diagnosis.event_id for r in await claimer.process_events([failure, success])] == [
        failure
    ]
    assert await claimer.process_events([failure]) == []
