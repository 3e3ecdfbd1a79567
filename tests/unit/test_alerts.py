"""Alert groups, their episodes and messages, the notices a batch of outcomes leaves, and
what a webhook's answer means: pure functions over frozen values."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfheal.core.alerts import (
    FINGERPRINT_VERSION,
    Advanced,
    AlertPolicy,
    Attempted,
    DeliveryPolicy,
    WebhookAnswer,
    advance,
    after_delivery,
    alert_code,
    fingerprint,
    touches,
)
from selfheal.core.circuit import CircuitPolicy
from selfheal.core.effects import settle
from selfheal.core.thresholds import Thresholds
from selfheal.models import (
    Alert,
    AlertGroup,
    AlertKind,
    Category,
    Channel,
    Effects,
    GroupTouch,
    Job,
    Outcome,
    Settled,
    Status,
)

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
WAIT = timedelta(seconds=30)
INTERVAL = timedelta(seconds=300)
POLICY = AlertPolicy(group_wait=WAIT, group_interval=INTERVAL)
SERVICE = uuid.UUID(int=1)
USER_CONNECTION = uuid.UUID(int=2)
USER = uuid.UUID(int=3)
EVENT = uuid.UUID(int=7)
GROUP = fingerprint("stripe", "network", "http_503")
ERROR = "HTTP 503 upstream unavailable"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- alert_code -----------------------------------------------------------------------------


def test_codes_are_lower_case_and_separators_become_underscores() -> None:
    assert alert_code("INVALID_AUTH", 401) == "invalid_auth"
    assert alert_code("  Rate Limit / Exceeded ", 429) == "rate_limit_exceeded"


def test_different_kinds_of_failure_get_different_codes() -> None:
    assert alert_code("invalid_auth", 401) != alert_code("token_revoked", 401)


def test_request_ids_after_an_underscore_do_not_split_a_group() -> None:
    assert alert_code("ERR req_8f3a9b2c1d4e5f60", 500) == alert_code(
        "ERR req_0a1b2c3d4e5f6071", 500
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("object 8f3a9b2c1d4e5f60 not found", "object 0a1b2c3d4e5f6071 not found"),
        (
            "no such record 123e4567-e89b-12d3-a456-426614174000",
            "no such record 00000000-0000-4000-8000-00000000002a",
        ),
        ("order 1234567 rejected", "order 7654321 rejected"),
        ("req_12345678", "req_87654321"),
    ],
)
def test_ids_and_long_numbers_in_a_code_do_not_split_a_group(first: str, second: str) -> None:
    assert alert_code(first, 500) == alert_code(second, 500)
    assert not re.search(r"\d{6}", alert_code(first, 500))


def test_five_digit_provider_codes_are_kept() -> None:
    assert alert_code("20003", 401) == "20003"  # Twilio: authentication error
    assert alert_code("Error 20003", 401) != alert_code("Error 20404", 404)


def test_a_code_is_at_most_64_characters() -> None:
    assert len(alert_code("x" * 10_000, 500)) == 64


def test_without_a_code_the_http_status_names_the_failure() -> None:
    assert alert_code(None, 503) == "http_503"
    assert alert_code("", 503) == "http_503"
    assert alert_code(" /// ", 503) == "http_503"  # nothing left of it
    assert alert_code(None, None) == "none"


@given(
    st.one_of(st.none(), st.text(), st.text(alphabet="0123456789abcdef-_ ", min_size=1)),
    st.one_of(st.none(), st.integers(100, 599)),
)
def test_any_text_gives_a_short_plain_code(error_code: str | None, status: int | None) -> None:
    code = alert_code(error_code, status)
    assert re.fullmatch(r"[a-z0-9_.:#-]{1,64}", code)


# --- fingerprint ----------------------------------------------------------------------------


def test_fingerprints_are_versioned_and_of_fixed_length() -> None:
    short = fingerprint("stripe", "network", "http_503")
    long = fingerprint("s" * 10_000, "network", "http_503")
    assert short.startswith(f"{FINGERPRINT_VERSION}:") and FINGERPRINT_VERSION == "v1"
    assert len(long) == len(short) < 64


def test_fingerprints_differ_by_service_category_and_code() -> None:
    base = fingerprint("stripe", "network", "http_503")
    assert fingerprint("stripe", "network", "http_503") == base
    others = {
        fingerprint("twilio", "network", "http_503"),
        fingerprint("stripe", "auth", "http_503"),
        fingerprint("stripe", "network", "http_502"),
    }
    assert len(others) == 3 and base not in others


# --- advance: episodes ----------------------------------------------------------------------


def group(**fields: Any) -> AlertGroup:
    """A group whose first failure came in at T0, not yet announced."""
    values: dict[str, Any] = {
        "fingerprint": GROUP,
        "service_name": "stripe",
        "category": "network",
        "error_code": "http_503",
        "failures": 1,
        "opened_at": T0,
        "episode_base": 0,
        "sample_event_id": EVENT,
        "sample_error": ERROR,
        "sample_plan": "retry with backoff",
        "sample_at": T0,
        "alerted_at": None,
        "reported_failures": 0,
        "reported_at": None,
        "closed_at": None,
        "regression": False,
        "resolution": None,
        "notices": {},
        "noticed": {},
        "next_check_at": T0 + WAIT,
    }
    values.update(fields)
    return AlertGroup(**values)


def announced(**fields: Any) -> AlertGroup:
    """A group announced when its wait was over, with one failure then."""
    values: dict[str, Any] = {
        "alerted_at": at(30),
        "reported_failures": 1,
        "reported_at": at(30),
        "next_check_at": None,
    }
    return group(**{**values, **fields})


def look(g: AlertGroup, seconds: float) -> Advanced:
    return advance(g, POLICY, at(seconds))


def kinds(advanced: Advanced) -> list[AlertKind]:
    return [a.kind for a in advanced.alerts]


def failed_again(g: AlertGroup, seconds: float, event_id: uuid.UUID) -> AlertGroup:
    """What the database makes of a closed group when a new failure arrives."""
    return replace(
        g,
        failures=g.failures + 1,
        healed=False,
        sample_event_id=event_id,
        sample_error="HTTP 502 bad gateway",
        sample_plan="retry with backoff",
        sample_at=at(seconds),
        next_check_at=at(seconds),
    )


def test_a_new_group_says_nothing_before_its_wait_is_over() -> None:
    looked = look(group(failures=2), 10)
    assert looked.alerts == ()
    assert looked.group.alerted_at is None and looked.group.closed_at is None
    assert looked.group.next_check_at == T0 + WAIT


def test_an_unhealed_group_is_announced_once_its_wait_is_over() -> None:
    looked = look(group(failures=2, sample_status="pending"), 30)
    assert looked.alerts == (
        Alert(
            AlertKind.FAILURE,
            "stripe",
            "network",
            error=ERROR,
            at=T0,
            event_id=EVENT,
            failures=2,
            plan="retry with backoff",
            status="pending",
            regression=False,
        ),
    )
    assert looked.group.alerted_at == at(30)
    assert looked.group.next_check_at is None  # nothing more to say until it changes
    assert look(looked.group, 45).alerts == ()
    assert look(looked.group, 4000).alerts == ()


def test_a_group_that_heals_within_its_wait_closes_without_a_word() -> None:
    healed = group(failures=3, healed=True)
    early = look(healed, 10)
    assert early.alerts == () and early.group.closed_at is None
    looked = look(early.group, 30)
    assert looked.alerts == ()
    closed = looked.group
    assert closed.closed_at == at(30)
    assert closed.episode_base == closed.failures == 3
    assert (closed.sample_event_id, closed.sample_error, closed.sample_at) == (None, None, None)
    assert closed.next_check_at is None
    assert look(closed, 1000).alerts == ()  # a closed group with no new failure stays quiet


def test_more_failures_of_an_announced_group_come_in_one_digest_per_interval() -> None:
    grown = announced(failures=4)
    early = look(grown, 100)
    assert early.alerts == ()
    assert early.group.next_check_at == at(30) + INTERVAL

    looked = look(early.group, 330)
    assert looked.alerts == (
        Alert(
            AlertKind.DIGEST,
            "stripe",
            "network",
            error=ERROR,
            failures=4,
            new_failures=3,
            since=at(30),
        ),
    )
    assert looked.group.next_check_at is None
    assert look(looked.group, 2000).alerts == ()  # no new failures, no digest

    again = replace(looked.group, failures=6)
    assert look(again, 400).alerts == ()
    [digest] = look(again, 630).alerts
    assert (digest.new_failures, digest.failures, digest.since) == (2, 6, at(330))


def test_an_announced_group_that_healed_sends_one_recovered_message_and_closes() -> None:
    healed = announced(failures=5, episode_base=2, healed=True, resolution="replayed")
    looked = look(healed, 130)
    assert looked.alerts == (
        Alert(
            AlertKind.RECOVERED,
            "stripe",
            "network",
            error=ERROR,
            action="replayed",
            failures=3,
            recovered_after=130.0,
        ),
    )
    assert looked.group.closed_at == at(130)
    assert looked.group.episode_base == 5
    assert look(looked.group, 500).alerts == ()
    [without_resolution] = look(replace(healed, resolution=None), 130).alerts
    assert without_resolution.action == "recovered"


def test_a_group_that_fails_again_after_an_announced_episode_is_a_regression() -> None:
    first = look(group(), 30).group
    closed = look(replace(first, healed=True), 130).group
    assert closed.closed_at == at(130)

    second_event = uuid.UUID(int=8)
    reopened = look(failed_again(closed, 600, second_event), 610)
    assert reopened.alerts == ()
    assert reopened.group.closed_at is None
    assert reopened.group.opened_at == at(600)
    assert reopened.group.next_check_at == at(630)

    [failure] = look(reopened.group, 630).alerts
    assert failure.kind is AlertKind.FAILURE and failure.regression
    assert (failure.event_id, failure.error, failure.at) == (
        second_event,
        "HTTP 502 bad gateway",
        at(600),
    )
    assert failure.failures == 1  # this episode's, not the group's two


def test_a_group_that_closed_silently_reopens_without_regression() -> None:
    closed = look(group(healed=True), 30).group
    reopened = look(failed_again(closed, 600, uuid.UUID(int=8)), 630)
    [failure] = reopened.alerts
    assert failure.kind is AlertKind.FAILURE
    assert failure.regression is False


def test_a_regression_that_heals_silently_leaves_the_next_episode_no_regression() -> None:
    announced_once = look(replace(look(group(), 30).group, healed=True), 130).group
    quiet = look(replace(failed_again(announced_once, 600, EVENT), healed=True), 630).group
    assert quiet.closed_at == at(630)
    [failure] = look(failed_again(quiet, 900, EVENT), 930).alerts
    assert failure.regression is False


# --- advance: disables ----------------------------------------------------------------------

SERVICE_DISABLED = {
    "disabled:service": {"reason": "9 network failures in 60 minutes", "failures": 9}
}


def test_a_disable_goes_out_at_once_and_is_the_announcement() -> None:
    looked = look(group(failures=9, notices=SERVICE_DISABLED), 5)
    assert looked.alerts == (
        Alert(
            AlertKind.DISABLED,
            "stripe",
            "network",
            error=ERROR,
            reason="9 network failures in 60 minutes",
            failures=9,
            user_ids=(),
            more_user_ids=0,
        ),
    )
    assert looked.group.alerted_at == at(5)
    assert looked.group.notices == {}
    assert look(looked.group, 60).alerts == ()  # no Failure message after it
    # It was announced: when it heals, admins hear of it.
    assert kinds(look(replace(looked.group, healed=True), 400)) == [AlertKind.RECOVERED]


def test_a_disable_of_an_announced_or_closed_group_still_goes_out() -> None:
    assert kinds(look(announced(notices=SERVICE_DISABLED), 100)) == [AlertKind.DISABLED]
    closed = look(group(healed=True), 30).group
    looked = look(replace(closed, notices=SERVICE_DISABLED), 100)
    assert kinds(looked) == [AlertKind.DISABLED]
    assert looked.group.closed_at == closed.closed_at
    assert looked.group.notices == {}


def test_user_connection_disables_are_listed_in_one_message() -> None:
    users = [uuid.UUID(int=n) for n in range(1, 13)]
    notices = {
        f"disabled:user:{u}": {
            "reason": "3 consecutive auth failures after refresh attempts",
            "failures": 3,
            "user_id": str(u),
        }
        for u in reversed(users)
    }
    looked = look(group(category="auth", notices={**notices, **SERVICE_DISABLED}), 5)
    service, connections = looked.alerts
    assert service.kind is connections.kind is AlertKind.DISABLED
    assert service.user_ids == ()
    assert connections.reason == "3 consecutive auth failures after refresh attempts"
    assert connections.user_ids == tuple(str(u) for u in users[:10])
    assert connections.more_user_ids == 2


# --- advance: recovery attempts -------------------------------------------------------------

TOKEN_REFRESH = {
    "attempt:token_refresh": {
        "action": "refresh the access token",
        "attempt": 1,
        "max_attempts": 3,
        "error": "HTTP 401 invalid_token",
    }
}


def circuit_opened(error: str = "HTTP 503") -> dict[str, dict[str, Any]]:
    return {
        "attempt:circuit_opened": {
            "action": "hold until stripe recovers",
            "attempt": 3,
            "max_attempts": 3,
            "error": error,
        }
    }


def test_recovery_attempts_wait_for_the_announcement() -> None:
    early = look(group(notices=TOKEN_REFRESH), 5)
    assert early.alerts == ()
    assert early.group.notices == TOKEN_REFRESH

    looked = look(early.group, 30)
    assert kinds(looked) == [AlertKind.FAILURE, AlertKind.ATTEMPT]
    assert looked.alerts[1] == Alert(
        AlertKind.ATTEMPT,
        "stripe",
        "network",
        error="HTTP 401 invalid_token",
        action="refresh the access token",
        attempt=1,
        max_attempts=3,
    )
    assert looked.group.notices == {}
    assert looked.group.noticed == {"attempt:token_refresh": at(30).isoformat()}


def test_recovery_attempts_of_a_group_that_heals_silently_are_dropped() -> None:
    looked = look(group(healed=True, notices=TOKEN_REFRESH), 30)
    assert looked.alerts == ()
    assert looked.group.notices == {}


def test_recovery_attempts_of_a_closed_group_are_dropped() -> None:
    closed = look(group(healed=True), 30).group
    looked = look(replace(closed, notices=TOKEN_REFRESH), 100)
    assert looked.alerts == () and looked.group.notices == {}


def test_each_kind_of_attempt_goes_out_at_most_once_per_interval() -> None:
    first = look(announced(notices=circuit_opened()), 60)
    assert kinds(first) == [AlertKind.ATTEMPT]

    again = replace(first.group, notices={**circuit_opened(), **TOKEN_REFRESH})
    looked = look(again, 200)
    assert [a.action for a in looked.alerts] == ["refresh the access token"]
    assert looked.group.notices == {}  # the early one is dropped, not kept for later

    later = look(replace(looked.group, notices=circuit_opened()), 360)
    assert [a.action for a in later.alerts] == ["hold until stripe recovers"]
    assert later.group.noticed["attempt:circuit_opened"] == at(360).isoformat()


def test_an_attempt_without_an_error_names_the_groups_error() -> None:
    [attempt] = look(announced(notices=circuit_opened(error="")), 60).alerts
    assert attempt.error == ERROR


# --- touches: what a batch tells the groups -------------------------------------------------


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
        "payload": '{"amount": 100}',
        "response_headers": "{}",
        "failed_at": T0,
        "service_id": SERVICE,
        "service_enabled": True,
        "oauth_config": None,
        "user_connection_id": None,
        "user_connection_enabled": True,
        "access_token": None,
        "refresh_token": None,
        "user_connection_failures": 0,
        "threshold_count": 0,
        "allowed_hosts": ("api.stripe.com",),
        "alert_group": GROUP,
    }
    values.update(fields)
    return Job(**values)


def batch(*outcomes: Outcome) -> Settled:
    return Settled(outcomes, Effects((), ()))


def test_a_healed_failure_tells_its_group_how_it_healed() -> None:
    healed = Outcome(job(), Status.RESOLVED, "replayed after 2 s", attempts=1)
    assert touches(batch(healed)) == (
        GroupTouch(GROUP, "stripe", "network", resolution="replayed after 2 s", notices={}),
    )


def test_outcomes_with_nothing_to_tell_touch_no_group() -> None:
    assert touches(batch()) == ()
    pending = Outcome(job(), Status.PENDING, "retry in 4 s", attempts=1)
    held = Outcome(job(), Status.PENDING, "waiting for stripe", held=True)
    old = Outcome(job(alert_group=None), Status.RESOLVED, "replayed")
    assert touches(batch(pending, held, old)) == ()


def test_a_failure_recorded_before_alerts_existed_notices_under_its_services_group() -> None:
    refreshed = Outcome(
        job(Category.AUTH, alert_group=None),
        Status.RESOLVED,
        "token refreshed; replayed",
        attempts=1,
        reason="HTTP 401 invalid_token",
        token_refreshed=True,
    )
    [touch] = touches(batch(refreshed))
    assert touch.fingerprint == fingerprint("stripe", "auth", "none")
    assert touch.resolution is None  # no episode of its own to close
    assert touch.notices == {
        "attempt:token_refresh": {
            "action": "token refreshed; replayed",
            "attempt": 1,
            "max_attempts": 3,
            "error": "HTTP 401 invalid_token",
        }
    }


def test_a_disabled_service_is_noticed_with_its_reason_and_count() -> None:
    disabled = Outcome(
        job(),
        Status.DISABLED,
        "3 replays failed; service disabled: 9 network failures in 60 minutes",
        disable_service="9 network failures in 60 minutes",
        failure_count=9,
    )
    [touch] = touches(batch(disabled))
    assert touch.notices == {
        "disabled:service": {"reason": "9 network failures in 60 minutes", "failures": 9}
    }


def test_a_disabled_user_connection_is_noticed_under_its_user() -> None:
    reason = "3 consecutive auth failures after refresh attempts"
    auth = {"user_connection_id": USER_CONNECTION, "user_id": USER}
    disabled = Outcome(
        job(Category.AUTH, **auth),
        Status.DISABLED,
        "still unauthorized; user connection disabled",
        disable_user_connection=reason,
        failure_count=3,
    )
    [touch] = touches(batch(disabled))
    assert touch.notices == {
        f"disabled:user:{USER}": {"reason": reason, "failures": 3, "user_id": str(USER)}
    }
    # Without the event's user, the user connection names it.
    no_user = replace(disabled, job=job(Category.AUTH, user_connection_id=USER_CONNECTION))
    [touch] = touches(batch(no_user))
    assert list(touch.notices) == [f"disabled:user:{USER_CONNECTION}"]


def test_an_opened_circuit_and_a_disable_warning_are_noticed_as_attempts() -> None:
    opened = Outcome(
        job(),
        Status.PENDING,
        "stripe is down; holding its failures",
        attempts=3,
        reason="HTTP 503",
        opens_circuit=True,
        failure_count=8,
        disable_warning="one more unhealed network failure disables stripe",
    )
    [touch] = touches(batch(opened))
    assert touch.resolution is None
    assert touch.notices == {
        "attempt:circuit_opened": {
            "action": "stripe is down; holding its failures",
            "attempt": 3,
            "max_attempts": 3,
            "error": "HTTP 503",
        },
        "attempt:disable_warning": {
            "action": "one more unhealed network failure disables stripe",
            "attempt": 8,
            "max_attempts": 9,
            "error": "HTTP 503",
        },
    }


def test_outcomes_of_one_group_merge_into_one_touch() -> None:
    other = fingerprint("stripe", "network", "http_502")
    opened = Outcome(job(), Status.PENDING, "stripe is down", attempts=3, opens_circuit=True)
    healed = Outcome(job(), Status.RESOLVED, "replayed")
    elsewhere = Outcome(job(alert_group=other), Status.RESOLVED, "replayed once more")
    mine, theirs = touches(batch(opened, elsewhere, healed))
    assert mine.fingerprint == GROUP
    assert mine.resolution == "replayed"
    assert list(mine.notices) == ["attempt:circuit_opened"]
    assert (theirs.fingerprint, theirs.resolution) == (other, "replayed once more")


# --- settle: the warning before a disable ---------------------------------------------------


def settled(outcomes: list[Outcome]) -> list[Outcome]:
    return list(settle(outcomes, Thresholds(), CircuitPolicy(), now=T0, rand=1.0).outcomes)


def test_the_failure_before_the_threshold_warns_and_the_next_disables() -> None:
    data = [
        Outcome(
            job(Category.DATA, failed_at=at(n)),
            Status.PENDING,
            "no automatic retry; admin review of the payload",
            unhealed=True,
        )
        for n in range(5)
    ]
    outcomes = settled(data)
    assert [o.failure_count for o in outcomes] == [1, 2, 3, 4, 5]
    assert [o.disable_warning for o in outcomes] == [None] * 3 + [
        "one more unhealed data failure disables stripe",
        None,
    ]
    assert [o.status for o in outcomes] == [Status.PENDING] * 4 + [Status.DISABLED]
    assert outcomes[4].disable_service == "5 consecutive data failures"

    # And admins hear of both.
    [touch] = touches(Settled(tuple(outcomes), Effects((), ())))
    assert set(touch.notices) == {"attempt:disable_warning", "disabled:service"}


def test_the_auth_failure_before_the_threshold_warns_of_the_user_connection() -> None:
    failed = Outcome(
        job(Category.AUTH, user_connection_id=USER_CONNECTION, user_connection_failures=1),
        Status.PENDING,
        "still unauthorized",
        user_connection_failed=True,
    )
    [outcome] = settled([failed])
    assert outcome.failure_count == 2
    assert outcome.disable_warning == "one more unhealed auth failure disables the user connection"


def test_failures_that_do_not_count_carry_no_count_and_no_warning() -> None:
    held = Outcome(job(threshold_count=7), Status.PENDING, "waiting for stripe", held=True)
    [outcome] = settled([held])
    assert (outcome.failure_count, outcome.disable_warning) == (0, None)


# --- after_delivery: what a webhook's answer means ------------------------------------------

DELIVERY = DeliveryPolicy()


def deliver(
    answer: WebhookAnswer,
    channel: Channel = Channel.SLACK,
    *,
    failures: int = 3,
    broken: str | None = None,
    rand: float = 0.5,
) -> Attempted:
    return after_delivery(
        channel, answer, failures=failures, broken=broken, policy=DELIVERY, rand=rand
    )


def test_slack_ok_is_delivered_and_repairs_the_channel() -> None:
    done = deliver(WebhookAnswer(200, "ok\n"), failures=5, broken="HTTP 404 channel_not_found")
    assert done == Attempted("delivered", None, 0, 0.0, None)
    assert done.delivered


def test_a_slack_200_with_another_body_is_not_delivered() -> None:
    attempted = deliver(WebhookAnswer(200, "invalid_payload"))
    assert not attempted.delivered
    assert attempted.error == "HTTP 200, not ok: invalid_payload"


def test_teams_accepts_with_any_2xx_body() -> None:
    assert deliver(WebhookAnswer(202, ""), Channel.TEAMS).delivered
    assert deliver(WebhookAnswer(200, "1"), Channel.TEAMS).delivered


def test_a_429_holds_the_queue_for_its_retry_after_without_counting_a_failure() -> None:
    attempted = deliver(WebhookAnswer(429, "rate_limited", retry_after=7.0), failures=2)
    assert attempted == Attempted("queued", "HTTP 429 rate_limited", 2, 7.0, None)
    longest = deliver(WebhookAnswer(429, "", retry_after=86_400.0))
    assert longest.hold == DELIVERY.max_hold


@pytest.mark.parametrize(("rand", "hold"), [(0.0, 0.5), (1.0, 1.0)])
def test_a_429_without_retry_after_holds_a_short_backoff(rand: float, hold: float) -> None:
    attempted = deliver(WebhookAnswer(429, ""), failures=4, rand=rand)
    assert (attempted.status, attempted.failures, attempted.hold) == ("queued", 4, hold)


@pytest.mark.parametrize("failures", range(13))
@pytest.mark.parametrize(
    "answer", [WebhookAnswer(500, "oops"), WebhookAnswer(None, error="ConnectTimeout")]
)
def test_server_errors_and_silence_retry_after_a_doubling_jittered_capped_wait(
    answer: WebhookAnswer, failures: int
) -> None:
    ceiling = min(DELIVERY.retry_cap, DELIVERY.retry_base * 2**failures)
    shortest = deliver(answer, failures=failures, rand=0.0)
    longest = deliver(answer, failures=failures, rand=1.0)
    assert (shortest.hold, longest.hold) == (ceiling / 2, ceiling)
    assert longest.hold <= DELIVERY.retry_cap
    assert shortest.status == longest.status == "queued"
    assert shortest.failures == failures + 1
    assert shortest.broken is None


@given(st.integers(0, 10**6), st.floats(0.0, 1.0))
def test_a_retry_never_waits_longer_than_the_cap(failures: int, rand: float) -> None:
    hold = deliver(WebhookAnswer(503), failures=failures, rand=rand).hold
    assert DELIVERY.retry_base / 2 <= hold <= DELIVERY.retry_cap


def test_no_answer_says_what_went_wrong_without_a_url() -> None:
    assert deliver(WebhookAnswer(None, error="ConnectTimeout")).error == "no answer: ConnectTimeout"
    assert deliver(WebhookAnswer(None)).error == "no answer: network error"


def test_a_permanent_error_kills_the_message_and_breaks_the_channel() -> None:
    attempted = deliver(WebhookAnswer(404, "channel_not_found\n<html>"), failures=0)
    assert attempted == Attempted(
        "dead",
        "HTTP 404 channel_not_found",
        1,
        DELIVERY.broken_probe,
        "HTTP 404 channel_not_found",
    )


def test_a_broken_channels_probe_stays_queued() -> None:
    attempted = deliver(WebhookAnswer(403, "invalid_token"), broken="HTTP 404 channel_not_found")
    assert attempted == Attempted(
        "queued", "HTTP 403 invalid_token", 4, DELIVERY.broken_probe, "HTTP 404 channel_not_found"
    )


def test_a_secret_url_in_the_answer_never_reaches_the_reason() -> None:
    body = "invalid_token https://hooks.slack.com/services/T/B/secretsecretsecret"
    attempted = deliver(WebhookAnswer(403, body))
    assert attempted.error is not None and attempted.broken is not None
    assert attempted.error.startswith("HTTP 403 invalid_token")
    for text in (attempted.error, attempted.broken):
        assert "secretsecretsecret" not in text
        assert "/T/B/" not in text


def test_a_long_answer_gives_a_short_reason() -> None:
    attempted = deliver(WebhookAnswer(400, "x" * 5000))
    assert attempted.error is not None and len(attempted.error) <= 200


def test_a_webhook_url_is_checked_at_start_and_kept_without_surrounding_space() -> None:
    from selfheal.settings import ConfigError, load_settings

    settings = load_settings(SLACK_WEBHOOK_URL="https://hooks.slack.com/services/T/B/x\n")
    assert settings.slack_webhook_url is not None
    assert settings.slack_webhook_url.get_secret_value() == "https://hooks.slack.com/services/T/B/x"
    for bad in ("https://hooks.slack.com:abc/services/T/B/x", "hooks.slack.com/x", "ftp://h/x"):
        with pytest.raises(ConfigError) as caught:
            load_settings(SLACK_WEBHOOK_URL=bad)
        assert "SLACK_WEBHOOK_URL" in str(caught.value) and "/x" not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
