"""The LISTEN connection: wakes the claimer on NOTIFY, reconnects with backoff, re-LISTENs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import psycopg
from anyio.abc import TaskStatus
from psycopg import sql

from selfheal.db import queries
from selfheal.logs import first_line, get_logger
from selfheal.services.base import reconnect_delay

__all__ = ["Listener"]

log = get_logger()


class Listener:
    def __init__(
        self,
        conninfo: str,
        on_notify: Callable[[], None],
        on_connect: Callable[[], None],
        check_interval: float,
        reconnect_cap: float,
    ) -> None:
        self._conninfo = conninfo
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._check_interval = check_interval
        self._reconnect_cap = reconnect_cap

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        attempt = 0
        started = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            except psycopg.OperationalError as exc:
                delay = reconnect_delay(attempt, self._reconnect_cap)
                log.warning(
                    "listener.connect_failed", error=first_line(exc), retry_in=round(delay, 3)
                )
                attempt += 1
                await anyio.sleep(delay)
                continue
            try:
                async with conn:
                    await self._listen(conn)
                    log.info(
                        "listener.reconnected" if started else "listener.listening",
                        channel=queries.CHANNEL,
                    )
                    attempt = 0
                    # Notifications sent while we were away are gone: catch up from the tables.
                    self._on_connect()
                    if not started:
                        started = True
                        task_status.started()
                    await self._serve(conn)
            except psycopg.OperationalError as exc:
                delay = reconnect_delay(attempt, self._reconnect_cap)
                log.warning("listener.disconnected", error=first_line(exc), retry_in=delay)
                attempt += 1
                await anyio.sleep(delay)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(queries.CHANNEL)))

    async def _serve(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for notify in conn.notifies(timeout=self._check_interval):
                if notify.payload.isdigit():
                    self._on_notify()
                else:
                    log.warning("listener.bad_payload", channel=notify.channel)
            cur = await conn.execute(queries.IS_LISTENING, {"channel": queries.CHANNEL})
            row = await cur.fetchone()
            if not (row and row[0]):
                log.warning("listener.relisten", channel=queries.CHANNEL)
                await self._listen(conn)
                self._on_connect()
