"""Circuits: when a service's replays keep failing, its failures stop replaying on their own
and one probe at a time goes out instead, at growing intervals. Pure: the state machine,
the probe schedule and what counts as "the service is down"."""

from __future__ import annotations

from dataclasses import dataclass, replace

from selfheal.core.retry import jitter
from selfheal.models import ReplayResult

__all__ = ["Breaker", "CircuitPolicy", "after_replay", "probe_delay", "service_down"]


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    """``open_after`` consecutive failed replays to a service open its circuit; probes then
    go out after ``probe_base`` seconds, doubling each failed probe up to ``probe_cap``."""

    open_after: int = 5
    probe_base: float = 1.0
    probe_cap: float = 10.0

    def __post_init__(self) -> None:
        if self.open_after < 1:
            raise ValueError("open_after must be at least 1")
        if not 0 < self.probe_base <= self.probe_cap:
            raise ValueError("probes need 0 < probe_base <= probe_cap")


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
