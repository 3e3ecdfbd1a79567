"""structlog setup: one JSON object per line off a terminal, readable console output on one."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog

from selfheal.core.sanitize import scrub, scrub_text
from selfheal.settings import Settings

__all__ = ["configure_logging", "first_line", "get_logger"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def _dumps(event: Any, **_: Any) -> str:
    # orjson is several times faster than the stdlib on the hot path; default=str
    # keeps an odd value (a UUID subclass, an exception) from killing the log line.
    return orjson.dumps(event, default=str).decode()


class _Output:
    """The one line writer behind every logger. Loggers are cached on first use, so
    configuring again (a second command in one process) swaps its stream, not it."""

    def __init__(self) -> None:
        self.stream: TextIO = sys.stdout

    def msg(self, message: str) -> None:
        try:
            self.stream.write(message + "\n")
            self.stream.flush()
        except ValueError:  # closed at interpreter exit: nowhere left to write
            pass

    debug = info = warning = warn = error = critical = exception = fatal = msg


_OUTPUT = _Output()


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    _OUTPUT.stream = stream
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        # Frame locals would show headers, forms and connection strings: never render them.
        processors.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    processors.append(_scrub_errors)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[settings.log_level]),
        logger_factory=lambda *_: _OUTPUT,
        cache_logger_on_first_use=True,
    )
    # Libraries (psycopg_pool) log through the stdlib: same stream, same one-line form.
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(max(_LEVELS[settings.log_level], logging.INFO))
    # Chatty at INFO; httpx would log every request URL, and URLs can carry secrets.
    for chatty in ("pgserver", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


_ERROR_FIELDS = ("error", "exception", "message")


def _scrub_errors(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Error texts come from libraries and may quote what they were given: sanitize them."""
    for name in _ERROR_FIELDS:
        if name in event and event[name] is not None and not isinstance(event[name], bool):
            value = event[name]
            event[name] = (
                scrub(value)
                if isinstance(value, dict | list)
                else scrub_text(str(value), max_length=8000)
            )
    return event


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        log = structlog.get_logger()
        method = getattr(log, level if level in _LEVELS else "info")
        method(f"{record.name}.log", message=record.getMessage())


def get_logger(**initial: Any) -> Any:
    return structlog.get_logger(**initial)


def first_line(exc: BaseException) -> str:
    """The first line of an error, for a log field (psycopg errors run to several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
