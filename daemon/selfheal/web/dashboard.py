"""The Self-Healing Activity page: KPI tiles, what needs a human, recent activity (keyset
pages), one record's detail, and the Re-enable and Retry-now buttons. Server-rendered HTML
with no script and nothing fetched from elsewhere; every value from a row is escaped."""

from __future__ import annotations

import hashlib
import hmac
import html
import math
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
import orjson
from anyio.abc import TaskGroup
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from selfheal.db import queries
from selfheal.db.outbox import Outbox
from selfheal.db.store import Store
from selfheal.logs import error_fields, get_logger
from selfheal.models import Category, Status, utcnow
from selfheal.report import duration
from selfheal.settings import Settings

__all__ = ["ActivityReads", "Dashboard"]

log = get_logger()

PAGE_SIZE = 50
REFRESH_SECONDS = 10  # the page reloads itself this often, and so may the day's figures
_UNWATCHED_AFTER = 6  # refreshes missed: then a view waits for new figures
_NEEDS_A_HUMAN_LIMIT = 20
_ACTIONS_LIMIT = 10
_FORM_MAX = 8 * 1024  # the buttons' forms are a few fields
_SESSION_COOKIE = "selfheal_session"
_SESSION_SECONDS = 12 * 3600
_REFUSED_LOGIN_PAUSE = 0.5  # a wrong token costs the guesser half a second
_CATEGORIES = tuple(c.value for c in Category)
_STATUSES = tuple(s.value for s in Status)
_NOTICES = {  # the only texts a redirect's ?notice= can show
    "enabled": "Recovery re-enabled: counters reset, its failures are due again.",
    "not_found": "Nothing to re-enable: no such service or connection.",
    "retry": "The record is due now.",
    "retry_held": "The record is due, but waits behind its open circuit for the next probe.",
    "not_retried": "Not retried: the record is settled, parked, or being recovered now.",
    "logged_out": "Logged out.",
}


class ActivityReads:
    """The dashboard's statements, through the store's connections (and its error
    translation)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def records(
        self,
        *,
        service: str | None,
        category: str | None,
        status: str | None,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        return await self._store._fetchall(
            queries.DASHBOARD_RECORDS,
            {
                "service": service,
                "category": category,
                "status": status,
                "before_at": before[0] if before else None,
                "before_id": before[1] if before else None,
                "limit": limit,
            },
            dict_row,
        )

    async def record(self, record_id: uuid.UUID) -> dict[str, Any] | None:
        rows = await self._store._fetchall(queries.DASHBOARD_RECORD, {"id": record_id}, dict_row)
        return rows[0] if rows else None

    async def pending_of_kind(self, kind: str, limit: int) -> list[dict[str, Any]]:
        """Pending records that are parked (kind "parked") or of one category."""
        return await self._store._fetchall(
            queries.DASHBOARD_PENDING_OF_KIND, {"kind": kind, "limit": limit}, dict_row
        )

    async def dead_alerts(self, limit: int) -> list[dict[str, Any]]:
        return await self._store._fetchall(
            queries.DASHBOARD_DEAD_ALERTS, {"limit": limit}, dict_row
        )

    async def hourly(self, until: datetime) -> list[dict[str, Any]]:
        return await self._store._fetchall(queries.DASHBOARD_HOURLY, {"until": until}, dict_row)

    async def retry_now(self, record_id: uuid.UUID, client: str | None) -> dict[str, Any] | None:
        rows = await self._store._fetchall(
            queries.DASHBOARD_RETRY_NOW, {"id": record_id, "client": client}, dict_row
        )
        return rows[0] if rows else None

    async def actions(self, limit: int) -> list[dict[str, Any]]:
        return await self._store._fetchall(queries.DASHBOARD_ACTIONS, {"limit": limit}, dict_row)


@dataclass(frozen=True, slots=True)
class _Day:
    figures: dict[str, Any]  # Store.last_day()
    hourly: list[dict[str, Any]]
    read_at: datetime


class _Reading:
    """One read of the day's figures, which every view that waits for it shares."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.day: _Day | None = None
        self.error: Exception | None = None


class _DayFigures:
    """The last 24 hours' figures (the recovery rate, the times to recover, the chart),
    kept for `max_age` seconds: they read every record of the day, over a second once a day
    holds a million, and a page must not wait for that at each refresh. A view that finds
    them older shows them and starts one read beside it, so a watched page is at most one
    read behind; only the first view, or one after nobody looked for a minute, waits for a
    read, and the views that wait share it (its figures or its error). After a failed read
    the next is tried `max_age` later. What stands now (active failures, what is disabled,
    the lists) is read by every view."""

    def __init__(self, store: Store, reads: ActivityReads, tasks: TaskGroup, max_age: float):
        self._store = store
        self._reads = reads
        self._tasks = tasks
        self._max_age = max_age
        self._day: _Day | None = None
        self._day_at = -math.inf  # anyio.current_time() of the read that gave `_day`
        self._tried_at = -math.inf
        self._reading: _Reading | None = None

    async def get(self) -> _Day:
        now = anyio.current_time()
        if self._day is None or now - self._day_at >= self._max_age * _UNWATCHED_AFTER:
            # Nobody has looked for a while: figures that old would mislead, so wait.
            return await self._read()
        if (
            now - self._day_at >= self._max_age
            and now - self._tried_at >= self._max_age
            and self._reading is None
        ):
            self._tasks.start_soon(self._read_beside)
        return self._day

    async def _read_beside(self) -> None:
        try:
            await self._read()
        except Exception as exc:  # the page goes on with what it has
            log.warning("dashboard.read_failed", **error_fields(exc))

    async def _read(self) -> _Day:
        reading = self._reading
        if reading is not None:  # join the read in progress
            await reading.done.wait()
            if reading.error is not None:
                raise reading.error
            return reading.day or await self._read()  # (None: its view went away)
        reading = self._reading = _Reading()
        self._tried_at = anyio.current_time()
        try:
            read_at = utcnow()
            figures = await self._store.last_day()
            day = _Day(figures, await self._reads.hourly(read_at), read_at)
            self._day, self._day_at, reading.day = day, self._tried_at, day
            return day
        except Exception as exc:
            reading.error = exc
            raise
        finally:
            self._reading = None
            reading.done.set()


@dataclass(frozen=True, slots=True)
class _Session:
    nonce: str
    csrf: str


class _BadRequest(Exception):
    pass


class Dashboard:
    """The page's routes. `token` (SELFHEAL_HTTP_TOKEN) unlocks the buttons, by a login
    form that sets an HttpOnly, SameSite=Strict session cookie, or by `Authorization:
    Bearer` for scripts; without it the buttons are off. `private`: reading needs the
    login too (the server is bound to a non-loopback address). `on_due` is called when
    records were made due (to wake the healer). Sessions are signed with a per-process
    secret: a restart logs everyone out."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        tasks: TaskGroup,
        token: str | None,
        private: bool = False,
        on_due: Callable[[], None] | None = None,
    ) -> None:
        if private and not token:
            raise ValueError("a private dashboard needs a token")
        self._store = store
        self._settings = settings
        self._reads = ActivityReads(store)
        self._day = _DayFigures(store, self._reads, tasks, REFRESH_SECONDS)
        self._token = token.encode() if token else None
        self._private = private
        self._on_due = on_due or (lambda: None)
        self._secret = secrets.token_bytes(32)
        self._css = (resources.files("selfheal.web") / "static" / "dashboard.css").read_bytes()

    def routes(self) -> list[BaseRoute]:
        guarded = self._guarded
        return [
            Route("/", guarded(self.activity), methods=["GET", "HEAD"]),
            Route("/records/{record_id}", guarded(self.detail), methods=["GET", "HEAD"]),
            Route("/records/{record_id}/retry", guarded(self.retry), methods=["POST"]),
            Route("/enable", guarded(self.enable), methods=["POST"]),
            Route("/login", guarded(self.login_form), methods=["GET"]),
            Route("/login", guarded(self.login), methods=["POST"]),
            Route("/logout", guarded(self.logout), methods=["POST"]),
            Route("/static/dashboard.css", self.stylesheet, methods=["GET", "HEAD"]),
        ]

    def _guarded(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A malformed request answers 400 with what was wrong."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except _BadRequest as exc:
                body = f"<p class='error'>{_e(exc)}</p>"
                return self._page("Bad request", body, self._session(request), 400)

        return guarded

    # --- pages ---------------------------------------------------------------------------

    async def activity(self, request: Request) -> Response:
        session = self._session(request)
        if self._private and session is None:
            return _see_other("/login?" + urlencode({"next": _local_path(request)}))
        filters, before = _activity_query(request)
        day = await self._day.get()
        status = {
            **await self._store.standing(),
            **day.figures,
            "alert_groups": await Outbox(self._store).status(),
        }
        rows = await self._reads.records(**filters, before=before, limit=PAGE_SIZE + 1)
        parked = await self._reads.pending_of_kind("parked", _NEEDS_A_HUMAN_LIMIT)
        data = await self._reads.pending_of_kind(Category.DATA.value, _NEEDS_A_HUMAN_LIMIT)
        dead = await self._reads.dead_alerts(_NEEDS_A_HUMAN_LIMIT)
        actions = await self._reads.actions(_ACTIONS_LIMIT)
        body = "".join(
            [
                _notice(request),
                _tiles(status, day.read_at),
                _chart(day.hourly, day.read_at),
                self._needs_a_human(status, parked, data, dead, session),
                _recent(rows[:PAGE_SIZE], filters, more=len(rows) > PAGE_SIZE),
                _actions(actions),
            ]
        )
        return self._page("Self-Healing Activity", body, session, refresh=True)

    async def detail(self, request: Request) -> Response:
        session = self._session(request)
        if self._private and session is None:
            return _see_other("/login?" + urlencode({"next": _local_path(request)}))
        record_id = _uuid(request.path_params["record_id"])
        record = None if record_id is None else await self._reads.record(record_id)
        if record is None:
            return self._page("Not found", "<p class='error'>No such record.</p>", session, 404)
        return self._page(
            f"Record {record['id']}",
            _notice(request) + self._record(record, session),
            session,
            refresh=True,
        )

    async def stylesheet(self, _: Request) -> Response:
        return Response(self._css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    # --- login ---------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        session = self._session(request)
        if self._token is None:
            body = (
                "<p>The dashboard's buttons are off: set SELFHEAL_HTTP_TOKEN and restart "
                "the daemon to use them.</p>"
            )
            return self._page("Log in", body, session, 404)
        return self._page("Log in", _login_form(request.query_params.get("next", "/")), session)

    async def login(self, request: Request) -> Response:
        if self._token is None:
            return self._page("Log in", "<p>SELFHEAL_HTTP_TOKEN is not set.</p>", None, 404)
        if _cross_site(request):
            return self._page("Refused", "<p class='error'>Cross-site request.</p>", None, 403)
        form = await _form(request)
        given = form.get("token", "").strip().encode()
        next_path = _safe_next(form.get("next", "/"))
        if not hmac.compare_digest(given, self._token):
            log.warning("dashboard.login_refused", client=_client(request))
            await anyio.sleep(_REFUSED_LOGIN_PAUSE)
            body = "<p class='error'>Wrong token.</p>" + _login_form(next_path)
            return self._page("Log in", body, None, 401)
        log.info("dashboard.logged_in", client=_client(request))
        response = _see_other(next_path)
        response.set_cookie(
            _SESSION_COOKIE,
            self._new_session(),
            max_age=_SESSION_SECONDS,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        refused = await self._refused(request)
        if refused is not None:
            return refused
        response = _see_other("/?notice=logged_out")
        response.delete_cookie(_SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # --- the buttons ---------------------------------------------------------------------

    async def enable(self, request: Request) -> Response:
        refused = await self._refused(request)
        if refused is not None:
            return refused
        form = await _form(request)
        service = form.get("service", "").strip()
        user_text = form.get("user_id", "").strip()
        user_id = _uuid(user_text) if user_text else None
        if not service or len(service) > 200 or (user_text and user_id is None):
            return self._page("Bad request", "<p class='error'>Bad form.</p>", None, 400)
        enabled = await self._store.enable(
            service, user_id, via="dashboard", client=_client(request)
        )
        log.info(
            "dashboard.enabled",
            service_name=service,
            user_id=None if user_id is None else str(user_id),
            found=bool(enabled),
            client=_client(request),
        )
        if enabled:
            self._on_due()
        return _see_other("/?notice=" + ("enabled" if enabled else "not_found"))

    async def retry(self, request: Request) -> Response:
        refused = await self._refused(request)
        if refused is not None:
            return refused
        await _form(request)  # read (and bounded) like any other
        record_id = _uuid(request.path_params["record_id"])
        if record_id is None:
            return self._page("Not found", "<p class='error'>No such record.</p>", None, 404)
        retried = await self._reads.retry_now(record_id, _client(request))
        log.info(
            "dashboard.retry",
            recovery_id=str(record_id),
            service_name=retried and retried["service_name"],
            category=retried and retried["category"],
            retried=retried is not None,
            held_by_circuit=bool(retried and retried["held_by_circuit"]),
            client=_client(request),
        )
        if retried is None:
            notice = "not_retried"
        else:
            self._on_due()
            notice = "retry_held" if retried["held_by_circuit"] else "retry"
        return _see_other(f"/records/{record_id}?notice={notice}")

    async def _refused(self, request: Request) -> Response | None:
        """Why a POST may not act (None: it may). A bearer token needs no CSRF check (a
        browser never adds one on its own); a session cookie needs the form's CSRF field,
        and no cross-site request is accepted at all."""
        if self._token is None:
            return self._page(
                "Refused", "<p class='error'>The buttons need SELFHEAL_HTTP_TOKEN.</p>", None, 403
            )
        if _cross_site(request):
            return self._page("Refused", "<p class='error'>Cross-site request.</p>", None, 403)
        bearer = request.headers.get("authorization", "")
        if bearer[:7].lower() == "bearer ":
            if hmac.compare_digest(bearer[7:].strip().encode(), self._token):
                return None
            return self._page("Refused", "<p class='error'>Wrong token.</p>", None, 401)
        session = self._session(request)
        if session is None:
            return self._page(
                "Log in", "<p class='error'>Log in first.</p>" + _login_form("/"), None, 401
            )
        form = await _form(request)
        if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            log.warning("dashboard.csrf_refused", client=_client(request))
            return self._page(
                "Refused", "<p class='error'>Stale form: reload the page.</p>", session, 403
            )
        return None

    # --- sessions ------------------------------------------------------------------------

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def _new_session(self) -> str:
        nonce = f"{secrets.token_urlsafe(16)}.{int(time.time()) + _SESSION_SECONDS}"
        return f"{nonce}.{self._sign('session', nonce)}"

    def _session(self, request: Request) -> _Session | None:
        if self._token is None:
            return None
        cookie = request.cookies.get(_SESSION_COOKIE, "")
        nonce, _, signature = cookie.rpartition(".")
        if not nonce or not hmac.compare_digest(signature, self._sign("session", nonce)):
            return None
        expires = nonce.rpartition(".")[2]
        if not expires.isdigit() or int(expires) < time.time():
            return None
        return _Session(nonce, self._sign("csrf", nonce))

    # --- rendering with the session ------------------------------------------------------

    def _page(
        self,
        title: str,
        body: str,
        session: _Session | None,
        status_code: int = 200,
        *,
        refresh: bool = False,
    ) -> HTMLResponse:
        if session is not None:
            account = (
                "<form method='post' action='/logout' class='inline'>"
                f"{_csrf_field(session)}<button>Log out</button></form>"
            )
        elif self._token is not None:
            account = "<a href='/login'>Log in</a> to use the buttons"
        else:
            account = "<span class='muted'>buttons off (no SELFHEAL_HTTP_TOKEN)</span>"
        page = _PAGE.format(
            title=_e(title),
            refresh=f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>" if refresh else "",
            account=account,
            body=body,
            now=_e(_when(utcnow())),
        )
        return HTMLResponse(
            page,
            status_code,
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": (
                    "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
                ),
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
            },
        )

    def _needs_a_human(
        self,
        status: Mapping[str, Any],
        parked: list[dict[str, Any]],
        data: list[dict[str, Any]],
        dead: list[dict[str, Any]],
        session: _Session | None,
    ) -> str:
        parts = ["<section><h2>Needs a human</h2>"]
        disabled = status["disabled_integrations"]
        channels = status["alert_groups"]["channels"]
        broken = [c for c in channels if c["broken_at"]]
        if not (disabled or parked or data or dead or broken):
            parts.append("<p class='ok'>Nothing: every failure is being healed.</p></section>")
            return "".join(parts)
        if disabled:
            rows = [
                (
                    _e(t["service_name"]),
                    _e(t["user_id"] or "whole service"),
                    _e(t["reason"] or "-"),
                    _e(_when(t["disabled_at"])),
                    self._enable_button(t["service_name"], t["user_id"], session),
                )
                for t in disabled
            ]
            parts.append(
                "<h3>Disabled integrations</h3>"
                + _table(("service", "user connection", "reason", "since", ""), rows, "disabled")
            )
        for title, records in (("Parked failures", parked), ("Data failures pending", data)):
            if records:
                total = records[0]["total"]
                parts.append(f"<h3>{_e(title)} ({total:,})</h3>")
                parts.append(
                    _table(
                        ("service", "category", "reason", "since"),
                        [
                            (
                                _record_link(r["id"], r["service_name"]),
                                _e(r["category"]),
                                _e(_clip(r["failure_reason"])),
                                _e(_when(r["created_at"])),
                            )
                            for r in records
                        ],
                    )
                )
        if dead:
            per_channel = ", ".join(
                f"{_e(c['channel'])}: {int(c['dead']):,}" for c in channels if c["dead"]
            )
            parts.append(f"<h3>Dead alerts ({per_channel or '-'})</h3>")
            parts.append(
                _table(
                    ("channel", "kind", "service", "category", "attempts", "queued"),
                    [
                        (
                            _e(a["channel"]),
                            _e(a["kind"]),
                            _e(a["service_name"] or "-"),
                            _e(a["category"] or "-"),
                            _e(a["attempts"]),
                            _e(_when(a["created_at"])),
                        )
                        for a in dead
                    ],
                )
            )
        if broken:
            parts.append("<h3>Broken alert channels</h3>")
            parts.append(
                _table(
                    ("channel", "since", "reason", "queued"),
                    [
                        (
                            _e(c["channel"]),
                            _e(_when(c["broken_at"])),
                            _e(c["broken_reason"] or "-"),
                            _e(c["queued"]),
                        )
                        for c in broken
                    ],
                )
            )
        parts.append("</section>")
        return "".join(parts)

    def _enable_button(
        self, service_name: str, user_id: uuid.UUID | None, session: _Session | None
    ) -> str:
        if session is None:
            return ""
        user = ""
        if user_id is not None:
            user = f"<input type='hidden' name='user_id' value='{_e(user_id)}'>"
        return (
            "<form method='post' action='/enable' class='inline'>"
            f"{_csrf_field(session)}<input type='hidden' name='service' value='{_e(service_name)}'>"
            f"{user}<button class='act'>Re-enable</button></form>"
        )

    def _record(self, r: Mapping[str, Any], session: _Session | None) -> str:
        signals = _pretty_json(r["signals"])
        facts = [
            ("service", _e(r["service_name"])),
            ("user", _e(r["user_id"] or "-")),
            ("event", _e(r["event_id"])),
            ("category", _e(r["category"])),
            ("status", _badge(r["status"])),
            ("action", _e(r["action_taken"] or "-")),
            ("attempts", f"{_e(r['attempts'])} (deferred {_e(r['deferrals'])} times)"),
            ("recorded", _e(_when(r["created_at"]))),
            ("updated", _e(_when(r["updated_at"]))),
            ("resolved", _e(_when(r["resolved_at"]))),
            ("time to recover", _e(duration(r["seconds_to_recover"]))),
            ("next retry", _e(_when(r["next_retry_at"]))),
        ]
        if r["held_by_circuit"]:
            facts.append(("circuit", "waiting behind the service's open circuit"))
        if r["in_recovery"]:
            facts.append(("now", "being recovered by a healer"))
        if not r["service_enabled"]:
            reason = _e(r["service_disabled_reason"] or "-")
            button = self._enable_button(r["service_name"], None, session)
            facts.append(("service state", f"disabled: {reason} {button}"))
        actions = ""
        if (
            r["status"] == Status.PENDING
            and r["action_taken"] != "parked"
            and not r["in_recovery"]
            and session is not None
        ):
            actions = (
                f"<form method='post' action='/records/{_e(r['id'])}/retry' class='inline'>"
                f"{_csrf_field(session)}<button class='act'>Retry now</button></form>"
            )
        rows = "".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in facts)
        return (
            "<p><a href='/'>&larr; Activity</a></p>"
            f"<section><table class='facts'>{rows}</table>{actions}</section>"
            "<section><h2>Failure (sanitized)</h2>"
            f"<pre>{_e(r['failure_reason'] or '-')}</pre></section>"
            f"<section><h2>Analyzer signals</h2><pre>{_e(signals)}</pre></section>"
            "<section><h2>LLM reading</h2>"
            f"<pre>{_e(r['llm_reasoning'] or 'none')}</pre></section>"
        )


# --- the parts of a page (pure) --------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>{title} - pg-selfheal</title>
<link rel="stylesheet" href="/static/dashboard.css">
</head><body>
<header><a class="brand" href="/">pg-selfheal</a> <span class="account">{account}</span></header>
<main><h1>{title}</h1>
{body}
</main>
<footer>as of {now}</footer>
</body></html>
"""


def _e(value: object) -> str:
    """A row's value, safe in HTML text and in quoted attributes."""
    return html.escape(str(value), quote=True)


def _csrf_field(session: _Session) -> str:
    return f"<input type='hidden' name='csrf' value='{_e(session.csrf)}'>"


def _login_form(next_path: str) -> str:
    return (
        "<form method='post' action='/login' class='login'>"
        f"<input type='hidden' name='next' value='{_e(_safe_next(next_path))}'>"
        "<label>SELFHEAL_HTTP_TOKEN <input type='password' name='token' "
        "autocomplete='current-password' required autofocus></label> "
        "<button>Log in</button></form>"
    )


def _notice(request: Request) -> str:
    text = _NOTICES.get(request.query_params.get("notice", ""))
    return "" if text is None else f"<p class='notice'>{_e(text)}</p>"


def _tiles(status: Mapping[str, Any], day_read_at: datetime) -> str:
    rate = status["recovery_rate_24h"]
    oldest = status["oldest_pending"]
    day = f"24 h to {day_read_at:%H:%M:%S} UTC"
    tiles = [
        ("active failures", f"{status['pending']:,}", "pending", status["pending"] > 0),
        ("disabled integrations", f"{status['disabled']:,}", "", status["disabled"] > 0),
        (
            "recovery rate, 24 h",
            "-" if rate is None else f"{rate:.1%}",
            f"{status['resolved_24h']:,} of {status['failures_24h']:,}",
            False,
        ),
        ("mean time to recover", duration(status["mttr_seconds"]), day, False),
        ("p90 time to recover", duration(status["ttr_p90_seconds"]), day, False),
        (
            "oldest unhealed failure",
            "-" if oldest is None else _age(oldest),
            "" if oldest is None else _when(oldest),
            False,
        ),
        ("open circuits", f"{len(status['circuits']):,}", "", bool(status["circuits"])),
        (
            "alert outbox",
            f"{status['alert_groups']['outbox']:,}",
            f"{status['alert_groups']['open_groups']:,} groups open",
            False,
        ),
    ]
    cells = "".join(
        f"<div class='tile{' warn' if warn else ''}' data-kpi='{_e(label)}'>"
        f"<div class='value'>{_e(value)}</div><div class='label'>{_e(label)}</div>"
        f"<div class='note'>{_e(note)}</div></div>"
        for label, value, note, warn in tiles
    )
    return f"<section class='tiles'>{cells}</section>"


_CATEGORY_COLOURS = {
    "auth": "#7b61ff",
    "rate_limit": "#e8a33d",
    "network": "#3d8be8",
    "data": "#d9534f",
    "unknown": "#8a8f98",
}


def _chart(hourly: Iterable[Mapping[str, Any]], read_at: datetime) -> str:
    """Failures per hour over the 24 h to `read_at` as stacked bars by category,
    recoveries as a line, hours along the bottom and the scale on the left: inline SVG."""
    last = read_at.replace(minute=0, second=0, microsecond=0)
    hours = [last.timestamp() - 3600 * (23 - i) for i in range(24)]
    index = {h: i for i, h in enumerate(hours)}
    failures: dict[int, dict[str, int]] = {}
    resolved = [0] * 24
    for row in hourly:
        i = index.get(row["hour"].timestamp())
        if i is None:
            continue
        failures.setdefault(i, {})[row["category"]] = int(row["failures"])
        resolved[i] += int(row["resolved"])
    top = max([sum(f.values()) for f in failures.values()] + [max(resolved), 1])
    left, bar, plot, axis = 48, 28, 150, 20  # the scale's margin, a bar's slot, the heights
    width, height = left + 24 * bar, plot + axis

    def y(count: float) -> float:
        return plot - count / top * (plot - 10)

    parts = [
        f"<line x1='{left}' y1='{plot}' x2='{width}' y2='{plot}' class='axis'/>",
        f"<text x='{left - 6}' y='{y(top) + 4:.1f}' class='scale'>{top:,}</text>",
        f"<text x='{left - 6}' y='{plot}' class='scale'>0</text>",
    ]
    for i, hour in enumerate(hours):
        x = left + i * bar
        if i % 3 == 2:  # every third hour, ending with this one
            label = datetime.fromtimestamp(hour, UTC).strftime("%H:00")
            parts.append(
                f"<text x='{x + bar / 2:.0f}' y='{height - 4}' class='hour'>{label}</text>"
            )
        top_of_bar = float(plot)
        for category in _CATEGORIES:
            count = failures.get(i, {}).get(category, 0)
            if not count:
                continue
            h = count / top * (plot - 10)
            top_of_bar -= h
            colour = _CATEGORY_COLOURS[category]
            parts.append(
                f"<rect x='{x + 2}' y='{top_of_bar:.1f}' width='{bar - 4}' height='{h:.1f}' "
                f"fill='{colour}'><title>{_e(category)}: {count:,}</title></rect>"
            )
    points = " ".join(f"{left + i * bar + bar / 2:.0f},{y(n):.1f}" for i, n in enumerate(resolved))
    parts.append(f"<polyline points='{points}' fill='none' stroke='#2e7d32' stroke-width='2'/>")
    legend = "".join(
        f"<span><i class='c-{_e(category)}'></i>{_e(category)}</span>"
        for category in _CATEGORY_COLOURS
    )
    return (
        f"<section><h2>Failures and recoveries per hour, 24 h to {read_at:%H:%M} UTC</h2>"
        f"<svg class='chart' viewBox='0 0 {width} {height}' role='img' "
        "aria-label='failures per hour by category, and recoveries'>"
        f"{''.join(parts)}</svg>"
        f"<p class='legend'>{legend}<span><i class='line'></i>recovered</span></p></section>"
    )


def _recent(rows: list[dict[str, Any]], filters: Mapping[str, str | None], *, more: bool) -> str:
    def select(name: str, options: Iterable[str]) -> str:
        chosen = filters[name]
        opts = "".join(
            f"<option value='{_e(o)}'{' selected' if o == chosen else ''}>{_e(o)}</option>"
            for o in options
        )
        return (
            f"<label>{name} <select name='{name}'><option value=''>any</option>{opts}"
            "</select></label>"
        )

    form = (
        "<form method='get' action='/' class='filters'>"
        f"<label>service <input name='service' value='{_e(filters['service'] or '')}'></label> "
        f"{select('category', _CATEGORIES)} {select('status', _STATUSES)} "
        "<button>Filter</button> <a href='/'>clear</a></form>"
    )
    table = _table(
        ("recorded", "service", "category", "action", "status", "attempts", "time to recover"),
        [
            (
                f"<a href='/records/{_e(r['id'])}'>{_e(_when(r['created_at']))}</a>",
                _e(r["service_name"]),
                _e(r["category"]),
                _e(r["action_taken"] or "-"),
                _badge(r["status"]),
                _e(r["attempts"]),
                _e(duration(r["seconds_to_recover"])),
            )
            for r in rows
        ],
        "recent",
    )
    pager = ""
    if more and rows:
        last = rows[-1]
        query = {k: v for k, v in filters.items() if v}
        query["before"] = f"{last['created_at'].isoformat()},{last['id']}"
        older = _e("/?" + urlencode(query))
        pager = f"<p class='pager'><a rel='next' href='{older}'>Older &rarr;</a></p>"
    return f"<section><h2>Recent activity</h2>{form}{table}{pager}</section>"


def _actions(actions: list[dict[str, Any]]) -> str:
    """The operators' latest actions: what, by which door, on what, and what came of it."""
    if not actions:
        return ""
    rows = [
        (
            _e(_when(a["at"])),
            _e(a["action"]),
            _e(a["via"]),
            _e(a["service_name"] or "-")
            + ("" if a["user_id"] is None else f" <span class='muted'>{_e(a['user_id'])}</span>"),
            "-" if a["record_id"] is None else _record_link(a["record_id"], "record"),
            _e(a["result"]),
        )
        for a in actions
    ]
    table = _table(("when", "action", "via", "service", "record", "result"), rows)
    return f"<section><h2>Operator actions</h2>{table}</section>"


def _table(headers: Iterable[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    """Headers are ours; cells are HTML already escaped by the caller."""
    if not rows:
        return "<p class='muted'>None.</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{_e(css)}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _badge(status: str) -> str:
    return f"<span class='badge {_e(status)}'>{_e(status)}</span>"


def _record_link(record_id: uuid.UUID, text: str) -> str:
    return f"<a href='/records/{_e(record_id)}'>{_e(text)}</a>"


def _pretty_json(text: str | None) -> str:
    if not text:
        return "{}"
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text


def _clip(text: str | None, limit: int = 160) -> str:
    text = text or "-"
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(moment: datetime) -> str:
    return duration(max(0.0, (utcnow() - moment).total_seconds())) + " ago"


# --- requests ----------------------------------------------------------------------------------


def _activity_query(
    request: Request,
) -> tuple[dict[str, str | None], tuple[datetime, uuid.UUID] | None]:
    params = request.query_params
    service = params.get("service", "").strip() or None
    category = params.get("category", "").strip() or None
    status = params.get("status", "").strip() or None
    if service is not None and len(service) > 200:
        raise _BadRequest("service: at most 200 characters")
    if category is not None and category not in _CATEGORIES:
        raise _BadRequest(f"category: one of {', '.join(_CATEGORIES)}")
    if status is not None and status not in _STATUSES:
        raise _BadRequest(f"status: one of {', '.join(_STATUSES)}")
    before = None
    if params.get("before"):
        before = _cursor(params["before"])
    return {"service": service, "category": category, "status": status}, before


def _cursor(text: str) -> tuple[datetime, uuid.UUID]:
    """`<created_at>,<id>`, as the Older link writes it (a `+` that became a space is
    mended)."""
    moment, _, record_id = text.replace(" ", "+").rpartition(",")
    try:
        at = datetime.fromisoformat(moment)
        identifier = uuid.UUID(record_id)
    except ValueError:
        raise _BadRequest("before: expected <created_at>,<id> as the Older link has it") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at, identifier


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form (no multipart: the buttons send a few short fields), read once."""
    cached = request.scope.get("selfheal.form")
    if cached is not None:
        return dict(cached)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _FORM_MAX:
            raise _BadRequest(f"form larger than {_FORM_MAX:,} bytes")
        chunks.append(chunk)
    try:
        fields = dict(parse_qsl(b"".join(chunks).decode(), max_num_fields=20))
    except (UnicodeDecodeError, ValueError):
        fields = {}
    request.scope["selfheal.form"] = fields
    return dict(fields)


def _cross_site(request: Request) -> bool:
    """A browser says where a request comes from (Sec-Fetch-Site, or at least Origin)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    host = request.headers.get("host", "")
    return origin.partition("://")[2] != host


def _safe_next(path: str) -> str:
    """Only a path of this site: never `//elsewhere` or a scheme."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def _local_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _client(request: Request) -> str | None:
    return None if request.client is None else request.client.host
