"""Planning, thresholds and the effects of outcomes: pure functions over frozen values."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from selfheal.core import plan as planning
from selfheal.core.circuit import CircuitPolicy
from selfheal.core.effects import fold_effects, settle
from selfheal.core.thresholds import Thresholds, crosses_threshold, threshold_reason
from selfheal.models import (
    Category,
    CircuitChange,
    Effects,
    Job,
    Outcome,
    Recipe,
    ServiceEffect,
    Status,
)

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
SERVICE = uuid.UUID(int=1)
USER_CONNECTION = uuid.UUID(int=2)
RATE = Category.RATE_LIMIT


def job(category: Category = Category.NETWORK, **fields: Any) -> Job:
    values: dict[str, Any] = {
        "record_id": uuid.uuid4(),
        "event_id": uuid.uuid4(),
        "service_name": "stripe",
        "category": category,
        "attempts": 0,
        "deferrals": 0,
        "endpoint": "https://api.stripe.com/v1/charges",
        "http_method": "POST",
        "payload": {"amount": 100},
        "response_headers": {},
        "failed_at": NOW,
        "service_id": SERVICE,
        "service_enabled": True,
        "oauth_config": None,
        "user_connection_id": None,
        "user_connection_enabled": True,
        "access_token": None,
        "refresh_token": None,
        "user_connection_failures": 0,
        "threshold_count": 1,
        "allowed_hosts": ("api.stripe.com",),
    }
    values.update(fields)
    return Job(**values)


# --- plan -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "recipe"),
    [
        (Category.AUTH, Recipe.REFRESH_AND_REPLAY),
        (Category.RATE_LIMIT, Recipe.AFTER_RATE_LIMIT),
        (Category.NETWORK, Recipe.BACKOFF),
        (Category.UNKNOWN, Recipe.BACKOFF),
    ],
)
def test_each_replayable_category_gets_its_recipe(category: Category, recipe: Recipe) -> None:
    planned = planning.plan(job(category), None)
    assert (planned.recipe, planned.outcome) == (recipe, None)


def test_data_failures_are_never_replayed_and_count_on_arrival() -> None:
    planned = planning.plan(job(Category.DATA), None)
    assert planned.recipe is None
    assert planned.outcome is not None
    assert planned.outcome.status is Status.PENDING
    assert planned.outcome.counted
    assert planned.outcome.action == "no automatic retry; admin review of the payload"


def test_a_disabled_service_gets_no_request() -> None:
    planned = planning.plan(job(service_enabled=False), None)
    assert planned.recipe is None and planned.outcome is not None
    assert planned.outcome.status is Status.DISABLED
    assert planned.outcome.action == "recovery disabled for stripe"


def test_a_disabled_user_connection_gets_no_request_whatever_the_category() -> None:
    disabled = {"user_connection_id": USER_CONNECTION, "user_connection_enabled": False}
    for category in (Category.AUTH, Category.NETWORK, Category.RATE_LIMIT):
        planned = planning.plan(job(category, **disabled), None)
        assert planned.outcome is not None and planned.outcome.status is Status.DISABLED
    # A failure of another user (or of none) of the same service goes on.
    assert planning.plan(job(), None).recipe is Recipe.BACKOFF


def test_an_open_circuit_holds_a_job_without_a_request() -> None:
    planned = planning.plan(job(service_circuit_open=True, circuit_next_probe_at=NOW), None)
    assert planned.outcome is not None
    assert (planned.outcome.held, planned.outcome.next_retry_at) == (True, NOW)
    assert planned.outcome.action.startswith("waiting for stripe to recover")
    assert planned.outcome.counted is False  # the circuit counts, through its probes


def test_the_probe_of_an_open_circuit_goes_out() -> None:
    planned = planning.plan(job(service_circuit_open=True, probe=True), None)
    assert planned.recipe is Recipe.BACKOFF


def test_a_user_connection_circuit_holds_only_that_connections_auth_failures() -> None:
    user_a = {"user_connection_id": USER_CONNECTION, "user_connection_circuit_open": True}
    assert planning.plan(job(Category.AUTH, **user_a), None).outcome is not None
    assert planning.plan(job(Category.NETWORK, **user_a), None).recipe is Recipe.BACKOFF
    assert planning.plan(job(Category.AUTH), None).recipe is Recipe.REFRESH_AND_REPLAY


TOKEN = {"access_token": "at-1", "user_connection_id": USER_CONNECTION}


@pytest.mark.parametrize(
    ("endpoint", "allowed", "sent"),
    [
        ("https://api.stripe.com/v1/charges", ("api.stripe.com",), True),
        ("https://API.Stripe.com/v1", ("api.stripe.com",), True),  # names are case-blind
        ("https://api.stripe.com:8443/v1", ("api.stripe.com",), False),  # a name: 443 only
        ("http://api.stripe.com/v1", ("api.stripe.com",), False),  # never in cleartext
        ("https://api.stripe.com:8443/v1", ("api.stripe.com:8443",), True),
        ("https://api.stripe.com:8443/v1", ("api.stripe.com:443",), False),
        ("https://api.stripe.com/v1", ("api.stripe.com:443",), True),  # the default port
        ("http://127.0.0.1:9000/x", ("127.0.0.1:9000",), True),
        ("http://127.0.0.1:9001/x", ("127.0.0.1:9000",), False),
        ("https://evil.example/steal", ("api.stripe.com",), False),
        ("https://api.stripe.com.evil.example/", ("api.stripe.com",), False),
        ("https://api.stripe.com/v1", None, False),  # no list: no token goes anywhere
        ("http://[::1]:9000/x", ("[::1]:9000",), True),
    ],
)
def test_a_token_goes_only_to_an_allowed_host(
    endpoint: str, allowed: tuple[str, ...] | None, sent: bool
) -> None:
    planned = planning.plan(job(endpoint=endpoint, allowed_hosts=allowed, **TOKEN), None)
    assert (planned.recipe is not None) is sent
    if not sent:
        assert planned.outcome is not None
        assert "allowed_hosts" in planned.outcome.action
        assert "UPDATE integrations_master SET allowed_hosts" in planned.outcome.action


def test_a_replay_without_a_token_needs_no_list() -> None:
    planned = planning.plan(job(endpoint="https://hooks.example/x", allowed_hosts=None), None)
    assert planned.recipe is Recipe.BACKOFF


def test_an_auth_replay_of_a_user_connection_always_carries_a_token() -> None:
    refreshed = job(
        Category.AUTH, endpoint="https://evil.example/", user_connection_id=USER_CONNECTION
    )
    planned = planning.plan(refreshed, None)
    assert planned.outcome is not None and "not sent" in planned.outcome.action


def test_an_event_that_cannot_be_replayed_waits_for_an_operator() -> None:
    planned = planning.plan(job(endpoint=None), "the event has no endpoint")
    assert planned.outcome is not None
    assert planned.outcome.action == "cannot replay: the event has no endpoint"
    assert planned.outcome.counted  # healing cannot fix it


def test_a_deleted_event_is_closed_without_a_request() -> None:
    planned = planning.plan(job(event_deleted=True), None)
    assert planned.outcome is not None
    assert planned.outcome.action == "the event was deleted; nothing to replay"


# --- outcomes -------------------------------------------------------------------------------


def test_later_schedules_deferrable_categories_and_counts_the_deferral() -> None:
    outcome = planning.later(
        job(deferrals=2),
        Category.NETWORK,
        "3 replays failed",
        3,
        None,
        now=NOW,
        rand=1.0,
        max_wait=3600,
    )
    assert outcome.next_retry_at == NOW + timedelta(seconds=240)
    assert (outcome.deferrals, outcome.action) == (3, "3 replays failed; retry scheduled")


def test_later_leaves_unknown_to_an_operator() -> None:
    outcome = planning.later(
        job(Category.UNKNOWN),
        Category.UNKNOWN,
        "1 replays failed",
        1,
        None,
        now=NOW,
        rand=0.5,
        max_wait=3600,
    )
    assert outcome.next_retry_at is None
    assert outcome.action == "1 replays failed; admin review"


def test_a_rate_limit_window_holds_the_service() -> None:
    outcome = planning.rate_limit_window(job(Category.RATE_LIMIT), 30.0, 0, None, now=NOW)
    assert outcome.next_retry_at == outcome.rate_limited_until == NOW + timedelta(seconds=30)


def test_auth_failures_disable_the_user_connection_at_its_threshold() -> None:
    def failed(failures: int) -> Outcome:
        refreshed = job(
            Category.AUTH, user_connection_id=USER_CONNECTION, user_connection_failures=failures
        )
        return planning.auth_failed(refreshed, "still unauthorized", 3, None)

    [below] = settled([failed(1)])
    assert (below.status, below.user_connection_failed) == (Status.PENDING, True)
    [at] = settled([failed(2)])
    assert at.status is Status.DISABLED
    assert at.disable_user_connection == "3 consecutive auth failures after refresh attempts"
    assert at.action == "still unauthorized; user connection disabled"


def test_concurrent_auth_failures_of_one_user_connection_count_one_by_one() -> None:
    same = {"user_connection_id": USER_CONNECTION, "user_connection_failures": 0}
    outcomes = settled(
        [
            planning.auth_failed(at(n, category=Category.AUTH, **same), "no", 3, None)
            for n in range(4)
        ]
    )
    assert [o.status for o in outcomes] == [Status.PENDING] * 2 + [Status.DISABLED] * 2


def test_an_auth_failure_without_a_user_connection_counts_against_nothing() -> None:
    outcome = planning.auth_failed(job(Category.AUTH), "no user connection", 0, None)
    assert (outcome.status, outcome.user_connection_failed) == (Status.PENDING, False)


def test_a_crashed_recovery_is_retried_later() -> None:
    outcome = planning.crashed(job(deferrals=1), "KeyError", now=NOW)
    assert outcome.next_retry_at == NOW + planning.CRASH_RETRY
    assert (outcome.deferrals, outcome.action) == (
        2,
        "recovery crashed (KeyError); retry scheduled",
    )


# --- effects --------------------------------------------------------------------------------


def at(minutes: int, **fields: Any) -> Job:
    return job(failed_at=NOW + timedelta(minutes=minutes), **fields)


POLICY = CircuitPolicy()


def fold(outcomes: list[Outcome]) -> Effects:
    return fold_effects(outcomes, POLICY, now=NOW, rand=1.0)


def settled(outcomes: list[Outcome], thresholds: Thresholds | None = None) -> list[Outcome]:
    return list(settle(outcomes, thresholds or Thresholds(), POLICY, now=NOW, rand=1.0).outcomes)


def unhealed(job: Job) -> Outcome:
    return Outcome(job, Status.PENDING, "3 replays failed", unhealed=True)


def test_unhealed_failures_count_against_their_service() -> None:
    effects = fold(
        [unhealed(at(1)), unhealed(at(2)), Outcome(at(3), Status.PENDING, "held", held=True)]
    )
    assert effects.services == (ServiceEffect(SERVICE, "stripe", failed=2),)
    assert effects.user_connections == ()


def test_a_success_resets_the_count_and_closes_an_open_circuit() -> None:
    effects = fold(
        [
            unhealed(at(3)),
            unhealed(at(1)),
            Outcome(at(2), Status.RESOLVED, "healed"),
        ]
    )
    # No circuit was open: nothing to close (a close costs the write a look for waiters).
    assert effects.services == (ServiceEffect(SERVICE, "stripe", reset=True, failed=1),)
    [effect] = fold([Outcome(at(2, service_circuit_open=True), Status.RESOLVED, "probe")]).services
    assert effect.circuit is CircuitChange.CLOSE


def test_auth_and_disabled_outcomes_do_not_count_against_the_service() -> None:
    effects = fold(
        [
            Outcome(at(1, category=Category.AUTH), Status.PENDING, "auth", unhealed=True),
            Outcome(at(2), Status.DISABLED, "no request"),
        ]
    )
    assert effects.services == (ServiceEffect(SERVICE, "stripe"),)


def test_the_first_disable_reason_wins_and_the_longest_window_holds() -> None:
    soon, late = NOW + timedelta(seconds=30), NOW + timedelta(seconds=90)
    effects = fold(
        [
            Outcome(at(1), Status.DISABLED, "a", disable_service="first"),
            Outcome(at(2), Status.DISABLED, "b", disable_service="second"),
            Outcome(at(3, category=RATE), Status.PENDING, "c", rate_limited_until=late),
            Outcome(at(4, category=RATE), Status.PENDING, "d", rate_limited_until=soon),
        ]
    )
    [service] = effects.services
    assert (service.disable_reason, service.rate_limited_until) == ("first", late)


def test_user_connection_effects_follow_its_auth_outcomes() -> None:
    user = {"user_connection_id": USER_CONNECTION, "category": Category.AUTH}
    effects = fold(
        [
            Outcome(at(1, **user), Status.PENDING, "a", user_connection_failed=True),
            Outcome(at(2, **user), Status.RESOLVED, "healed"),
            Outcome(at(3, **user), Status.PENDING, "b", user_connection_failed=True),
            Outcome(
                at(4, **user),
                Status.DISABLED,
                "c",
                user_connection_failed=True,
                disable_user_connection="3 consecutive auth failures after refresh attempts",
            ),
        ]
    )
    [effect] = effects.user_connections
    assert (effect.reset, effect.failed, effect.errored) == (True, 2, True)
    assert effect.disable_reason == "3 consecutive auth failures after refresh attempts"


def test_a_service_without_an_id_has_no_effect() -> None:
    assert fold([Outcome(at(1, service_id=None), Status.PENDING, "x")]).services == ()


# --- circuits in the effects ----------------------------------------------------------------


def test_a_recovery_that_found_the_service_down_opens_its_circuit() -> None:
    probe_at = NOW + timedelta(seconds=1)
    [effect] = fold([planning.circuit_opened(at(1), 5, None, probe_at)]).services
    assert (effect.circuit, effect.next_probe_at) == (CircuitChange.OPEN, probe_at)


def test_a_failed_probe_pushes_the_next_one_further_off() -> None:
    probe = at(1, service_circuit_open=True, probe=True, service_failed_probes=2)
    outcome = Outcome(probe, Status.PENDING, "probe failed", held=True, probe_failed=True)
    [effect] = fold([outcome]).services
    assert effect.circuit is CircuitChange.PROBE_FAILED
    assert effect.next_probe_at == NOW + timedelta(seconds=8)  # 1 s * 2**(2 + 1), rand 1.0


def test_an_auth_failure_opens_only_its_user_connections_circuit() -> None:
    failed = planning.auth_failed(
        job(Category.AUTH, user_connection_id=USER_CONNECTION), "still unauthorized", 3, None
    )
    effects = fold([failed])
    assert effects.services == (ServiceEffect(SERVICE, "stripe"),)
    [user] = effects.user_connections
    assert user.circuit is CircuitChange.OPEN
    assert failed.held


# --- thresholds count what healing could not fix ------------------------------------------


def test_the_failure_that_reaches_the_threshold_disables_the_service() -> None:
    outcomes = settled([unhealed(at(n, threshold_count=6)) for n in range(4)])
    assert [o.status for o in outcomes] == [Status.PENDING, Status.PENDING] + [Status.DISABLED] * 2
    assert outcomes[2].disable_service == "9 network failures in 60 minutes"
    assert (
        outcomes[2].action == "3 replays failed; service disabled: 9 network failures in 60 minutes"
    )


def test_failures_waiting_behind_a_circuit_count_only_through_its_probes() -> None:
    waiting = [
        Outcome(at(n, threshold_count=8), Status.PENDING, "held", held=True) for n in range(50)
    ]
    assert {o.status for o in settled(waiting)} == {Status.PENDING}
    probe = at(60, threshold_count=8, service_circuit_open=True, probe=True)
    [failed] = settled([planning.probe_failed(probe, 1, None, NOW, counts=True)])
    assert failed.status is Status.DISABLED
    # A failed probe that comes within a minute of the last counted one does not count.
    [quick] = settled([planning.probe_failed(probe, 1, None, NOW, counts=False)])
    assert quick.status is Status.PENDING and not quick.counted


def test_a_failure_counts_once_however_often_it_is_retried() -> None:
    again = unhealed(at(1, threshold_count=8, counted_before=True))
    assert not again.counted
    assert settled([again])[0].status is Status.PENDING


def test_healed_failures_never_count() -> None:
    healed = [Outcome(at(n, threshold_count=8), Status.RESOLVED, "replayed") for n in range(20)]
    assert {o.status for o in settled(healed)} == {Status.RESOLVED}


def test_rate_limits_never_disable() -> None:
    window = planning.later(
        at(1, category=RATE, threshold_count=10_000),
        RATE,
        "3 replays still rate limited",
        3,
        None,
        now=NOW,
        rand=0.5,
        max_wait=3600,
        unhealed=False,
    )
    assert settled([window])[0].status is Status.PENDING


def test_settings_thresholds_steer_the_decision() -> None:
    [outcome] = settled([unhealed(at(1, threshold_count=1))], Thresholds(network_failures=2))
    assert outcome.disable_service == "2 network failures in 60 minutes"


def test_frozen_values_stay_frozen() -> None:
    with pytest.raises(AttributeError):
        job().attempts = 3  # type: ignore[misc]
    assert replace(job(), attempts=3).attempts == 3


# --- thresholds ----------------------------------------------------------------------------


def test_threshold_defaults() -> None:
    thresholds = Thresholds()
    assert thresholds.auth_consecutive == 3
    assert thresholds.network_window == timedelta(minutes=60)
    assert thresholds.network_failures == 9
    assert thresholds.data_consecutive == 5
    assert thresholds.unknown_consecutive == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"auth_consecutive": 0},
        {"network_failures": 0},
        {"data_consecutive": -1},
        {"unknown_consecutive": 0},
        {"network_window": timedelta(0)},
    ],
)
def test_thresholds_reject_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Thresholds(**kwargs)  # type: ignore[arg-type]


def test_thresholds_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Thresholds().auth_consecutive = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("category", "count", "expected"),
    [
        (Category.AUTH, 1, False),
        (Category.AUTH, 2, False),
        (Category.AUTH, 3, True),  # consecutive failures of the user connection
        (Category.NETWORK, 8, False),
        (Category.NETWORK, 9, True),  # failures of the service within the window
        (Category.NETWORK, 10, True),
        (Category.DATA, 4, False),
        (Category.DATA, 5, True),
        (Category.UNKNOWN, 4, False),
        (Category.UNKNOWN, 5, True),
        (Category.UNKNOWN, 6, True),
        (Category.RATE_LIMIT, 1000, False),
        (Category.RATE_LIMIT, 0, False),
    ],
)
def test_crosses_threshold_boundaries(category: Category, count: int, expected: bool) -> None:
    assert crosses_threshold(category, count, Thresholds()) is expected


def test_crosses_threshold_uses_the_given_thresholds() -> None:
    strict = Thresholds(
        auth_consecutive=1, network_failures=2, data_consecutive=1, unknown_consecutive=2
    )
    assert crosses_threshold(Category.AUTH, 1, strict)
    assert crosses_threshold(Category.NETWORK, 2, strict)
    assert not crosses_threshold(Category.NETWORK, 1, strict)
    assert crosses_threshold(Category.DATA, 1, strict)
    assert not crosses_threshold(Category.UNKNOWN, 1, strict)


@pytest.mark.parametrize(
    ("category", "reason"),
    [
        (Category.AUTH, "3 consecutive auth failures after refresh attempts"),
        (Category.NETWORK, "9 network failures in 60 minutes"),
        (Category.DATA, "5 consecutive data failures"),
        (Category.UNKNOWN, "5 consecutive unknown failures"),
    ],
)
def test_threshold_reason_names_the_count_that_crossed_it(category: Category, reason: str) -> None:
    assert threshold_reason(category, Thresholds()) == reason
