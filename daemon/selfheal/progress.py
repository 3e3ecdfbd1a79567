"""Progress of the daemon's loops, for the watchdog and /healthz. A loop makes itself the
current one (a context variable, inherited by the tasks it starts); the store marks it
after every round trip to Postgres, so a busy loop shows progress however long its step,
and only a loop stuck beyond one round trip's deadline stops showing it."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

__all__ = ["beat", "beating"]

_current: ContextVar[Callable[[], None] | None] = ContextVar("selfheal_progress", default=None)


def beating(mark: Callable[[], None]) -> None:
    """Make `mark` the current loop's progress mark (for this task and those it starts)."""
    _current.set(mark)


def beat() -> None:
    mark = _current.get()
    if mark is not None:
        mark()
