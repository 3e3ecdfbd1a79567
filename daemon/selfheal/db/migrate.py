"""Apply the SQL migrations in order, once each, under a transaction-scoped advisory lock.

Trigger files are recorded by content hash, so an edited trigger is re-applied once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import psycopg
from psycopg import sql

from selfheal.db import queries
from selfheal.db.connections import ConnectionPolicy, with_keepalives

__all__ = ["MigrationResult", "apply_migrations", "sql_root"]


@dataclass(frozen=True, slots=True)
class MigrationResult:
    applied: tuple[str, ...]


def sql_root() -> Traversable:
    """The SQL files: inside the installed wheel, or beside the source tree when editable."""
    packaged = resources.files("selfheal") / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "sql"


def _sql_files(folder: Traversable) -> list[Traversable]:
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


async def apply_migrations(
    conninfo: str, policy: ConnectionPolicy | None = None
) -> MigrationResult:
    """Apply what is not applied yet, each file in a transaction of its own that holds a
    transaction-scoped lock: concurrent runs (and runs through PgBouncer) wait for each
    other and apply every file once."""
    policy = policy or ConnectionPolicy()
    root = sql_root()
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(
        with_keepalives(conninfo, policy.deadline), **policy.connect_kwargs
    ) as conn:
        async with conn.transaction():
            await conn.execute(queries.LOCK_MIGRATIONS, {"key": queries.MIGRATION_LOCK_KEY})
            await conn.execute(queries.CREATE_MIGRATIONS_TABLE)
            cur = await conn.execute(queries.APPLIED_MIGRATIONS)
            done = {row[0] for row in await cur.fetchall()}
        for folder in ("migrations", "triggers"):
            for file in _sql_files(root / folder):
                text = _with_channels(file.read_text("utf-8"))
                name = _record_name(folder, file.name, text)
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(queries.LOCK_MIGRATIONS, {"key": queries.MIGRATION_LOCK_KEY})
                    cur = await conn.execute(queries.IS_MIGRATION_APPLIED, {"name": name})
                    row = await cur.fetchone()
                    if row and row[0]:
                        continue  # a concurrent run applied it while we waited
                    await conn.execute(text.encode())
                    await conn.execute(queries.RECORD_MIGRATION, {"name": name})
                applied.append(name)
    return MigrationResult(tuple(applied))


def _with_channels(text: str) -> str:
    """The channel names live in db/queries.py; SQL files name them by placeholder."""
    literal = sql.Literal(queries.FAILURES_CHANNEL).as_string()
    return text.replace("@FAILURES_CHANNEL@", literal)


def _record_name(folder: str, name: str, text: str) -> str:
    if folder == "migrations":
        return name
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"triggers/{name}@{digest}"
