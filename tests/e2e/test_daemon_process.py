"""`selfheal run` as a real process: bursts, kill -9, three daemons, a Postgres restart, SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.daemon import DaemonProcess
from tests.support.events import (
    assert_exactly_one_record_per_failure,
    count_records,
    insert_burst,
    insert_failure,
    wait_until_recorded,
)
from tests.support.postgres import pg_ctl, private_server, remove

pytestmark = pytest.mark.e2e


def test_records_every_failure_and_exits_cleanly_on_sigterm(
    db_url: str, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(db_url)
    daemons.append(daemon)
    daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(20):
            insert_failure(conn)
        insert_burst(conn, 2_000)
        assert wait_until_recorded(conn, 2_020) == 2_020
        assert assert_exactly_one_record_per_failure(conn) == 2_020
        row = conn.execute(
            "SELECT failure_category, status, action_taken FROM system_integrity_events "
            "WHERE service_name = 'slack' LIMIT 1"
        ).fetchone()
        assert row is not None and row[0] == "auth" and row[1] == "pending" and row[2]
    assert daemon.terminate() == 0
    assert daemon.events("daemon.stopped")


def test_kill_9_mid_burst_loses_nothing_and_records_nothing_twice(
    db_url: str, daemons: list[DaemonProcess]
) -> None:
    held_back = 1_000
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        psycopg.connect(db_url) as holder,
    ):
        insert_burst(conn, 20_000)
        # Claims skip locked inbox rows: while these are held, the burst cannot be finished,
        # so the kill below lands mid-burst however fast the daemon is.
        held = holder.execute(
            "SELECT event_id FROM selfheal_inbox ORDER BY seq DESC LIMIT %s FOR UPDATE",
            (held_back,),
        ).fetchall()
        assert len(held) == held_back
        # The killed daemon's leases run out after 2 s; then the second one takes them.
        first = DaemonProcess(db_url, SELFHEAL_BATCH_SIZE="200", SELFHEAL_LEASE_SECONDS="2")
        daemons.append(first)
        first.started()
        wait_until_recorded(conn, 2_000)
        first.kill()
        assert count_records(conn) <= 20_000 - held_back
        holder.rollback()
        second = DaemonProcess(db_url)
        daemons.append(second)
        second.started()
        assert wait_until_recorded(conn, 20_000) == 20_000
        assert assert_exactly_one_record_per_failure(conn) == 20_000
        assert second.terminate() == 0


def test_three_daemons_share_the_work_without_doubles(
    db_url: str, daemons: list[DaemonProcess]
) -> None:
    for _ in range(3):
        daemons.append(DaemonProcess(db_url, SELFHEAL_BATCH_SIZE="100"))
    for daemon in daemons:
        daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(5):
            insert_burst(conn, 2_000)
        for _ in range(100):
            insert_failure(conn)
        assert wait_until_recorded(conn, 10_100) == 10_100
        assert assert_exactly_one_record_per_failure(conn) == 10_100
    for daemon in daemons:
        assert daemon.terminate() == 0


def test_failures_written_with_triggers_off_are_found_by_the_catch_up_scan(
    db_url: str, daemons: list[DaemonProcess]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Replication and restores write with triggers off: no inbox row, no NOTIFY.
        conn.execute("SET session_replication_role = replica")
        insert_burst(conn, 500)
        conn.execute("SET session_replication_role = origin")
        daemon = DaemonProcess(db_url)
        daemons.append(daemon)
        daemon.started()
        assert wait_until_recorded(conn, 500) == 500
        assert assert_exactly_one_record_per_failure(conn) == 500


def test_survives_a_postgres_restart(tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    conninfo, data_dir = private_server(tmp_path)
    try:
        url = psycopg.conninfo.make_conninfo(conninfo)
        subprocess.run(
            [sys.executable, "-m", "selfheal", "migrate"],
            env={**os.environ, "DATABASE_URL": url},
            check=True,
            capture_output=True,
            timeout=60,
        )
        daemon = DaemonProcess(url, SELFHEAL_RECONNECT_MAX_SECONDS="1")
        daemons.append(daemon)
        daemon.started()
        with psycopg.connect(url, autocommit=True) as conn:
            insert_burst(conn, 1_000)
            assert wait_until_recorded(conn, 1_000) == 1_000
        pg_ctl(data_dir, "restart", "-m", "fast")
        daemon.wait_for("listener.reconnected")
        with psycopg.connect(url, autocommit=True) as conn:
            insert_burst(conn, 1_000)
            insert_failure(conn)
            assert wait_until_recorded(conn, 2_001) == 2_001
            assert assert_exactly_one_record_per_failure(conn) == 2_001
        assert daemon.terminate() == 0
    finally:
        pg_ctl(data_dir, "stop", "-m", "immediate")
        remove(data_dir)


def test_runs_on_an_embedded_postgres_without_database_url(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    data_dir = tmp_path / "pgdata"
    daemon = DaemonProcess(None, SELFHEAL_DATA_DIR=str(data_dir))
    daemons.append(daemon)
    started = daemon.wait_for("embedded_postgres.started", timeout=120)
    assert started["data_dir"] == str(data_dir)
    daemon.started()
    assert daemon.terminate() == 0
    # The server stops with the daemon that started it.
    assert not (data_dir / "postmaster.pid").exists()


def test_bad_configuration_fails_at_start_with_one_line(db_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "selfheal", "run"],
        env={**os.environ, "DATABASE_URL": db_url, "SELFHEAL_LEASE_SECONDS": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "SELFHEAL_LEASE_SECONDS" in done.stderr
