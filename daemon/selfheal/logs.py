"""structlog setup: one JSON object per line off a terminal, readable console output on one."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any, TextIO, cast

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger

from selfheal.core.sanitize import scrub, scrub_text
from selfheal.errors import innermost
from selfheal.settings import Settings

__all__ = ["configure_logging", "error_fields", "first_line", "get_logger"]

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
        self.write(message + "\n")
        self.flush()

    debug = info = warning = warn = error = critical = exception = fatal = msg

    def write(self, text: str) -> None:
        try:
            self.stream.write(text)
        except ValueError:  # closed at interpreter exit: nowhere left to write
            pass

    def flush(self) -> None:
        try:
            self.stream.flush()
        except ValueError:
            pass


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
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Any] = []
    if fmt == "json":
        # Frame locals would show headers, forms and connection strings: never render them.
        tail.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    tail += [_scrub_errors, renderer]
    level = _LEVELS[settings.log_level]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: _OUTPUT,
        cache_logger_on_first_use=True,
    )
    # Libraries (psycopg_pool, anyio) log through the stdlib: the same stream and line
    # form, their own level, and their tracebacks as a field.
    handler = logging.StreamHandler(_OUTPUT)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _library_event],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
    # Chatty at INFO; httpx would log every request URL, and URLs can carry secrets.
    for chatty in ("pgserver", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _library_event(_: Any, __: str, event: EventDict) -> EventDict:
    """A library record as one of ours: `{logger}.log`, its text in `message`."""
    record: logging.LogRecord = event["_record"]
    event["message"] = event.pop("event")
    event["event"] = f"{record.name}.log"
    return event


_ERROR_FIELDS = ("error", "exception", "message", "traceback")
_FIELD_LENGTH = {"traceback": 20_000}


def _scrub_errors(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Error texts come from libraries and may quote what they were given: sanitize them."""
    for name in _ERROR_FIELDS:
        if name in event and event[name] is not None and not isinstance(event[name], bool):
            value = event[name]
            event[name] = (
                scrub(value)
                if isinstance(value, dict | list)
                else scrub_text(str(value), max_length=_FIELD_LENGTH.get(name, 8000))
            )
    return event


def get_logger(**initial: Any) -> FilteringBoundLogger:
    return cast(FilteringBoundLogger, structlog.get_logger(**initial))


def error_fields(exc: BaseException) -> dict[str, str]:
    """An error as an operator reads it: `error`, the innermost cause in one line (type and
    message), and `traceback`, the whole story, in a field of its own (no frame locals)."""
    cause = innermost(exc)
    return {
        "error": f"{type(cause).__name__}: {first_line(cause)}",
        "traceback": "".join(traceback.format_exception(exc)).rstrip(),
    }


def first_line(exc: BaseException) -> str:
    """The first line of an error, for a log field (psycopg errors run to several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
