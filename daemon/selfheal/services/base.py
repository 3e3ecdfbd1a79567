"""The base of every long-running loop of the daemon (listener, claimer, scanner, healer,
notifier, senders and advisor): a step, then a wait for a wake-up or the period, with a
jittered backoff while Postgres (or whatever the step needs) is away."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import anyio
import structlog

from selfheal import progress
from selfheal.core.retry import reconnect_delay
from selfheal.errors import TemporaryError
from selfheal.logs import first_line, get_logger

__all__ = ["Backoff", "Every", "Gate", "Paced", "Service", "Wakeup", "retry_until_done"]

log = get_logger()


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


class Every:
    """`due()` is true at most once per `seconds` of the event loop's clock (the first time
    at once): for work a busy loop should not repeat at every step."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._last = -math.inf

    def due(self) -> bool:
        now = anyio.current_time()
        if now - self._last < self._seconds:
            return False
        self._last = now
        return True


class Paced:
    """`wait()` returns at most once per `seconds`, sleeping out the rest: for a loop woken
    by every batch the claimer records, which need not look that often."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._last = -math.inf

    async def wait(self) -> None:
        await anyio.sleep(max(0.0, self._last + self._seconds - anyio.current_time()))
        self._last = anyio.current_time()


class Backoff:
    """The jittered, capped backoff while something is away: each failure waits longer,
    `reset()` after a success starts again from 0.1 s."""

    def __init__(self, cap: float) -> None:
        self._cap = cap
        self._failures = 0

    def reset(self) -> None:
        self._failures = 0

    def next_delay(self) -> float:
        delay = reconnect_delay(self._failures, self._cap, random.random())  # noqa: S311
        self._failures += 1
        return round(delay, 3)


class Service:
    """A loop that runs `step()`, then waits for its wake-up or `period()` (or the wait the
    step returned, when shorter). A TemporaryError from the step is logged as
    `{name}.db_unavailable` and retried after a jittered, capped backoff. `stop()` ends
    the loop after the step in progress."""

    name: ClassVar[str] = "service"

    def __init__(self, wakeup: Wakeup, *, period: float, reconnect_cap: float) -> None:
        self.wakeup = wakeup
        self._period = period
        self.backoff = Backoff(reconnect_cap)
        self.stopping = False
        # Progress, for the watchdog and /healthz: when the loop last moved on, and whether
        # it is waiting (for work, a wake-up or Postgres), which is never a stall.
        self.beat_at = time.monotonic()
        self.resting = True

    def beat(self) -> None:
        """The loop is making progress (a long step calls it as it goes)."""
        self.beat_at = time.monotonic()

    @contextmanager
    def rest(self) -> Iterator[None]:
        """A wait that is not a stall: for a wake-up, a gate, or Postgres to come back."""
        self.resting = True
        try:
            yield
        finally:
            self.resting = False
            self.beat()

    def stalled_for(self, now: float) -> float:
        """Seconds the loop has been working without progress (0 while it rests)."""
        return 0.0 if self.resting else max(0.0, now - self.beat_at)

    def stop(self) -> None:
        self.stopping = True
        self.wakeup.set()

    async def step(self) -> float | None:
        """One round of work; may return how soon the next one is due."""
        raise NotImplementedError

    def on_unavailable(self, exc: TemporaryError, retry_in: float) -> None:
        log.warning(f"{self.name}.db_unavailable", error=first_line(exc), retry_in=retry_in)

    async def run(self) -> None:
        # Every line logged by this service (and the tasks it starts) names it: `loop`.
        with structlog.contextvars.bound_contextvars(loop=self.name):
            progress.beating(self.beat)
            try:
                await self.main()
            finally:
                self.resting = True  # a loop that ended is not stuck

    async def main(self) -> None:
        """What the service runs: the loop, or (in a subclass) the loop and its helpers."""
        await self.loop()

    async def loop(self) -> None:
        while not self.stopping:
            self.resting = False
            self.beat()
            try:
                due = await self.step()
            except TemporaryError as exc:
                delay = self.backoff.next_delay()
                self.on_unavailable(exc, delay)
                with self.rest():
                    await anyio.sleep(delay)
                continue
            self.backoff.reset()
            with self.rest():
                await self.wakeup.wait(self._period if due is None else min(due, self._period))


async def retry_until_done(
    name: str, operation: Callable[[], Awaitable[object]], reconnect_cap: float
) -> None:
    """Run `operation` until it goes through, backing off while it meets a TemporaryError
    (a write that must not be dropped, such as recovery outcomes)."""
    backoff = Backoff(reconnect_cap)
    while True:
        try:
            await operation()
            return
        except TemporaryError as exc:
            delay = backoff.next_delay()
            log.warning(f"{name}.write_failed", error=first_line(exc), retry_in=delay)
            await anyio.sleep(delay)
