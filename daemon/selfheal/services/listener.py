"""The LISTEN connection: wakes the claimer on NOTIFY, reconnects with backoff, LISTENs
again and has the tables swept after every (re)connect (notifications sent while it was
away are gone)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import psycopg
from anyio.abc import TaskStatus
from psycopg import sql

from selfheal.db import queries
from selfheal.db.connections import deadline_missed, with_keepalives
from selfheal.errors import DatabaseUnavailable, TemporaryError
from selfheal.logs import first_line, get_logger
from selfheal.metrics import LISTENER_CONNECTED
from selfheal.services.base import Service, Wakeup

__all__ = ["Listener"]

log = get_logger()

_CHANNEL = queries.FAILURES_CHANNEL


class Listener(Service):
    name = "listener"

    def __init__(
        self,
        conninfo: str,
        on_notify: Callable[[], None],
        on_connect: Callable[[], None],
        check_interval: float,
        reconnect_cap: float,
        deadline: float,
    ) -> None:
        # The loop never rests between steps: a step ends only when the connection does.
        super().__init__(Wakeup(), period=0.0, reconnect_cap=reconnect_cap)
        self._conninfo = with_keepalives(conninfo, deadline)
        self._deadline = deadline
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._check_interval = check_interval
        self._listening = False
        self._started: TaskStatus[None] | None = None
        self._ever_listened = False

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Returns to `task_status` once the first LISTEN is in place."""
        self._started = task_status
        await super().run()

    def on_unavailable(self, exc: TemporaryError, retry_in: float) -> None:
        event = "listener.disconnected" if self._listening else "listener.connect_failed"
        self._listening = False
        LISTENER_CONNECTED.set(0)
        log.warning(event, error=first_line(exc), retry_in=retry_in)

    async def step(self) -> None:
        try:
            with anyio.fail_after(self._deadline):
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(first_line(exc)) from exc
        except TimeoutError:
            raise deadline_missed(self._deadline) from None
        try:
            async with conn:
                with anyio.fail_after(self._deadline):
                    await self._listen(conn)
                self._listening = True
                LISTENER_CONNECTED.set(1)
                log.info(
                    "listener.reconnected" if self._ever_listened else "listener.listening",
                    channel=_CHANNEL,
                )
                self.backoff.reset()
                self._on_connect()
                if not self._ever_listened:
                    self._ever_listened = True
                    if self._started is not None:
                        self._started.started()
                await self._serve(conn)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(first_line(exc)) from exc
        except TimeoutError:
            raise deadline_missed(self._deadline) from None

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(_CHANNEL)))

    @property
    def listening(self) -> bool:
        return self._listening

    async def _serve(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            with self.rest():  # waiting for a notification is not a stall; the check may be
                async for notify in conn.notifies(timeout=self._check_interval):
                    if notify.payload.isdigit():
                        self._on_notify()
                    else:
                        log.warning("listener.bad_payload", channel=notify.channel)
            # The check doubles as the link's heartbeat: a silent link misses the deadline.
            with anyio.fail_after(self._deadline):
                cur = await conn.execute(queries.IS_LISTENING, {"channel": _CHANNEL})
                row = await cur.fetchone()
                if not (row and row[0]):
                    log.warning("listener.relisten", channel=_CHANNEL)
                    await self._listen(conn)
                    self._on_connect()
