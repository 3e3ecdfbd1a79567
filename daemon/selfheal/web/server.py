"""Serves the ASGI app with Hypercorn inside the daemon's task group: the socket is bound
at start (so a taken port stops the daemon with one line), and the server ends, finishing
the requests in flight, when the daemon sets `shutdown`."""

from __future__ import annotations

import socket
from typing import Any

import anyio
from anyio.abc import TaskStatus
from hypercorn.asyncio import serve
from hypercorn.config import Config

from selfheal.logs import get_logger

__all__ = ["bind", "serve_http"]

log = get_logger()


def bind(addr: tuple[str, int]) -> socket.socket:
    """The listening socket for SELFHEAL_HTTP_ADDR (raises OSError: in use, no such host)."""
    host, port = addr
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


async def serve_http(
    app: Any,
    sock: socket.socket,
    shutdown: anyio.Event,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    host, port = sock.getsockname()[:2]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn's now: it closes it
    config.accesslog = None  # the daemon's own log says what matters
    config.errorlog = None
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = 5.0
    config.include_server_header = False
    log.info("http.listening", address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    task_status.started()
    await serve(app, config, shutdown_trigger=shutdown.wait)
