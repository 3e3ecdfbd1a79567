"""Daemon processes started by a test are killed when it ends, pass or fail; the
production stand-ins (PgBouncer, a TCP link that can go silent) they run behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.pgbouncer import NOT_INSTALLED, PgBouncer, pgbouncer_binary, start_pgbouncer
from tests.support.postgres import PostgresServer, dbname
from tests.support.tcpproxy import TcpProxy, tcp_target


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.close()


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PostgresServer) -> Iterator[PgBouncer]:
    """A real PgBouncer (pool_mode = transaction) in front of the test Postgres."""
    if pgbouncer_binary() is None:
        pytest.skip(NOT_INSTALLED)
    with start_pgbouncer(pg_server) as bouncer:
        yield bouncer


@pytest.fixture
def pooled_db_url(db_url: str, pgbouncer: PgBouncer) -> str:
    """This test's fresh database (`db_url`), reached through PgBouncer."""
    return pgbouncer.url(dbname(db_url))


@pytest.fixture
def tcp_proxy(pg_server: PostgresServer) -> Iterator[TcpProxy]:
    """A loopback TCP proxy to the test Postgres that can go silent (`silence()`)."""
    target = tcp_target(pg_server.admin_conninfo)
    if target is None:
        pytest.skip("the test Postgres listens on a unix socket only: no TCP link to proxy")
    with TcpProxy(*target) as proxy:
        yield proxy
