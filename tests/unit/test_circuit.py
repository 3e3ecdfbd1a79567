"""The circuit's state machine and probe schedule: pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfheal.core.circuit import (
    Breaker,
    CircuitPolicy,
    after_replay,
    probe_counts,
    probe_delay,
    service_down,
)
from selfheal.models import ReplayResult

POLICY = CircuitPolicy(open_after=3, probe_base=1.0, probe_cap=10.0)


def answer(status: int | None, error_code: str | None = None) -> ReplayResult:
    return ReplayResult(status, {}, error_code, "")


@pytest.mark.parametrize(
    ("result", "down"),
    [
        (answer(None, "ECONNREFUSED"), True),
        (answer(None, "ETIMEDOUT"), True),
        (answer(503), True),
        (answer(500), True),
        (answer(599), True),
        (answer(408), True),
        (answer(429), False),  # the quota, not the service: the rate-limit window holds it
        (answer(400), False),
        (answer(401), False),
        (answer(404), False),
        (answer(200), False),
    ],
)
def test_what_says_the_service_is_down(result: ReplayResult, down: bool) -> None:
    assert service_down(result) is down


def test_consecutive_down_answers_open_the_circuit() -> None:
    breaker = Breaker()
    for _ in range(2):
        breaker = after_replay(breaker, answer(503), POLICY)
        assert not breaker.open
    breaker = after_replay(breaker, answer(None, "ECONNRESET"), POLICY)
    assert breaker.open and breaker.failures == 3


def test_a_success_closes_it_and_a_client_error_changes_nothing() -> None:
    breaker = Breaker(failures=5, open=True)
    assert after_replay(breaker, answer(422), POLICY) == breaker
    assert after_replay(breaker, answer(200), POLICY) == Breaker()


def test_a_success_between_failures_starts_the_count_again() -> None:
    breaker = after_replay(after_replay(Breaker(), answer(503), POLICY), answer(503), POLICY)
    breaker = after_replay(breaker, answer(201), POLICY)
    breaker = after_replay(breaker, answer(503), POLICY)
    assert (breaker.failures, breaker.open) == (1, False)


def test_probes_go_out_at_growing_capped_intervals() -> None:
    assert [probe_delay(n, 1.0, POLICY) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert probe_delay(0, 0.0, POLICY) == 0.5  # jitter: half of the full delay at least


@given(failed=st.integers(min_value=-5, max_value=10_000), rand=st.floats(0.0, 1.0))
def test_a_probe_is_never_later_than_the_cap(failed: int, rand: float) -> None:
    assert 0.0 < probe_delay(failed, rand, POLICY) <= POLICY.probe_cap


def test_a_failed_probe_counts_at_most_once_a_minute() -> None:
    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    assert probe_counts(None, now, POLICY)  # the circuit's first
    assert not probe_counts(now - timedelta(seconds=59), now, POLICY)
    assert probe_counts(now - timedelta(seconds=60), now, POLICY)


@pytest.mark.parametrize(
    "kwargs", [{"open_after": 0}, {"probe_base": 0.0}, {"probe_base": 20.0, "probe_cap": 10.0}]
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be|need"):
        CircuitPolicy(**kwargs)  # type: ignore[arg-type]
