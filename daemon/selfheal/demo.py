"""`selfheal demo`: the whole loop in half a minute. Integrations fail against loopback
stand-ins (their APIs, an OAuth token endpoint, Slack and Teams webhooks), the daemon heals
them live in this process, and the closing table is what `selfheal status` shows.

Everything lives in a scratch database, created on the server the command was given (the
embedded Postgres without DATABASE_URL) and dropped at the end: no row of anyone's is read
or written."""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import os
import secrets
import signal
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO, cast
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import anyio
import httpx
import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb
from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from selfheal import app
from selfheal.daemon import run_daemon
from selfheal.db.migrate import apply_migrations
from selfheal.db.store import Database
from selfheal.logs import configure_logging
from selfheal.report import print_status  # the table `selfheal status` prints
from selfheal.settings import Settings

__all__ = ["run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Far longer than the healing takes (about 5 s on a laptop), short enough
# that a demo that cannot finish says so instead of hanging.
HEAL_DEADLINE_SECONDS = 45.0
LOOK_EVERY_SECONDS = 0.1  # how often the demo reads the tables to see what was decided

# A group's first failure waits this long before admins hear of it: what heals sooner
# (here: all but the data failure and the outage) sends nothing.
ALERT_GROUP_WAIT_SECONDS = 4.0

CLIENT_ID = "demo-client"
CLIENT_SECRET = "demo-client-secret"  # noqa: S105 - the stand-in token endpoint's, not a secret
EXPIRED_TOKEN = "crm-token-expired-yesterday"  # noqa: S105 - the same
FIRST_REFRESH_TOKEN = "crm-refresh-1"  # noqa: S105 - the same


@dataclass(frozen=True, slots=True)
class Failure:
    """One call an integration makes, fails, and writes down; and what should become of it."""

    service: str
    kind: str  # what the analyzer should call it
    path: str
    payload: dict[str, Any]
    settles_as: str  # the record's status once the daemon is done with it
    why: str  # what the stand-in does, for the reader


FAILURES: tuple[Failure, ...] = (
    Failure(
        "crm", "auth", "/crm/v1/contacts", {"email": "ada@example.com"}, "resolved",
        "the user's access token expired; its refresh token still works",
    ),
    Failure(
        "mailer", "rate_limit", "/mailer/v3/send", {"to": "ada@example.com"}, "resolved",
        "too many requests; the next one is welcome after a second",
    ),
    Failure(
        "billing", "network", "/billing/v1/invoices", {"amount": 4200}, "resolved",
        "overloaded; clears on the third try",
    ),
    Failure(
        "warehouse", "data", "/warehouse/v2/orders", {"quantity": 3}, "pending",
        "the payload lacks a field: no retry can fix that",
    ),
    Failure(
        "analytics", "unknown", "/analytics/v1/track", {"event": "signup"}, "resolved",
        "an answer nobody documented; fine the next time",
    ),
    *(
        Failure(
            "payments", "network", "/payments/v1/charges", {"amount": 100 * n}, "resolved",
            "down: 503 to everything until its circuit has been probed a while",
        )
        for n in range(1, 5)
    ),
)  # fmt: skip
SERVICES = tuple(dict.fromkeys(f.service for f in FAILURES))

# The demo plays the integrations: it registers them and writes their failures, as an
# application would. (The daemon's own statements live in db/queries.py.)
REGISTER_SERVICE = """
INSERT INTO integrations_master (service_name, oauth_config, allowed_hosts)
VALUES (%(service)s, %(oauth)s, %(hosts)s)
RETURNING id
"""
CONNECT_USER = """
INSERT INTO user_integrations
    (user_id, integration_id, access_token, refresh_token, token_expires_at)
VALUES (%(user_id)s, %(integration_id)s, %(access_token)s, %(refresh_token)s,
        now() - interval '1 day')
"""
WRITE_FAILURE = """
INSERT INTO integration_events (service_name, event_type, payload, user_id, status,
    error_code, error_message, http_status, endpoint, http_method, response_headers)
VALUES (%(service)s, 'api.call', %(payload)s, %(user_id)s, 'error', %(error_code)s,
    %(error_message)s, %(http_status)s, %(endpoint)s, 'POST', %(headers)s)
RETURNING id
"""
# What the daemon decided so far, per failure.
RECORDS = """
SELECT e.id, s.status, s.attempts, s.action_taken
FROM integration_events e LEFT JOIN system_integrity_events s ON s.event_id = e.id
WHERE e.id = ANY(%(ids)s)
"""
# Admins have heard all there is to hear: nothing queued, and each open alert group has
# been announced and still has an unhealed failure (a group that healed is about to close,
# quietly or with its Recovered message).
ALERTS_QUIET = """
SELECT NOT EXISTS (SELECT 1 FROM selfheal_alerts WHERE status = 'queued')
   AND NOT EXISTS (
       SELECT 1 FROM selfheal_alert_groups g
       WHERE g.closed_at IS NULL AND g.failures > g.episode_base
         AND (g.alerted_at IS NULL OR NOT EXISTS (
                SELECT 1 FROM system_integrity_events s
                WHERE s.alert_group = g.fingerprint AND s.status <> 'resolved')))
"""
CIRCUIT = """
SELECT circuit_opened_at IS NOT NULL AS open, circuit_failed_probes AS failed_probes
FROM integrations_master WHERE service_name = %(service)s
"""


class DemoRefused(Exception):
    """The demo cannot run on the database it was given; the message says what to do."""


async def run(given: Settings, server: Database, out: TextIO) -> int:
    """The demo on a scratch database of `server`; 0 when every failure settled as it should."""
    console = Console(out)
    try:
        return await _run(given, server, console)
    except DemoRefused as exc:
        console.say(f"selfheal demo: {exc}")
        return EXIT_USAGE


async def _run(given: Settings, server: Database, console: Console) -> int:
    if server.policy.pooled:
        raise DemoRefused(
            "DATABASE_URL goes through a pooler; the demo creates a scratch database and "
            "listens on it, so point DATABASE_URL at Postgres itself (or unset it to use the "
            "embedded Postgres)"
        )
    console.say("pg-selfheal demo: integrations fail, the daemon heals them live.\n")
    where = "the embedded Postgres" if given.database_url is None else "DATABASE_URL's server"
    async with _scratch_database(server, where, console) as db:
        with StandIns(console) as stand_ins, _unproxied_loopback():
            console.say(
                f"Stand-ins on {stand_ins.url}: {len(SERVICES)} services' APIs, crm's OAuth token "
                "endpoint,\nand Slack and Teams webhooks that print what admins would read. "
                f"Quick settings: admins\nhear of failures not healed within "
                f"{ALERT_GROUP_WAIT_SECONDS:g} s; a circuit opens after 3 replays find a "
                "service down."
            )
            settings = _demo_settings(stand_ins.url)
            with _daemon_log(settings, given, console) as log_view:
                await apply_migrations(db.conninfo, db.policy)
                async with await psycopg.AsyncConnection.connect(
                    db.conninfo, **db.policy.connect_kwargs
                ) as conn:
                    healed = await _heal_live(settings, db, conn, stand_ins, log_view, console)
            async with db.store(max_size=1) as store:
                status = await app.status_report(store, settings)
    console.say("\n`selfheal status` at the end:")
    console.say_with(lambda out: print_status(status, out))
    if healed:
        console.say(f"\nDone in {console.elapsed():.1f} s.")
    return EXIT_OK if healed else EXIT_FAILED


class _DemoSettings(Settings):
    """Settings from the demo alone: the user's environment and .env (their webhooks, their
    thresholds) must not change what the demo shows."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _demo_settings(base_url: str) -> Settings:
    """Quick and self-contained: the stand-ins' webhooks, no LLM, short circuits, alerts
    sent as soon as they are due."""
    return _DemoSettings(
        slack_webhook_url=SecretStr(f"{base_url}/slack/services/T0DEMO/B0DEMO/demo"),
        teams_webhook_url=SecretStr(f"{base_url}/teams/workflows/demo/triggers/manual/run"),
        allow_loopback=True,  # the stand-ins are on 127.0.0.1
        use_llm=False,
        database_pooler="none",
        poll_interval_seconds=0.5,
        shutdown_grace_seconds=3.0,
        http_timeout_seconds=5.0,
        circuit_open_after=3,
        circuit_probe_base_seconds=0.25,
        circuit_probe_max_seconds=1.0,
        alert_group_wait_seconds=ALERT_GROUP_WAIT_SECONDS,
        alert_send_interval_seconds=0.0,
        log_level="info",
        log_format="json",  # read back by the demo's log view
    )


# --- the live part ------------------------------------------------------------------------


async def _heal_live(
    settings: Settings,
    db: Database,
    conn: psycopg.AsyncConnection[Any],
    stand_ins: StandIns,
    log_view: LogView,
    console: Console,
) -> bool:
    """Start the daemon, make the integrations fail, watch it heal; stop it as systemd
    would (SIGTERM: it finishes what is in flight and exits). True when all settled."""
    users = await _register(conn, stand_ins)
    events: dict[uuid.UUID, Failure] = {}
    settled = stopping = False

    async def daemon() -> None:
        await run_daemon(settings, db, await app.listen_conninfo(settings, db))
        if not stopping:  # Ctrl-C: the daemon's own handler stopped it
            console.say("\nselfheal demo: interrupted before every failure settled.")
        tg.cancel_scope.cancel()  # nothing left to watch

    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon)
        with anyio.move_on_after(HEAL_DEADLINE_SECONDS):
            await log_view.started.wait()
            console.say(
                "\nThe integrations call their APIs and write each failure to "
                "integration_events;\nthe daemon hears of it (NOTIFY) and heals it:"
            )
            await _integrations_fail(conn, stand_ins, users, events, console)
            settled = await _until_settled(conn, events, stand_ins, console)
        if not settled:
            await _say_unsettled(conn, events, console)
        stopping = True
        if log_view.started.is_set():
            signal.raise_signal(signal.SIGTERM)  # heard by the daemon's own handler
            await anyio.sleep_forever()  # until the daemon stops and cancels this group
        tg.cancel_scope.cancel()
    if settled:
        await _say_outcomes(conn, events, console)
    return settled


async def _register(conn: psycopg.AsyncConnection[Any], stand_ins: StandIns) -> dict[str, Any]:
    """The services, each allowed to receive its users' tokens on the stand-in's host:port,
    and one user of crm whose access token expired (its refresh token still works)."""
    hosts = [urlsplit(stand_ins.url).netloc]
    oauth = {
        "token_url": f"{stand_ins.url}/oauth/token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scopes": "contacts.write",
    }
    service_ids = {}
    for service in SERVICES:
        cur = await conn.execute(
            REGISTER_SERVICE,
            {
                "service": service,
                "oauth": Jsonb(oauth) if service == "crm" else None,
                "hosts": hosts,
            },
        )
        row = await cur.fetchone()
        service_ids[service] = row[0] if row else None
    user_id = uuid.uuid4()
    await conn.execute(
        CONNECT_USER,
        {
            "user_id": user_id,
            "integration_id": service_ids["crm"],
            "access_token": EXPIRED_TOKEN,
            "refresh_token": FIRST_REFRESH_TOKEN,
        },
    )
    return {"crm": user_id}


async def _integrations_fail(
    conn: psycopg.AsyncConnection[Any],
    stand_ins: StandIns,
    users: dict[str, Any],
    events: dict[uuid.UUID, Failure],
    console: Console,
) -> None:
    """Each integration calls its API for real and writes the error answers to
    integration_events, as an integration would: one transaction per integration (the
    trigger tells the daemon at commit). Each failure joins `events` as it is written."""
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as client:
        for service, group in itertools.groupby(FAILURES, key=lambda f: f.service):
            failures = list(group)
            user_id = users.get(service)
            token = {"authorization": f"Bearer {EXPIRED_TOKEN}"} if user_id else {}
            answers = [
                await client.post(stand_ins.url + f.path, json=f.payload, headers=token)
                for f in failures
            ]
            async with conn.transaction():
                for failure, answer in zip(failures, answers, strict=True):
                    event_id = await _write_failure(conn, failure, answer, user_id)
                    events[event_id] = failure
            body = _json_object(answers[0].content)
            code = f" {body['error']}" if body.get("error") else ""
            retry = answers[0].headers.get("retry-after")
            times = f" x{len(answers)}" if len(answers) > 1 else ""
            console.event(
                service,
                f"POST {failures[0].path}{times} -> {answers[0].status_code}{code}"
                + (f", Retry-After: {retry}" if retry else "")
                + f" ({failures[0].why})",
            )


async def _write_failure(
    conn: psycopg.AsyncConnection[Any], failure: Failure, answer: httpx.Response, user_id: Any
) -> uuid.UUID:
    body = _json_object(answer.content)
    cur = await conn.execute(
        WRITE_FAILURE,
        {
            "service": failure.service,
            "payload": Jsonb(failure.payload),
            "user_id": user_id,
            "error_code": body.get("error"),
            "error_message": body.get("message"),
            "http_status": answer.status_code,
            "endpoint": str(answer.request.url),
            "headers": Jsonb(dict(answer.headers)),
        },
    )
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    return uuid.UUID(str(row[0]))


async def _until_settled(
    conn: psycopg.AsyncConnection[Any],
    events: dict[uuid.UUID, Failure],
    stand_ins: StandIns,
    console: Console,
) -> bool:
    """Read the tables until every failure settled as it should and the admins heard all;
    on the way, end the payments outage once its circuit was probed and admins were told."""
    while True:
        if stand_ins.payments_down:
            cur = await conn.execute(CIRCUIT, {"service": "payments"})
            circuit = await cur.fetchone()
            if circuit and circuit[0] and circuit[1] >= 2 and stand_ins.told("payments"):
                stand_ins.payments_down = False
                console.event("payments", "the outage is over: the API answers again")
        statuses = {row[0]: row[1] for row in await _records(conn, list(events))}
        if all(statuses.get(e) == f.settles_as for e, f in events.items()):
            cur = await conn.execute(ALERTS_QUIET)
            quiet = await cur.fetchone()
            if quiet and quiet[0]:
                return True
        await anyio.sleep(LOOK_EVERY_SECONDS)


async def _records(
    conn: psycopg.AsyncConnection[Any], ids: list[uuid.UUID]
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(RECORDS, {"ids": ids})
    return await cur.fetchall()


async def _say_outcomes(
    conn: psycopg.AsyncConnection[Any], events: dict[uuid.UUID, Failure], console: Console
) -> None:
    console.say("\nWhat became of each failure (system_integrity_events):")
    console.say(f"  {'service':<10} {'kind':<11} {'status':<9} {'attempts':>8}  action taken")
    by_id = {row[0]: row for row in await _records(conn, list(events))}
    for event_id, failure in events.items():
        _, status, attempts, action = by_id[event_id]
        console.say(
            f"  {failure.service:<10} {failure.kind:<11} {status:<9} {attempts:>8}  {action}"
        )
    healed = [f for e, f in events.items() if by_id[e][1] == "resolved"]
    waiting = sorted({f.kind for e, f in events.items() if by_id[e][1] != "resolved"})
    console.say(
        f"{len(healed)} of {len(events)} failures healed with nobody's help; "
        f"{len(events) - len(healed)} ({', '.join(waiting) or '-'}) "
        f"{'waits' if len(events) - len(healed) == 1 else 'wait'} for an admin."
    )


async def _say_unsettled(
    conn: psycopg.AsyncConnection[Any], events: dict[uuid.UUID, Failure], console: Console
) -> None:
    console.say(f"\nselfheal demo: not settled within {HEAL_DEADLINE_SECONDS:g} s:")
    for event_id, status, _, action in await _records(conn, list(events)):
        failure = events[event_id]
        if status != failure.settles_as:
            console.say(
                f"  {failure.service} ({failure.kind}): {status or 'not recorded'}, "
                f"expected {failure.settles_as}: {action or '-'}"
            )


# --- the scratch database -----------------------------------------------------------------


@asynccontextmanager
async def _scratch_database(
    server: Database, where: str, console: Console
) -> AsyncIterator[Database]:
    """A database of the demo's own on the server, dropped (even after an error) at the end."""
    name = f"selfheal_demo_{secrets.token_hex(4)}"
    await _admin(server, "CREATE DATABASE {}", name)
    console.say(f"Scratch database {name} on {where} (dropped at the end).")
    try:
        yield Database(make_conninfo(server.conninfo, dbname=name), server.policy)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(30):
            await _admin(server, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


async def _admin(server: Database, statement: str, name: str) -> None:
    query = sql.SQL(statement).format(sql.Identifier(name))
    try:
        async with await psycopg.AsyncConnection.connect(server.conninfo, autocommit=True) as conn:
            await conn.execute(query)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DemoRefused(
            "the demo creates a scratch database and needs the CREATEDB privilege: grant it, "
            "or unset DATABASE_URL to use the embedded Postgres"
        ) from exc


@contextmanager
def _unproxied_loopback() -> Iterator[None]:
    """The stand-ins are on loopback: never send the demo's requests through a proxy
    (both spellings: where both are set, urllib reads the lower-case one)."""
    before = {name: os.environ.get(name) for name in ("NO_PROXY", "no_proxy")}
    for name, value in before.items():
        os.environ[name] = ",".join(filter(None, [value, "127.0.0.1", "localhost"]))
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- what the newcomer reads --------------------------------------------------------------


INDENT = " " * 20  # under the text of an event line
WIDTH = 100


class Console:
    """Lines on the demo's output, from the event loop and the stand-ins' threads alike.
    An event line carries the seconds since the demo began and whom it is about; the same
    event again, right after, is counted instead of repeated."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._began = time.monotonic()
        self._last: tuple[str, str] | None = None
        self._repeats, self._repeated_at = 0, 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self._began

    def say(self, text: str) -> None:
        with self._lock:
            self._write(text)

    def say_with(self, write: Callable[[TextIO], None]) -> None:
        """Whatever `write` writes to the output, as one piece."""
        with self._lock:
            self._tell_repeats()
            write(self._out)
            self._out.flush()

    def event(self, who: str, text: str) -> None:
        """A line about `who`; each paragraph of `text` wrapped under the first line's text."""
        with self._lock:
            if (who, text) == self._last:
                self._repeats, self._repeated_at = self._repeats + 1, self.elapsed()
                return
            head = f"{self.elapsed():6.2f}s  {who:<10} "
            lines = [
                line
                for number, paragraph in enumerate(text.split("\n"))
                for line in textwrap.wrap(
                    paragraph,
                    WIDTH,
                    initial_indent=head if number == 0 else INDENT,
                    subsequent_indent=INDENT,
                )
            ]
            self._write("\n".join(lines))
            self._last = (who, text)

    def _write(self, text: str) -> None:
        self._tell_repeats()
        self._out.write(text + "\n")
        self._out.flush()

    def _tell_repeats(self) -> None:
        if self._repeats and self._last:
            again = f"{self._repeats} more time{'s' if self._repeats > 1 else ''}"
            self._out.write(f"{self._repeated_at:6.2f}s  {self._last[0]:<10} (the same {again})\n")
        self._last, self._repeats = None, 0


class LogView(io.TextIOBase):
    """The daemon's log stream (one JSON object a line): the steps a newcomer cares about,
    told in words; warnings and errors always."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._partial = ""
        self._open_circuits: dict[str, int] = {}  # service: failures waiting
        self.started = anyio.Event()

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._show(line)
        return len(text)

    def _show(self, line: str) -> None:
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            entry = None
        if not isinstance(entry, dict):
            if line.strip():
                self._console.event("log", line.strip())
            return
        if entry.get("event") == "daemon.started":
            self.started.set()
        told = self._told(entry)
        if told is not None:
            self._console.event(str(entry.get("service_name") or "daemon"), told)

    def _told(self, e: dict[str, Any]) -> str | None:
        """While a service's circuit is open, its probes in one line each (its waiting
        failures' own lines say nothing new); everything else as _told says."""
        name, service = e.get("event"), str(e.get("service_name"))
        if name == "circuit.opened" and not e.get("user_connection_id"):
            self._open_circuits[service] = int(e.get("failures_waiting", 0))
        elif name == "circuit.closed":
            self._open_circuits.pop(service, None)
        elif service in self._open_circuits:
            if name == "circuit.probe":
                self._open_circuits[service] = int(e.get("failures_waiting", 0))
                return None
            if name == "recovery.replay_failed":
                waiting = self._open_circuits[service]
                return f"probe: still down ({_failed(e)}); failures waiting: {waiting}"
            if name == "recovery.pending":
                return None
        return _told(e)


def _told(e: dict[str, Any]) -> str | None:
    """One log entry in words, or None for the routine ones (claims, sweeps, deliveries:
    the webhooks print what they receive)."""
    name = str(e.get("event"))
    match name:
        case "daemon.started":
            channels = ", ".join(e.get("alert_channels") or []) or "nowhere"
            return f"started: listening for failures; alerts go to {channels}"
        case "failure.recorded":
            return f"diagnosed {e['category']} ({e['confidence']:.2f}): {e['action']}"
        case "recovery.token_refreshed":
            rotated = ", refresh token rotated" if e.get("rotated") else ""
            return f"OAuth token refreshed{rotated} and stored"
        case "recovery.replay_failed":
            return f"replay {e['attempt']} failed: {_failed(e)}"
        case "recovery.resolved" | "recovery.pending" | "recovery.disabled":
            return f"{name.removeprefix('recovery.').upper()}: {e.get('action')}"
        case "circuit.opened":
            return "CIRCUIT OPEN: its failures wait, and one probe at a time tries the service"
        case "circuit.probe":
            return f"circuit probe ({e.get('failures_waiting', 0)} failures waiting)"
        case "circuit.closed":
            return f"CIRCUIT CLOSED: {e.get('failures_released', 0)} waiting failures released"
        case "daemon.stopping":
            return f"stopping on {e.get('signal')}: finishing in-flight work"
        case "daemon.stopped":
            return "stopped"
    if e.get("level") in ("warning", "error"):
        fields = {k: v for k, v in e.items() if k not in ("event", "level", "timestamp")}
        return f"{name} {json.dumps(fields, default=str)}"
    return None


def _failed(e: dict[str, Any]) -> str:
    status = e.get("http_status")
    return f"HTTP {status}" if status else str(e.get("error_code") or "no answer")


@contextmanager
def _daemon_log(settings: Settings, given: Settings, console: Console) -> Iterator[LogView]:
    """The daemon's log lines go to the demo's view while it runs; then back to stderr."""
    view = LogView(console)
    configure_logging(settings, cast(TextIO, view))
    try:
        yield view
    finally:
        configure_logging(given, sys.stderr)


# --- the stand-ins --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any] | str = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class StandIns:
    """The services the integrations and the daemon talk to, on one loopback port: each API
    with the behaviour of its failure, the OAuth token endpoint (refresh_token grant, HTTP
    Basic client authentication, rotation), and Slack and Teams webhooks that print what
    they are sent."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._access_token: str | None = None  # the stored token is expired: none is valid
        self._refresh_token = FIRST_REFRESH_TOKEN
        self.payments_down = True
        self._told: list[tuple[str, str, str]] = []  # (channel, title, service)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.stand_ins = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StandIns:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def told(self, service: str) -> bool:
        """Whether Slack has been told that the service is failing."""
        with self._lock:
            return any(
                channel == "slack" and title.startswith("Integration Failure") and who == service
                for channel, title, who in self._told
            )

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            self._calls[path] += 1
            call = self._calls[path]
            service = path.split("/")[1]
            if service == "oauth":
                return self._token(headers, body)
            if service == "crm":
                if self._access_token and headers.get("authorization") == (
                    f"Bearer {self._access_token}"
                ):
                    return Reply(201, {"ok": True, "id": "contact-1"})
                return Reply(
                    401,
                    {"error": "invalid_token", "message": "The access token expired"},
                    {"www-authenticate": 'Bearer error="invalid_token"'},
                )
            if service == "mailer" and call == 1:
                return Reply(
                    429,
                    {"error": "rate_limited", "message": "Too many requests"},
                    {"retry-after": "1"},
                )
            if service == "billing" and call < 3:  # clears on the third try
                return Reply(503, {"message": "Service Unavailable"})
            if service == "warehouse":
                return Reply(400, {"error": "validation_error", "message": "sku is required"})
            if service == "analytics" and call == 1:
                return Reply(418, {"error": "teapot", "message": "I'm a teapot"})
            if service == "payments" and self.payments_down:
                return Reply(503, {"message": "upstream connect error"})
            if service in ("slack", "teams"):
                self._alert(service, _json_object(body))
                return Reply(200, "ok") if service == "slack" else Reply(202, "")
            return Reply(200, {"ok": True})

    def _token(self, headers: dict[str, str], body: bytes) -> Reply:
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        if _basic_credentials(headers.get("authorization", "")) != (CLIENT_ID, CLIENT_SECRET):
            return Reply(401, {"error": "invalid_client"})
        if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != (
            self._refresh_token
        ):
            return Reply(400, {"error": "invalid_grant"})
        self._access_token = f"crm-token-{secrets.token_hex(4)}"
        self._refresh_token = f"crm-refresh-{secrets.token_hex(4)}"
        return Reply(
            200,
            {
                "access_token": self._access_token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": self._refresh_token,
            },
        )

    def _alert(self, channel: str, message: dict[str, Any]) -> None:
        title, facts = (_slack_facts if channel == "slack" else _teams_facts)(message)
        service = facts.pop("Service", "")
        category = facts.pop("Category", "")
        self._told.append((channel, title, service))
        about = f"{service} ({category})" if category else service
        facts.pop("Original error", None)
        shown = " | ".join(f"{k}: {_short(v)}" for k, v in facts.items())
        self._console.event(channel, f">> {title}: {about}\n{shown}")


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        stand_ins: StandIns = self.server.stand_ins  # type: ignore[attr-defined]
        reply = stand_ins.answer(urlsplit(self.path).path, headers, body)
        text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        data = text.encode()
        self.send_response(reply.status)
        content_type = "text/plain" if isinstance(reply.body, str) else "application/json"
        for name, value in {"content-type": content_type, **reply.headers}.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo tells what matters itself


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    """RFC 6749 2.3.1: base64 of the form-encoded id and secret, joined by a colon."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _slack_facts(message: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """A Block Kit message read as Slack shows it: the header, then each field and code
    section as label and text."""
    title, facts = "", {}
    for block in message.get("blocks", []):
        if block.get("type") == "header":
            title = block["text"]["text"]
        texts = [block["text"]] if block.get("type") == "section" and "text" in block else []
        for item in [*block.get("fields", []), *texts]:
            label, _, value = item.get("text", "").partition("\n")
            facts[label.strip("*")] = html.unescape(value.strip("`"))
    return title, facts


def _teams_facts(message: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """An Adaptive Card read as Teams shows it: the title block, the fact set, and each
    labelled monospace block."""
    card = message["attachments"][0]["content"]
    title, facts, label = "", {}, None
    for item in card.get("body", []):
        if item.get("type") == "FactSet":
            facts.update({f["title"]: f["value"] for f in item["facts"]})
        elif item.get("size") == "Large":
            title = item["text"]
        elif item.get("weight") == "Bolder":
            label = item["text"]
        elif label is not None and item.get("fontType") == "Monospace":
            facts[label], label = item["text"], None
    return title, facts


def _short(text: str, limit: int = 70) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"
