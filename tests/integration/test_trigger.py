"""The trigger: failures reach the inbox in the writer's transaction; one NOTIFY per statement."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from selfheal.db import queries
from tests.support.events import insert_burst, insert_failure


def _inbox(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT count(*) FROM selfheal_inbox").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def listener(db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"LISTEN {queries.FAILURES_CHANNEL}")
        yield conn


END_OF_TEST = "end-of-test"


def _notified_before_end(
    writer: psycopg.Connection[tuple[object, ...]],
    listener: psycopg.Connection[tuple[object, ...]],
) -> list[str]:
    """The payloads the writer's earlier transactions sent on the channel.

    The writer then sends a marker of its own in a later transaction; Postgres delivers
    notifications in commit order, so what arrives before the marker is all that came
    before it, read without waiting out a timeout.
    """
    writer.execute("SELECT pg_notify(%s, %s)", (queries.FAILURES_CHANNEL, END_OF_TEST))
    if not writer.autocommit:
        writer.commit()
    payloads: list[str] = []
    for notify in listener.notifies(timeout=30):
        if notify.payload == END_OF_TEST:
            return payloads
        payloads.append(notify.payload)
    raise AssertionError(f"the end-of-test marker never arrived; before it: {payloads}")


def test_error_row_is_queued_and_notified(
    db_url: str, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        insert_failure(conn)
        assert _inbox(conn) == 1
        assert _notified_before_end(conn, listener) == ["1"]


def test_success_rows_and_self_heal_attempts_do_not_fire(
    db_url: str, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO integration_events (service_name, status) VALUES ('s', 'success')"
        )
        insert_failure(conn, selfheal_attempt=2)
        assert _inbox(conn) == 0
        assert _notified_before_end(conn, listener) == []


def test_update_into_error_fires_once(
    db_url: str, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO integration_events (service_name, status) VALUES ('s', 'pending')"
        )
        conn.execute("UPDATE integration_events SET status = 'error', http_status = 503")
        conn.execute("UPDATE integration_events SET error_message = 'still failing'")
        assert _inbox(conn) == 1
        assert _notified_before_end(conn, listener) == ["1"]


def test_bulk_insert_sends_one_notification(
    db_url: str, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        insert_burst(conn, 100_000)
        assert _inbox(conn) == 100_000
        assert _notified_before_end(conn, listener) == ["100000"]


def test_rolled_back_failure_leaves_nothing(
    db_url: str, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    with psycopg.connect(db_url) as conn:
        insert_failure(conn)
        conn.rollback()
        assert _inbox(conn) == 0
        assert _notified_before_end(conn, listener) == []


def test_an_application_role_without_rights_on_the_inbox_can_write_failures(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """
            DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_test_writer') THEN
                    CREATE ROLE selfheal_test_writer NOLOGIN;
                END IF;
            END $$;
            GRANT INSERT, SELECT ON integration_events TO selfheal_test_writer;
            """
        )
        with conn.transaction():
            conn.execute("SET LOCAL ROLE selfheal_test_writer")
            conn.execute("SET LOCAL search_path = pg_catalog")  # a hostile search_path too
            conn.execute(
                "INSERT INTO public.integration_events (service_name, status, http_status) "
                "VALUES ('stripe', 'error', 500)"
            )
        assert _inbox(conn) == 1
        conn.execute("REVOKE ALL ON integration_events FROM selfheal_test_writer")
