"""Shared fixtures: a real Postgres (the local one, DATABASE_URL, or an embedded one)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.postgres import Databases, PostgresServer, find_server

# The stand-ins for Slack, the token endpoint and the APIs are on loopback: never proxied.
os.environ["NO_PROXY"] = ",".join(
    filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1", "localhost"])
)
# The same stand-ins are where replays go, and the guard refuses loopback by default: allow
# it for the daemons these tests start (in this process through Settings, or as processes).
os.environ.setdefault("SELFHEAL_ALLOW_LOOPBACK", "true")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> PostgresServer:
    return find_server(tmp_path_factory.mktemp("pg"))


@pytest.fixture(scope="session")
def databases(pg_server: PostgresServer) -> Iterator[Databases]:
    dbs = Databases(pg_server)
    yield dbs
    dbs.close()


@pytest.fixture
def db_url(databases: Databases) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    with databases.fresh() as url:
        yield url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path
