"""Health and systemd: whether the daemon is well (its loops make progress, the listener
listens, Postgres answers), for /healthz; and systemd's notify protocol (sd_notify(3)):
READY once the daemon listens, WATCHDOG while its loops make progress (a stuck loop stops
the pings and systemd restarts the daemon), STATUS a live summary, STOPPING on shutdown.

The protocol is a datagram of `KEY=value` lines to the Unix socket in $NOTIFY_SOCKET (an
abstract one when it starts with '@'): a few lines of socket code, no library."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence

from selfheal.logs import get_logger
from selfheal.services.base import Service, Wakeup
from selfheal.services.listener import Listener
from selfheal.services.sampler import Sampler

__all__ = ["Health", "Systemd", "Watchdog"]

log = get_logger()


class Systemd:
    """The notify socket systemd gave us, if any; every send is best effort."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        path = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )
        # WATCHDOG_PID names the process the watchdog is for: pings from another are ignored.
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        ours = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.watchdog_seconds = int(usec) / 1e6 if usec.isdigit() and int(usec) and ours else None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, **fields: str) -> None:
        if self._socket is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failed:  # once: a socket that is gone stays gone
                log.warning("systemd.notify_failed", error=f"{type(exc).__name__}: {exc}")
                self._failed = True

    def extend_timeout(self, seconds: float) -> None:
        self.notify(EXTEND_TIMEOUT_USEC=str(round(seconds * 1e6)))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()


class Health:
    """What /healthz and the watchdog judge by."""

    def __init__(
        self,
        loops: Sequence[Service],
        listener: Listener | None,
        sampler: Sampler,
        stall_limit: float,
    ) -> None:
        self._loops = loops
        self._listener = listener
        self._sampler = sampler
        self._stall_limit = stall_limit
        self.stopping = False

    def stalled(self) -> list[str]:
        """The loops working without progress for longer than the limit (none while the
        daemon stops: its grace is bounded on its own)."""
        if self.stopping:
            return []
        now = time.monotonic()
        return [
            f"{loop.name} made no progress for {loop.stalled_for(now):.0f} s"
            for loop in self._loops
            if loop.stalled_for(now) > self._stall_limit
        ]

    def problems(self) -> list[str]:
        """Why the daemon is not well (empty: it is)."""
        problems = self.stalled()
        if self._sampler.unavailable is not None:
            problems.append(f"postgres unavailable: {self._sampler.unavailable}")
        if self._listener is not None and not self._listener.listening:
            problems.append("listener not listening")
        if self.stopping:
            problems.append("stopping")
        return problems

    def summary(self) -> str:
        """STATUS=: one short line an operator reads in `systemctl status`."""
        if self.stopping:
            return "stopping: finishing work in flight"
        listening = (
            "polling"
            if self._listener is None
            else ("listening" if self._listener.listening else "reconnecting")
        )
        g = self._sampler.latest
        if g is None:
            return f"{listening}; waiting for the first reading of Postgres"
        return (
            f"{listening}; inbox {g.inbox}; pending {g.pending}; "
            f"open circuits {g.open_circuits}; alerts queued {g.outbox}"
        )


class Watchdog(Service):
    """Pings systemd's watchdog at half its interval while no loop is stalled, and keeps
    STATUS= current. A stalled loop stops the pings (systemd then restarts the daemon);
    a Postgres outage does not, since a restart would not bring Postgres back."""

    name = "watchdog"

    def __init__(self, systemd: Systemd, health: Health, *, status_every: float) -> None:
        interval = systemd.watchdog_seconds
        period = status_every if interval is None else min(interval / 2, status_every)
        super().__init__(Wakeup(), period=period, reconnect_cap=period)
        self._systemd = systemd
        self._health = health
        self._pinging = interval is not None
        self._stalled: list[str] = []

    async def step(self) -> None:
        stalled = self._health.stalled()
        if stalled and not self._stalled:
            log.error("watchdog.stalled", loops=stalled)
        elif self._stalled and not stalled:
            log.info("watchdog.recovered")
        self._stalled = stalled
        fields = {"STATUS": self._health.summary()}
        if self._pinging and not stalled:
            fields["WATCHDOG"] = "1"
        self._systemd.notify(**fields)
