"""Circuits: when a service's replays keep failing, its failures stop replaying on their own
and one probe at a time goes out instead, at growing intervals. Pure: the state machine,
the probe schedule and what counts as "the service is down"."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from selfheal.core.retry import jitter
from selfheal.models import ReplayResult

__all__ = [
    "Breaker",
    "CircuitPolicy",
    "after_replay",
    "probe_counts",
    "probe_delay",
    "service_down",
]


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    """``open_after`` consecutive failed replays to a service open its circuit; probes then
    go out after ``probe_base`` seconds, doubling each failed probe up to ``probe_cap``.
    A failed probe counts towards the disable thresholds at most once per ``count_every``
    seconds: probes are frequent so that a service that is back heals within seconds, and
    a threshold such as "9 network failures" should mean minutes of outage, not nine quick
    probes."""

    open_after: int = 5
    probe_base: float = 1.0
    probe_cap: float = 10.0
    count_every: float = 60.0

    def __post_init__(self) -> None:
        if self.open_after < 1:
            raise ValueError("open_after must be at least 1")
        if not 0 < self.probe_base <= self.probe_cap:
            raise ValueError("probes need 0 < probe_base <= probe_cap")
        if self.count_every < 0:
            raise ValueError("count_every must be at least 0")


@dataclass(frozen=True, slots=True)
class Breaker:
    """What one daemon has seen of a service's replays since the last success."""

    failures: int = 0  # consecutive replays that found the service down
    open: bool = False


def service_down(result: ReplayResult) -> bool:
    """Whether a replay's answer says the service (not the request) is failing: no HTTP
    answer at all, a timeout, or a 5xx. A 4xx or a 429 is the request's or the quota's."""
    status = result.status
    return status is None or status == 408 or 500 <= status <= 599


def after_replay(breaker: Breaker, result: ReplayResult, policy: CircuitPolicy) -> Breaker:
    """The breaker after one replay: a success closes it, a down answer counts towards
    opening it, anything else leaves it as it was."""
    if result.succeeded:
        return Breaker()
    if not service_down(result):
        return breaker
    failures = breaker.failures + 1
    return replace(breaker, failures=failures, open=breaker.open or failures >= policy.open_after)


def probe_delay(failed_probes: int, rand: float, policy: CircuitPolicy) -> float:
    """Seconds until the next probe: ``probe_base * 2**failed_probes``, capped, jittered to
    [50%, 100%] so that daemons and services do not probe in step."""
    exponent = min(max(failed_probes, 0), 30)
    return jitter(min(policy.probe_cap, policy.probe_base * 2.0**exponent), rand)


def probe_counts(last_counted: datetime | None, now: datetime, policy: CircuitPolicy) -> bool:
    """Whether a failed probe counts towards the thresholds: the first of the circuit
    does, then one per ``count_every`` seconds."""
    return last_counted is None or (now - last_counted).total_seconds() >= policy.count_every
