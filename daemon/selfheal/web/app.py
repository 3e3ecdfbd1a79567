"""The ASGI app: `/metrics` in the Prometheus text format, `/healthz` (200 while the daemon
is well, 503 with the reasons otherwise), neither of which queries Postgres (the gauges
and the health come from what the daemon's loops already know); and, with
INTERNAL_WEBHOOK_TOKEN, `POST /integration-self-heal` (web/intake.py); and `/` the
Self-Healing Activity page (web/dashboard.py)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from selfheal.logs import error_fields, get_logger
from selfheal.metrics import REGISTRY
from selfheal.services.watchdog import Health
from selfheal.web.dashboard import Dashboard
from selfheal.web.intake import Intake

__all__ = ["create_app"]

log = get_logger()


def create_app(
    health: Health, intake: Intake | None = None, dashboard: Dashboard | None = None
) -> Starlette:
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        problems = health.problems()
        if problems:
            return PlainTextResponse("\n".join(problems) + "\n", status_code=503)
        return PlainTextResponse("ok\n")

    routes: list[BaseRoute] = [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
    ]
    if intake is not None:  # only with INTERNAL_WEBHOOK_TOKEN
        routes.append(Route("/integration-self-heal", intake.handle, methods=["POST"]))
    if dashboard is not None:  # the Self-Healing Activity page (web/dashboard.py)
        routes.extend(dashboard.routes())

    async def failed(request: Request, exc: Exception) -> Response:
        # A bug answers 500 and says so in the log, in one line and a traceback field.
        log.error("http.failed", path=request.url.path, **error_fields(exc))
        return JSONResponse({"success": False, "error": "internal error"}, status_code=500)

    return Starlette(routes=routes, exception_handlers={Exception: failed})
