"""The project's own errors. The edges (db/, http/) translate library errors into these,
with ``raise ... from exc``; everything above decides by kind, never by library type."""

from __future__ import annotations

__all__ = [
    "DatabaseError",
    "DatabaseUnavailable",
    "PermanentError",
    "ServiceRegistrationFailed",
    "TemporaryError",
    "innermost",
]


class TemporaryError(Exception):
    """Worth trying again later: the same call may succeed once the cause goes away."""


class PermanentError(Exception):
    """Trying again will not help: something about the input or the setup is wrong."""


class DatabaseUnavailable(TemporaryError):
    """Postgres cannot be used right now (unreachable, restarting, read-only after a
    failover, a privilege revoked): back off and try again."""


class DatabaseError(PermanentError):
    """Postgres refused a statement for what it holds (a constraint, a bad value): retrying
    the same rows fails the same way."""


class ServiceRegistrationFailed(PermanentError):
    """integrations_master would not take a row with just a service_name."""


def innermost(exc: BaseException) -> BaseException:
    """The error that says what happened: the first leaf of an exception group (a task
    group wraps the failing task's error, often several levels deep)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
