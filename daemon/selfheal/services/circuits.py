"""This daemon's view of which services and user connections are down or disabled: what a
recovery in flight consults before each attempt, so that a dead or disabled target gets
no further request. Its own replays feed it at once; what other daemons decided arrives
from the database (each claim, and every second while recoveries run)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from typing import TypeVar

from selfheal.core.circuit import Breaker, CircuitPolicy, after_replay
from selfheal.models import Category, CircuitChange, Job, ReplayResult, Settled, TargetState

__all__ = ["Circuits", "Stop"]

_Member = TypeVar("_Member", str, uuid.UUID)


class Stop(enum.Enum):
    SERVICE_DISABLED = "service_disabled"
    USER_CONNECTION_DISABLED = "user_connection_disabled"
    CIRCUIT_OPEN = "circuit_open"
    ADDRESS_REFUSED = "address_refused"  # the guard would not send it (not the service's fault)


class Circuits:
    """Services are known by name (a failure may be claimed before its service has a row
    this daemon knows the id of), user connections by id."""

    def __init__(self, policy: CircuitPolicy) -> None:
        self.policy = policy
        self._breakers: dict[str, Breaker] = {}
        self._open_services: set[str] = set()
        self._open_users: set[uuid.UUID] = set()
        self._disabled_services: set[str] = set()
        self._disabled_users: set[uuid.UUID] = set()

    def stop(self, job: Job) -> Stop | None:
        """Why the job's next request must not go out, or None. A probe is the one request
        an open circuit allows."""
        if job.service_name in self._disabled_services:
            return Stop.SERVICE_DISABLED
        if job.user_connection_id in self._disabled_users:
            return Stop.USER_CONNECTION_DISABLED  # no request at all, with its token or not
        if job.probe:
            return None
        if job.service_name in self._open_services or self._breaker(job).open:
            return Stop.CIRCUIT_OPEN
        if job.category is Category.AUTH and job.user_connection_id in self._open_users:
            return Stop.CIRCUIT_OPEN
        return None

    def replayed(self, job: Job, result: ReplayResult) -> bool:
        """Feed one replay's answer; True when it is the one that opened the circuit. A
        probe's answer goes to the database's circuit, not to this daemon's breaker."""
        if job.probe:
            return False
        before = self._breaker(job)
        after = after_replay(before, result, self.policy)
        self._breakers[job.service_name] = after
        if result.succeeded:
            self._open_services.discard(job.service_name)
        return after.open and not before.open

    def learn(self, jobs: Iterable[Job]) -> None:
        """What a claim read of the database: circuits other daemons opened, disables."""
        for job in jobs:
            if job.service_id is not None:
                _toggle(self._open_services, job.service_name, job.service_circuit_open)
                _toggle(self._disabled_services, job.service_name, not job.service_enabled)
            if job.user_connection_id is not None:
                _toggle(self._open_users, job.user_connection_id, job.user_connection_circuit_open)
                _toggle(
                    self._disabled_users, job.user_connection_id, not job.user_connection_enabled
                )

    def sync(self, targets: Iterable[TargetState]) -> None:
        """The database's whole view replaces ours; circuits this daemon opened and has not
        written yet stay open."""
        opened_here = {sid for sid, breaker in self._breakers.items() if breaker.open}
        targets = list(targets)
        services = [t for t in targets if t.scope == "service"]
        users = [t for t in targets if t.scope != "service"]
        self._open_services = {t.name for t in services if t.open and t.name} | opened_here
        self._disabled_services = {t.name for t in services if t.disabled and t.name}
        self._open_users = {t.id for t in users if t.open}
        self._disabled_users = {t.id for t in users if t.disabled}

    def written(self, settled: Settled) -> None:
        """What this daemon just wrote is the database's view now."""
        effects = settled.effects
        for service in effects.services:
            name = service.service_name
            if service.disable_reason is not None:
                self._disabled_services.add(name)
            if service.circuit is not None:
                self._breakers.pop(name, None)  # the database holds the circuit now
            if service.circuit is CircuitChange.OPEN:
                self._open_services.add(name)
            elif service.circuit is CircuitChange.CLOSE:
                self._open_services.discard(name)
        for user in effects.user_connections:
            if user.disable_reason is not None:
                self._disabled_users.add(user.user_connection_id)
            if user.circuit is CircuitChange.OPEN:
                self._open_users.add(user.user_connection_id)
            elif user.circuit is CircuitChange.CLOSE:
                self._open_users.discard(user.user_connection_id)

    def _breaker(self, job: Job) -> Breaker:
        return self._breakers.get(job.service_name, Breaker())


def _toggle(members: set[_Member], member: _Member, present: bool) -> None:
    if present:
        members.add(member)
    else:
        members.discard(member)
