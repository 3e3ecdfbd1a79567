"""Find or start a real PostgreSQL for the tests; hand out one fresh database per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from selfheal.db.embedded import start_embedded
from selfheal.db.migrate import apply_migrations


@dataclass
class PostgresServer:
    admin_conninfo: str
    embedded_dir: Path | None = None

    def database(self, name: str) -> str:
        return make_conninfo(self.admin_conninfo, dbname=name)


def _answers(conninfo: str) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def find_server(tmp_root: Path) -> PostgresServer:
    url = os.environ.get("SELFHEAL_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return PostgresServer(url)
    for user in ("postgres", "root"):
        candidate = f"host=127.0.0.1 port=5432 user={user} dbname=postgres"
        if _answers(candidate):
            return PostgresServer(candidate)
    data_dir = tmp_root / "embedded-pg"
    return PostgresServer(start_embedded(data_dir), embedded_dir=data_dir)


class Databases:
    """A migrated template database, cloned for each test (a file copy: milliseconds)."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.template = f"selfheal_tpl_{uuid.uuid4().hex[:12]}"
        self._admin("CREATE DATABASE {}", self.template)
        anyio.run(apply_migrations, server.database(self.template))

    def _admin(self, statement: str, name: str) -> None:
        with psycopg.connect(self.server.admin_conninfo, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL(statement).format(psycopg.sql.Identifier(name)))

    @contextmanager
    def fresh(self) -> Iterator[str]:
        name = f"selfheal_t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.server.admin_conninfo, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    psycopg.sql.Identifier(name), psycopg.sql.Identifier(self.template)
                )
            )
        try:
            yield self.server.database(name)
        finally:
            self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    @contextmanager
    def empty(self) -> Iterator[str]:
        name = f"selfheal_e_{uuid.uuid4().hex[:12]}"
        self._admin("CREATE DATABASE {}", name)
        try:
            yield self.server.database(name)
        finally:
            self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def close(self) -> None:
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.template)


def private_server(tmp_dir: Path) -> tuple[str, Path]:
    """A Postgres of the test's own (for restarting under the daemon)."""
    data_dir = tmp_dir / "pg"
    return start_embedded(data_dir), data_dir


def pg_ctl(data_dir: Path, *args: str) -> None:
    """pg_ctl on an embedded server; as root, pgserver runs Postgres as its own user."""
    from pgserver._commands import pg_ctl as run_pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None
    run_pg_ctl(["-w", *args], pgdata=data_dir, user=user, timeout=60)


def dbname(conninfo: str) -> str:
    return str(conninfo_to_dict(conninfo).get("dbname", ""))


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="selfheal-test-"))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
