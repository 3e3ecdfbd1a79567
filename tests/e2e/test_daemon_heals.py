"""`selfheal run` heals over real HTTP: backoff replays, a scheduled retry, SIGTERM mid-flight."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.daemon import DaemonProcess
from tests.support.events import insert_failure, wait_until
from tests.support.http import Response, StubServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def api() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


def _status_becomes(
    conn: psycopg.Connection[tuple[object, ...]], event_id: object, status: str
) -> object:
    return wait_until(
        conn,
        "SELECT status FROM system_integrity_events WHERE event_id = %s",
        (event_id,),
        status,
    )


def test_daemon_heals_a_network_failure_on_the_third_attempt(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    api.route("POST", "/hook", [Response(503), Response(502), Response(200, {"ok": True})])
    daemon = DaemonProcess(db_url)
    daemons.append(daemon)
    daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        event_id = insert_failure(
            conn,
            http_status=None,
            error_code="ETIMEDOUT",
            error_message="connect timeout",
            endpoint=api.url + "/hook",
        )
        resolved = daemon.wait_for(
            lambda e: e.get("event") == "recovery.resolved" and e["event_id"] == str(event_id)
        )
        assert resolved["attempts"] == 3
        assert _status_becomes(conn, event_id, "resolved") == "resolved"
    assert len(api.requests("/hook")) == 3
    assert daemon.terminate() == 0


def test_a_scheduled_rate_limit_retry_runs_when_due_not_at_the_next_sweep(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    api.route("POST", "/hook", Response(200, {"ok": True}))
    # Polls and sweeps far apart: only the healer's due-timer can bring the retry.
    daemon = DaemonProcess(
        db_url, SELFHEAL_POLL_INTERVAL_SECONDS="600", SELFHEAL_SCAN_INTERVAL_SECONDS="600"
    )
    daemons.append(daemon)
    daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        event_id = insert_failure(
            conn,
            http_status=429,
            error_code="rate_limited",
            error_message="slow down",
            response_headers={"retry-after": "10"},
            endpoint=api.url + "/hook",
        )
        daemon.wait_for("recovery.pending")
        assert api.requests() == []
        [replayed] = api.wait_for_requests(1, "/hook", timeout=60)
        daemon.wait_for("recovery.resolved")
        _status_becomes(conn, event_id, "resolved")
        row = conn.execute(
            "SELECT status, extract(epoch FROM resolved_at - created_at) FROM "
            "system_integrity_events WHERE event_id = %s",
            (event_id,),
        ).fetchone()
    assert row is not None and row[0] == "resolved"
    assert float(row[1]) >= 10.0  # never before the server allowed
    assert replayed.headers["x-selfheal-attempt"] == "1"
    assert daemon.terminate() == 0


def test_sigterm_mid_recovery_exits_cleanly_and_frees_the_record(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    api.route("POST", "/hook", Response(200, delay=30.0))
    daemon = DaemonProcess(
        db_url, SELFHEAL_SHUTDOWN_GRACE_SECONDS="1", SELFHEAL_HTTP_TIMEOUT_SECONDS="60"
    )
    daemons.append(daemon)
    daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        event_id = insert_failure(
            conn,
            http_status=503,
            error_code=None,
            error_message="unavailable",
            endpoint=api.url + "/hook",
        )
        api.wait_for_requests(1, "/hook")
        assert daemon.terminate() == 0
        assert daemon.events("daemon.grace_expired")
        row = conn.execute(
            "SELECT status, lease_owner FROM system_integrity_events WHERE event_id = %s",
            (event_id,),
        ).fetchone()
    # Not resolved (no evidence), and free for the next daemon at once.
    assert row == ("pending", None)
