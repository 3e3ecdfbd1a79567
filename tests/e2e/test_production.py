"""`selfheal run` under production conditions: PgBouncer in transaction mode, links that go
silent, hostile rows, and a crash an operator has to read."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.daemon import DaemonProcess
from tests.support.events import (
    assert_exactly_one_record_per_failure,
    insert_burst,
    insert_failure,
    wait_until,
    wait_until_recorded,
)
from tests.support.http import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    OAuthTokenEndpoint,
    Request,
    Response,
    StubServer,
    bearer_protected_api,
)
from tests.support.pgbouncer import PgBouncer, advisory_locks
from tests.support.postgres import Databases, PostgresServer, dbname
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.e2e

Conn = psycopg.Connection[tuple[Any, ...]]
SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
DATABASE_LOOPS = {"listener", "claimer", "scanner", "healer", "notifier", "sender", "advisor"}

# The pooler detected (the default, `auto`) or declared: both must behave the same.
POOLER_SETTINGS = pytest.mark.parametrize(
    "pooler_env",
    [{}, {"SELFHEAL_DATABASE_POOLER": "pgbouncer"}],
    ids=["pooler-detected", "pooler-declared"],
)


def _locks_left(pg_server: PostgresServer, db_url: str) -> int:
    return advisory_locks(pg_server.admin_conninfo, dbname(db_url))


def _stopped_cleanly(daemon: DaemonProcess) -> int:
    """SIGTERM, the exit status, and every log line read (up to `daemon.stopped`)."""
    status = daemon.terminate()
    daemon.wait_for("daemon.stopped", timeout=10)
    return status


# --- PgBouncer in transaction mode ------------------------------------------------------------


@POOLER_SETTINGS
def test_a_burst_through_pgbouncer_is_recorded_once_and_leaves_no_advisory_lock(
    db_url: str,
    pooled_db_url: str,
    pg_server: PostgresServer,
    pooler_env: dict[str, str],
    daemons: list[DaemonProcess],
) -> None:
    daemon = DaemonProcess(pooled_db_url, SELFHEAL_LISTEN_DATABASE_URL=db_url, **pooler_env)
    daemons.append(daemon)
    daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        insert_burst(conn, 2_000)
        for _ in range(20):
            insert_failure(conn)
        assert wait_until_recorded(conn, 2_020) == 2_020
        assert assert_exactly_one_record_per_failure(conn) == 2_020
    # A session lock taken through a transaction pooler stays on a server connection the
    # daemon no longer holds: it would show here, on the real server.
    assert _locks_left(pg_server, db_url) == 0
    assert _stopped_cleanly(daemon) == 0
    assert _locks_left(pg_server, db_url) == 0
    assert not daemon.events("listener.pooled")  # it was given a direct listen URL


class PerUserTokenEndpoints:
    """One OAuth token endpoint per user connection behind one token URL (a Handler).

    Refresh tokens are `rt-<user>-<n>` and access tokens `at-<user>-<n>`, so the
    refresh token presented says whose endpoint answers.
    """

    def __init__(self, users: list[str]) -> None:
        self.by_user = {user: self._endpoint(user) for user in users}

    @staticmethod
    def _endpoint(user: str) -> OAuthTokenEndpoint:
        return OAuthTokenEndpoint(
            refresh_token=f"rt-{user}-1",
            access_tokens=(f"at-{user}-{n}" for n in itertools.count(1)),
            refresh_tokens=(f"rt-{user}-{n}" for n in itertools.count(2)),
        )

    def __call__(self, request: Request) -> Response:
        presented = request.form().get("refresh_token", "")
        user = presented.removeprefix("rt-").rpartition("-")[0]
        endpoint = self.by_user.get(user) or next(iter(self.by_user.values()))
        return endpoint(request)  # an unknown token gets invalid_grant

    def issued_access_tokens(self) -> set[str]:
        return {t for e in self.by_user.values() for t in e.issued_access_tokens}


@pytest.mark.parametrize("daemon_count", [1, 2], ids=["one-daemon", "two-daemons"])
def test_concurrent_token_refreshes_through_pgbouncer_refresh_once_per_connection(
    db_url: str,
    pooled_db_url: str,
    pg_server: PostgresServer,
    daemon_count: int,
    daemons: list[DaemonProcess],
) -> None:
    users = [f"u{n}" for n in range(10)]
    failures_per_user = 5
    tokens = PerUserTokenEndpoints(users)
    with StubServer() as api, psycopg.connect(db_url, autocommit=True) as conn:
        api.route("POST", "/oauth/token", tokens)
        api.route(
            "POST", "/api/chat.postMessage", bearer_protected_api(tokens.issued_access_tokens)
        )
        oauth_config = {
            "token_url": api.url + "/oauth/token",
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "scopes": ["chat:write"],
        }
        row = conn.execute(
            "INSERT INTO integrations_master (service_name, oauth_config, allowed_hosts) "
            "VALUES ('slack', %s, %s) RETURNING id",
            (Jsonb(oauth_config), [api.url.removeprefix("http://")]),
        ).fetchone()
        assert row is not None
        user_ids = {user: uuid.uuid4() for user in users}
        for user, user_id in user_ids.items():
            conn.execute(
                "INSERT INTO user_integrations (user_id, integration_id, access_token, "
                "refresh_token) VALUES (%s, %s, %s, %s)",
                (user_id, row[0], f"expired-{user}", f"rt-{user}-1"),
            )
        # Small batches, users interleaved: with two daemons, each user's failures are
        # split between them, so both want the same refresh at the same time.
        batch = {"SELFHEAL_BATCH_SIZE": "5"} if daemon_count > 1 else {}
        for _ in range(daemon_count):
            daemons.append(
                DaemonProcess(pooled_db_url, SELFHEAL_LISTEN_DATABASE_URL=db_url, **batch)
            )
        for daemon in daemons:
            daemon.started()
        with conn.transaction():
            for _ in range(failures_per_user):
                for user in users:
                    insert_failure(
                        conn,
                        user_id=user_ids[user],
                        http_status=401,
                        error_code="invalid_token",
                        error_message="The access token expired",
                        endpoint=api.url + "/api/chat.postMessage",
                        payload={"channel": "C1", "text": f"hello from {user}"},
                    )
        total = len(users) * failures_per_user
        wait_until(
            conn,
            "SELECT count(*) FROM system_integrity_events WHERE status = 'resolved'",
            None,
            total,
            timeout=90,
        )
        one_each = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM system_integrity_events"
        ).fetchone()
        assert one_each == (total, total)
        assert {u: e.request_count for u, e in tokens.by_user.items()} == dict.fromkeys(users, 1)
        stored = conn.execute(
            "SELECT user_id, access_token, refresh_token FROM user_integrations"
        ).fetchall()
        by_id = {user_id: user for user, user_id in user_ids.items()}
        assert {(by_id[r[0]], r[1], r[2]) for r in stored} == {
            (u, f"at-{u}-1", f"rt-{u}-2") for u in users
        }
        assert _locks_left(pg_server, db_url) == 0
    for daemon in daemons:
        assert _stopped_cleanly(daemon) == 0
    assert _locks_left(pg_server, db_url) == 0


@POOLER_SETTINGS
def test_without_a_listen_url_through_pgbouncer_it_warns_once_and_polls(
    db_url: str, pooled_db_url: str, pooler_env: dict[str, str], daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(pooled_db_url, SELFHEAL_POLL_INTERVAL_SECONDS="0.5", **pooler_env)
    daemons.append(daemon)
    warning = daemon.wait_for("listener.pooled")
    assert warning.get("level") == "warning"
    assert "PgBouncer" in warning["message"]
    assert "SELFHEAL_LISTEN_DATABASE_URL" in warning["message"]
    daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        insert_burst(conn, 200)
        insert_failure(conn)
        assert wait_until_recorded(conn, 201) == 201
        assert assert_exactly_one_record_per_failure(conn) == 201
    assert _stopped_cleanly(daemon) == 0
    assert len(daemon.events("listener.pooled")) == 1


def test_two_migrations_at_once_through_pgbouncer_both_succeed_and_apply_once(
    databases: Databases, pgbouncer: PgBouncer, pg_server: PostgresServer
) -> None:
    with databases.empty() as empty_url:
        env = {**os.environ, "DATABASE_URL": pgbouncer.url(dbname(empty_url))}
        env.pop("SELFHEAL_TEST_DATABASE_URL", None)
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "selfheal", "migrate"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [run.communicate(timeout=120)[0] for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        sql_files = [*SQL_DIR.glob("migrations/*.sql"), *SQL_DIR.glob("triggers/*.sql")]
        with psycopg.connect(empty_url, autocommit=True) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM selfheal_migrations")]
            assert len(names) == len(sql_files), names
            # The schema works: a failure written now is queued for the daemon.
            event_id = insert_failure(conn)
            queued = conn.execute(
                "SELECT count(*) FROM selfheal_inbox WHERE event_id = %s", (event_id,)
            ).fetchone()
            assert queued == (1,)
        assert _locks_left(pg_server, empty_url) == 0


# --- links that go silent ---------------------------------------------------------------------


def test_a_silent_network_path_is_abandoned_and_nothing_is_lost(
    db_url: str, tcp_proxy: TcpProxy, daemons: list[DaemonProcess]
) -> None:
    proxied = tcp_proxy.url(db_url)
    daemon = DaemonProcess(
        proxied,
        SELFHEAL_LISTEN_DATABASE_URL=proxied,
        SELFHEAL_DB_TIMEOUT_SECONDS="2",
        SELFHEAL_LISTEN_CHECK_SECONDS="1",
        SELFHEAL_RECONNECT_MAX_SECONDS="1",
    )
    daemons.append(daemon)
    daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:  # direct, not through the proxy
        insert_burst(conn, 100)
        assert wait_until_recorded(conn, 100) == 100
        assert not daemon.events("db.timeout")  # a healthy link never times out
        # A NAT or firewall dropping its state: no FIN, no RST, just nothing.
        assert tcp_proxy.silence() >= 2  # at least the listener and one pool connection
        insert_burst(conn, 100)
        assert wait_until_recorded(conn, 200, timeout=60) == 200
        assert assert_exactly_one_record_per_failure(conn) == 200
    timeout = daemon.wait_for("db.timeout", timeout=30)
    assert timeout.get("loop") in DATABASE_LOOPS, timeout
    daemon.wait_for(lambda e: e.get("event") == "db.timeout" and e.get("loop") == "listener")
    daemon.wait_for("listener.reconnected", timeout=30)
    assert not daemon.events("daemon.crashed")
    assert _stopped_cleanly(daemon) == 0


# --- hostile rows -----------------------------------------------------------------------------

INSERT_RAW_FAILURE = """
INSERT INTO integration_events (service_name, event_type, payload, status, error_code,
                                error_message, http_status, response_headers)
VALUES (%s, 'message.send', %s::jsonb, 'error', %s, 'rejected', %s, %s::jsonb)
RETURNING id
"""
ORDINARY_FAILURES = [  # (http_status, error_code, the analyzer's category)
    (401, "invalid_auth", "auth"),
    (429, "ratelimited", "rate_limit"),
    (None, "ECONNRESET", "network"),
    (422, "validation_error", "data"),
]


def _raw_failure(
    conn: Conn,
    *,
    payload: str = '{"text": "hello"}',
    headers: str | None = None,
    http_status: int | None = 422,
    error_code: str | None = "validation_error",
) -> uuid.UUID:
    row = conn.execute(
        INSERT_RAW_FAILURE, ("acme", payload, error_code, http_status, headers)
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def test_poison_rows_are_contained_and_the_rest_of_their_batch_is_recorded(
    db_url: str, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(db_url, SELFHEAL_LEASE_SECONDS="5")
    daemons.append(daemon)
    daemon.started()
    big_headers = json.dumps({f"x-filler-{n}": "v" * 1_024 for n in range(2_048)})  # ~2 MB
    with psycopg.connect(db_url, autocommit=True) as conn:
        with conn.transaction():  # one commit: one batch
            deep_payload = _raw_failure(conn, payload="[" * 5_000 + "]" * 5_000)
            huge_headers = _raw_failure(
                conn, headers=big_headers, http_status=429, error_code="ratelimited"
            )
            deep_header = _raw_failure(
                conn,
                headers='{"retry-after": ' + "[" * 2_000 + "]" * 2_000 + "}",
                http_status=429,
                error_code="ratelimited",
            )
            ordinary = {
                _raw_failure(conn, http_status=status, error_code=code): category
                for status, code, category in (ORDINARY_FAILURES * 7)[:27]
            }
        assert wait_until_recorded(conn, 30, timeout=120) == 30
        assert assert_exactly_one_record_per_failure(conn) == 30
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            records = {
                r["event_id"]: r
                for r in cur.execute(
                    "SELECT event_id, failure_category, action_taken, failure_reason, "
                    "analyzer_signals ? 'payload_shape' AS has_shape, "
                    "octet_length((analyzer_signals -> 'payload_shape')::text) AS shape_bytes "
                    "FROM system_integrity_events"
                )
            }
    assert {event_id: records[event_id]["failure_category"] for event_id in ordinary} == ordinary
    assert all(records[event_id]["action_taken"] != "parked" for event_id in ordinary)
    for poison in (deep_payload, huge_headers, deep_header):
        record = records[poison]
        if record["action_taken"] == "parked":
            assert record["failure_reason"], record  # parked with its reason
    shape = records[deep_payload]
    if shape["action_taken"] != "parked":
        assert shape["has_shape"], shape
        assert shape["shape_bytes"] < 10_000, shape  # cut at a depth limit, not 5,000 deep
    assert daemon.proc.poll() is None
    assert not daemon.events("daemon.crashed")
    assert _stopped_cleanly(daemon) == 0


# --- a crash, read by an operator -------------------------------------------------------------


def test_a_crash_is_one_json_line_naming_the_cause_and_exit_status_1(
    db_url: str, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(db_url, SELFHEAL_POLL_INTERVAL_SECONDS="0.5")
    daemons.append(daemon)
    daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        # A permanent error: the claimer's next poll finds its table gone.
        conn.execute("DROP TABLE selfheal_inbox CASCADE")
    assert daemon.proc.wait(60) == 1
    daemon.wait_for("daemon.crashed", timeout=10)
    [line] = [raw for raw in daemon.raw if '"daemon.crashed"' in raw]
    crash = json.loads(line)
    error, traceback = crash["error"], crash["traceback"]
    assert "\n" not in error
    assert "UndefinedTable" in error and "selfheal_inbox" in error, error
    assert "ExceptionGroup" not in error and "sub-exception" not in error, error
    assert isinstance(traceback, str) and traceback.strip(), crash
    assert len(line.encode()) - len(json.dumps(traceback).encode()) < 4_096
