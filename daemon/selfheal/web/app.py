"""The ASGI app: `/metrics` in the Prometheus text format, `/healthz` (200 while the daemon
is well, 503 with the reasons otherwise). Neither queries Postgres: the gauges and the
health come from what the daemon's loops already know."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from selfheal.metrics import REGISTRY
from selfheal.services.watchdog import Health

__all__ = ["create_app"]


def create_app(health: Health) -> Starlette:
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        problems = health.problems()
        if problems:
            return PlainTextResponse("\n".join(problems) + "\n", status_code=503)
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
        ]
    )
