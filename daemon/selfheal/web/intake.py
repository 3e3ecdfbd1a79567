"""POST /integration-self-heal: the specification's webhook and scan modes, for the
integrations that cannot write SQL. A door beside the trigger, not instead of it: a
reported failure is written as an integration would write it, and healed as `selfheal
heal` heals one, so a POST and the trigger racing on one event still make one record."""

from __future__ import annotations

import hmac
import uuid
from typing import Any, Literal, TypeVar

import anyio
import orjson
from anyio.abc import TaskGroup
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from selfheal import app
from selfheal.db.store import Database, Store
from selfheal.logs import error_fields, get_logger
from selfheal.settings import Settings

__all__ = ["Intake"]

log = get_logger()

MAX_BODY = 1024 * 1024
# A body a little too large is read (and dropped) before the 413, so that the client can
# read the answer; a far larger one gets the 413 and a closed connection.
_DRAINED = 8 * MAX_BODY
_SETTLED_POLL = 0.05  # while another healer has the record, within the wait
_M = TypeVar("_M", bound=BaseModel)


class _Webhook(BaseModel):
    """The specification's webhook request: an existing event to heal, or a failure to
    write (then `service_name` is needed)."""

    model_config = ConfigDict(extra="ignore")

    mode: Literal["webhook"] = "webhook"
    event_id: uuid.UUID | None = None
    service_name: str | None = Field(default=None, min_length=1, max_length=200)
    http_status: int | None = Field(default=None, ge=100, le=599)
    error_code: str | None = Field(default=None, max_length=500)
    error_message: str | None = Field(default=None, max_length=20_000)
    payload: Any = None
    endpoint: str | None = Field(default=None, max_length=4000)
    retry_count: int = Field(default=0, ge=0, le=1_000_000)
    user_id: uuid.UUID | None = None


class _Scan(BaseModel):
    model_config = ConfigDict(extra="ignore")

    window_minutes: float = Field(default=15, gt=0, le=7 * 24 * 60)
    limit: int = Field(default=50, ge=1, le=1000)


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class Intake:
    """The route's handler; recoveries it starts run in `tasks` (the web server's task
    group), so one that outlasts the wait goes on after the answer."""

    def __init__(self, settings: Settings, db: Database, store: Store, tasks: TaskGroup) -> None:
        assert settings.internal_webhook_token is not None  # noqa: S101 - mounted only then
        self._token = settings.internal_webhook_token.get_secret_value().encode()
        self._settings = settings
        self._db = db
        self._store = store
        self._tasks = tasks

    async def handle(self, request: Request) -> Response:
        try:
            self._authorize(request)
            body = await _json_body(request)
            if request.query_params.get("mode", body.get("mode")) == "scan":
                return JSONResponse(await self._scan(body))
            return JSONResponse(await self._webhook(body))
        except _Refused as refused:
            return JSONResponse({"success": False, "error": refused.error}, refused.status)

    def _authorize(self, request: Request) -> None:
        bearer = request.headers.get("authorization", "")
        given = bearer[7:] if bearer[:7].lower() == "bearer " else ""
        given = given or request.headers.get("x-internal-token", "")
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise _Refused(
                401, "missing or wrong token (Authorization: Bearer, or X-Internal-Token)"
            )

    async def _scan(self, body: dict[str, Any]) -> dict[str, Any]:
        scan = _validated(_Scan, body)
        return await app.scan(self._settings, self._db, scan.window_minutes, scan.limit)

    async def _webhook(self, body: dict[str, Any]) -> dict[str, Any]:
        report = _validated(_Webhook, body)
        event_id = report.event_id
        if event_id is None or not await self._store.event_exists(event_id):
            if report.service_name is None:
                raise _Refused(422, "service_name: required to report a failure")
            event_id = event_id or uuid.uuid4()
            await self._store.report_failure(
                {
                    **report.model_dump(exclude={"mode", "payload"}),
                    "event_id": event_id,
                    "payload": Jsonb(report.payload if report.payload is not None else {}),
                }
            )
            log.info("intake.reported", event_id=str(event_id), service_name=report.service_name)
        healed = anyio.Event()
        self._tasks.start_soon(self._heal, event_id, healed)
        record = None
        with anyio.move_on_after(self._settings.webhook_wait_seconds):
            await healed.wait()
            # The trigger may have won the race: then a healer (of this daemon or another)
            # has the record, and only the database says when it is done with it.
            while True:
                record = await self._store.record_for_event(event_id)
                if record is None or not record.in_recovery:
                    break
                await anyio.sleep(_SETTLED_POLL)
        if record is None or record.in_recovery:
            record = await self._store.record_for_event(event_id)
        return app.webhook_response(event_id, record)

    async def _heal(self, event_id: uuid.UUID, healed: anyio.Event) -> None:
        try:
            await app.heal_event(self._settings, self._db, event_id)
        except Exception as exc:  # the answer says where the record stands; the daemon goes on
            log.error("intake.heal_failed", event_id=str(event_id), **error_fields(exc))
        finally:
            healed.set()


async def _json_body(request: Request) -> dict[str, Any]:
    too_large = _Refused(413, f"body larger than {MAX_BODY:,} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _DRAINED:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _DRAINED:
            raise too_large
        if size <= MAX_BODY:
            chunks.append(chunk)
    if size > MAX_BODY:
        raise too_large
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Refused(400, "body is not JSON") from None
    if not isinstance(body, dict):
        raise _Refused(400, "body is not a JSON object")
    return body


def _validated(model: type[_M], body: dict[str, Any]) -> _M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise _Refused(422, f"{where}: {first['msg']}") from None
