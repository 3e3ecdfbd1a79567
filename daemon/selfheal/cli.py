"""The `selfheal` command: argument parsing and output; the work is app.py's."""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import anyio
import orjson
from psycopg.types.json import Jsonb

from selfheal import __version__, app
from selfheal.core.analyzer import analyze
from selfheal.daemon import run_daemon
from selfheal.errors import DatabaseUnavailable
from selfheal.logs import configure_logging, error_fields, first_line, get_logger
from selfheal.models import Failure
from selfheal.report import print_status
from selfheal.settings import ConfigError, Settings, load_settings

__all__ = ["main"]

log = get_logger()

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

INJECTED_FAILURES: dict[str, dict[str, Any]] = {
    "auth": {
        "http_status": 401,
        "error_code": "invalid_token",
        "error_message": "The access token expired",
        "response_headers": {"www-authenticate": 'Bearer error="invalid_token"'},
    },
    "rate_limit": {
        "http_status": 429,
        "error_code": "rate_limit_exceeded",
        "error_message": "Too many requests",
        "response_headers": {"retry-after": "30"},
    },
    "network": {
        "http_status": None,
        "error_code": "ECONNRESET",
        "error_message": "socket hang up",
        "response_headers": {},
    },
    "data": {
        "http_status": 422,
        "error_code": "validation_error",
        "error_message": "channel is required",
        "response_headers": {},
    },
    "unknown": {
        "http_status": 418,
        "error_code": "teapot",
        "error_message": "I am a teapot",
        "response_headers": {},
    },
}


def _count(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count from 1 to 100,000")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfheal",
        description="Heal failed third-party integrations from Postgres.",
    )
    parser.add_argument("--version", action="version", version=f"selfheal {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("migrate", help="apply migrations and triggers (safe to repeat)")
    run = commands.add_parser("run", help="run the daemon (embedded Postgres without DATABASE_URL)")
    run.add_argument("--no-migrate", action="store_true", help="skip migrations at start")
    heal = commands.add_parser("heal", help="process one failure now; JSON on stdout")
    heal.add_argument("event_id", type=uuid.UUID, metavar="EVENT_ID")
    scan = commands.add_parser("scan", help="one sweep over recent failures; JSON on stdout")
    scan.add_argument("--window-minutes", type=float, default=15.0)
    scan.add_argument("--limit", type=int, default=50)
    commands.add_parser(
        "classify", help="JSON lines of failures on stdin, one analysis per line on stdout"
    )
    inject = commands.add_parser(
        "inject", help="insert a synthetic failure (ENVIRONMENT=development only)"
    )
    inject.add_argument("--service", required=True)
    inject.add_argument("--failure", required=True, choices=sorted(INJECTED_FAILURES))
    inject.add_argument("--endpoint", default=None, help="absolute URL to replay against")
    inject.add_argument("--user", type=uuid.UUID, default=None)
    inject.add_argument(
        "--count", type=_count, default=1, metavar="N",
        help="how many identical failures, in one statement (1 to 100,000)",
    )  # fmt: skip
    status = commands.add_parser("status", help="KPIs of the healing")
    status.add_argument("--json", action="store_true", help="JSON on stdout")
    enable = commands.add_parser("enable", help="re-enable a service (or one user's connection)")
    enable.add_argument("service")
    enable.add_argument("--user", type=uuid.UUID, default=None)
    commands.add_parser(
        "demo", help="the whole loop in half a minute, on a scratch database with stand-ins"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"selfheal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # One-shot commands keep stdout for their JSON; the daemon logs to stdout.
    configure_logging(settings, sys.stdout if args.command == "run" else sys.stderr)
    if args.command == "classify":
        return classify(sys.stdin, sys.stdout)
    if args.command == "inject" and not settings.is_development:
        print("selfheal: inject refuses to run unless ENVIRONMENT=development", file=sys.stderr)
        return EXIT_USAGE
    command = COMMANDS[args.command]
    try:
        return anyio.run(_with_database, command, settings, args, backend_options=_backend())
    except KeyboardInterrupt:
        return EXIT_OK
    except DatabaseUnavailable as exc:
        log.error("database.unavailable", error=first_line(exc))
        return EXIT_FAILED
    except (app.EmbeddedMissing, ConfigError) as exc:
        print(f"selfheal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        # A task died: one line that names the cause, the traceback in a field of its own;
        # systemd restarts us.
        log.error(
            "daemon.crashed" if args.command == "run" else "command.failed", **error_fields(exc)
        )
        return EXIT_FAILED


def _backend() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvloop is optional
        return {}
    return {"use_uvloop": True}


Command = Callable[[Settings, app.Database, argparse.Namespace], Awaitable[int]]


async def _with_database(command: Command, settings: Settings, args: argparse.Namespace) -> int:
    return await command(settings, await app.database(settings), args)


async def cmd_run(settings: Settings, db: app.Database, args: argparse.Namespace) -> int:
    if not args.no_migrate:
        await app.migrate(db)
    await run_daemon(settings, db, await app.listen_conninfo(settings, db))
    return EXIT_OK


async def cmd_migrate(settings: Settings, db: app.Database, args: argparse.Namespace) -> int:
    await app.migrate(db)
    return EXIT_OK


async def cmd_heal(settings: Settings, db: app.Database, args: argparse.Namespace) -> int:
    response = await app.heal_event(settings, db, args.event_id)
    _print_json(response)
    return EXIT_OK if response["success"] else EXIT_FAILED


async def cmd_scan(settings: Settings, db: app.Database, args: argparse.Namespace) -> int:
    _print_json(await app.scan(settings, db, args.window_minutes, args.limit))
    return EXIT_OK


def classify(stdin: TextIO, stdout: TextIO) -> int:
    """One analysis per input line; a bad line gets an error object, never a crash."""
    for number, line in enumerate(stdin, start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            stdout.write(_dumps({"line": number, "error": f"invalid JSON: {exc}"}) + "\n")
            continue
        if not isinstance(item, dict):
            stdout.write(_dumps({"line": number, "error": "expected a JSON object"}) + "\n")
            continue
        failure = Failure.coerce(
            item.get("service_name"),
            item.get("http_status"),
            item.get("error_code"),
            item.get("error_message"),
            item.get("response_headers"),
        )
        stdout.write(_dumps(analyze(failure).as_dict()) + "\n")
        stdout.flush()
    return EXIT_OK


async def cmd_inject(settings: Settings, db: app.Database, args: argparse.Namespace) -> int:
    failure = INJECTED_FAILURES[args.failure]
    async with db.store(max_size=1) as store:
        event_ids = await store.inject(
            {
                "service_name": args.service,
                "payload": Jsonb({"text": "injected by selfheal"}),
                "user_id": args.user,
                "endpoint": args.endpoint,
                "count": args.count,
                **failure,
                "response_headers": Jsonb(failure["response_headers"]),
            }
        )
    _print_json(
        {
            "success": True,
            "event_id": str(event_ids[0]),
            "event_ids": [str(e) for e in event_ids],
            "failure": args.failure,
        }
    )
    return EXIT_OK


async def cmd_status(settings: Settings, db: app.Database, args: argparse.Namespace) -> int:
    async with db.store(max_size=1) as store:
        status = await app.status_report(store, settings)
    if args.json:
        _print_json(status)
    else:
        print_status(status, sys.stdout)
    return EXIT_OK


async def cmd_enable(settings: Settings, db: app.Database, args: argparse.Namespace) -> int:
    async with db.store(max_size=1) as store:
        count = await store.enable(args.service, args.user, via="cli")
    _print_json(
        {
            "success": count > 0,
            "service_name": args.service,
            "user_id": str(args.user) if args.user else None,
            "enabled": count,
        }
    )
    return EXIT_OK if count else EXIT_FAILED


async def cmd_demo(settings: Settings, db: app.Database, args: argparse.Namespace) -> int:
    from selfheal import demo  # imported here: its stand-ins serve no other command

    return await demo.run(settings, db, sys.stdout)


COMMANDS: dict[str, Command] = {
    "migrate": cmd_migrate,
    "run": cmd_run,
    "heal": cmd_heal,
    "scan": cmd_scan,
    "inject": cmd_inject,
    "status": cmd_status,
    "enable": cmd_enable,
    "demo": cmd_demo,
}


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _print_json(value: Any) -> None:
    sys.stdout.write(_dumps(value) + "\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
