"""A coalescing wake-up signal between tasks, and the reconnect backoff."""

from __future__ import annotations

import random

import anyio

from selfheal.core import retry

__all__ = ["Gate", "Wakeup", "reconnect_delay"]


class Wakeup:
    """Many `set()` calls before one `wait()` wake it once; a `set()` during the work
    that follows a wake is not lost, it wakes the next `wait()` at once."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """True when woken, False when `seconds` passed first."""
        with anyio.move_on_after(seconds):
            await self._event.wait()
        woken = self._event.is_set()
        if woken:
            self._event = anyio.Event()
        return woken


class Gate:
    """Open unless closed: `wait_open()` returns at once while it is open."""

    def __init__(self) -> None:
        self._open = anyio.Event()
        self._open.set()

    def close(self) -> None:
        if self._open.is_set():
            self._open = anyio.Event()

    def open(self) -> None:
        self._open.set()

    async def wait_open(self) -> None:
        await self._open.wait()


def reconnect_delay(attempt: int, cap: float) -> float:
    return retry.reconnect_delay(attempt, cap, random.random())  # noqa: S311 - jitter
