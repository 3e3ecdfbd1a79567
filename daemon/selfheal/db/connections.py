"""How the daemon connects: TCP keepalives and a user timeout on every connection (a dead
link is noticed by the kernel too), and whether a pooler (PgBouncer in transaction mode)
stands between the daemon and Postgres."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from selfheal.errors import DatabaseUnavailable
from selfheal.logs import first_line, get_logger

log = get_logger()

__all__ = ["ConnectionPolicy", "behind_pooler", "deadline_missed", "with_keepalives"]


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """What every connection of the daemon through DATABASE_URL obeys.

    ``deadline``: seconds any round trip may take before its connection is thrown away.
    ``pooled``: a transaction pooler sits in between: no server-side prepared statements
    (the pooler hands them to other clients) and no session state.
    """

    deadline: float = 15.0
    pooled: bool = False

    @property
    def connect_kwargs(self) -> dict[str, Any]:
        # prepare_threshold=None: psycopg never prepares (PgBouncer < 1.21 cannot keep them).
        return {"autocommit": True, **({"prepare_threshold": None} if self.pooled else {})}


def with_keepalives(conninfo: str, deadline: float) -> str:
    """The conninfo with keepalives and tcp_user_timeout, unless it sets them itself: a
    link that goes silent is closed by the kernel within about the deadline."""
    given = conninfo_to_dict(conninfo)
    seconds = max(1, round(deadline))
    defaults = {
        "connect_timeout": str(max(2, seconds)),
        "keepalives": "1",
        "keepalives_idle": str(max(1, seconds // 3)),
        "keepalives_interval": str(max(1, seconds // 6)),
        "keepalives_count": "3",
        "tcp_user_timeout": str(seconds * 1000),
    }
    return make_conninfo(conninfo, **{k: v for k, v in defaults.items() if k not in given})


async def behind_pooler(conninfo: str, deadline: float) -> bool:
    """Whether a pooler answers for Postgres: PgBouncer (and Supavisor, pgpool) announce a
    backend key of their own, so the pid the connection was given is not the pid of the
    server process that runs its queries."""
    try:
        with anyio.fail_after(deadline):
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, prepare_threshold=None
            ) as conn:
                cur = await conn.execute("SELECT pg_backend_pid()")
                row = await cur.fetchone()
                return row is None or row[0] != conn.info.backend_pid
    except (psycopg.OperationalError, TimeoutError) as exc:
        raise DatabaseUnavailable(first_line(exc)) from exc


def deadline_missed(deadline: float) -> DatabaseUnavailable:
    """A round trip missed its deadline: its connection is gone (a dead link, a hung
    middlebox, a failover that left the socket open). `loop` comes from the log context."""
    log.warning("db.timeout", deadline_seconds=deadline)
    return DatabaseUnavailable(f"no answer from Postgres within {deadline:g} s")
