"""Unit tests for the pure recovery policy: tables for every function, properties for parsers."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfheal.core.diagnose import needs_reauthorization
from selfheal.core.plan import planned_action
from selfheal.core.ratelimit import (
    DEFAULT_MAX_WAIT,
    parse_ratelimit_header,
    parse_ratelimit_reset,
    parse_retry_after,
    parse_retry_after_ms,
    rate_limit_wait,
)
from selfheal.core.retry import (
    deferral_delay,
    idempotency_key,
    jitter,
    retry_delays,
    schedule_retry,
)
from selfheal.models import Category

NOW = datetime(2025, 11, 29, 15, 0, tzinfo=UTC)  # a Saturday
EPOCH_NOW = int(NOW.timestamp())

Parser = Callable[[str | None, datetime, float], float | None]
PARSERS: list[Parser] = [
    parse_retry_after,
    parse_retry_after_ms,
    parse_ratelimit_reset,
    parse_ratelimit_header,
]

GARBAGE = [
    None,
    "",
    "   ",
    "abc",
    "1e309",
    "1e3",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "5, 6",
    "0x10",
    "1_000",
    "\u0663",
    "5s",
    "--5",
    "5.5.5",
    "\x00",
    "1" * 2000,
]


def imf_fixdate(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC), usegmt=True)


def rfc850_date(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%A, %d-%b-%y %H:%M:%S GMT")


def asctime_date(when: datetime) -> str:
    when = when.astimezone(UTC)
    return when.strftime("%a %b ") + f"{when.day:2d}" + when.strftime(" %H:%M:%S %Y")


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def sequence(*values: float) -> Callable[[], float]:
    iterator: Iterator[float] = iter(values)
    return lambda: next(iterator)


# --- jitter ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "rand", "expected"),
    [
        (1.0, 0.0, 0.5),
        (1.0, 0.5, 0.75),
        (1.0, 1.0, 1.0),
        (2.0, 0.5, 1.5),
        (0.5, 0.0, 0.25),
        (0.0, 0.7, 0.0),
        (60.0, 0.25, 37.5),
    ],
)
def test_jitter_table(delay: float, rand: float, expected: float) -> None:
    assert jitter(delay, rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("delay", "rand"), [(1.0, -0.1), (1.0, 1.1), (1.0, math.nan), (-1.0, 0.5), (math.nan, 0.5)]
)
def test_jitter_rejects_out_of_contract_inputs(delay: float, rand: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        jitter(delay, rand)


@given(
    delay=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_jitter_stays_between_half_and_full_delay(delay: float, rand: float) -> None:
    result = jitter(delay, rand)
    assert delay * 0.5 <= result <= delay


# --- retry_delays ------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "rand", "expected"),
    [
        (Category.NETWORK, 0.0, (0.25, 0.5, 1.0)),
        (Category.NETWORK, 1.0, (0.5, 1.0, 2.0)),
        (Category.RATE_LIMIT, 0.0, (0.25, 0.5, 1.0)),
        (Category.RATE_LIMIT, 1.0, (0.5, 1.0, 2.0)),
        (Category.AUTH, 0.3, (0.0, 0.5, 1.0)),
        (Category.UNKNOWN, 0.3, (1.0,)),
        (Category.DATA, 0.3, ()),
    ],
)
def test_retry_delays_table(category: Category, rand: float, expected: tuple[float, ...]) -> None:
    assert retry_delays(category, constant(rand)) == pytest.approx(expected)


def test_retry_delays_draws_one_rand_per_jittered_delay_in_order() -> None:
    assert retry_delays(Category.NETWORK, sequence(1.0, 0.0, 0.5)) == pytest.approx((0.5, 0.5, 1.5))


@pytest.mark.parametrize("category", [Category.AUTH, Category.UNKNOWN, Category.DATA])
def test_retry_delays_without_jitter_never_draws(category: Category) -> None:
    def forbidden() -> float:
        raise AssertionError("rand must not be called")

    retry_delays(category, forbidden)


@pytest.mark.parametrize(
    ("server_wait", "expected_first"),
    [(None, 0.5), (0.0, 0.5), (-3.0, 0.5), (4.0, 4.5), (9.5, 10.0)],
)
def test_rate_limit_first_delay_honours_the_server_wait(
    server_wait: float | None, expected_first: float
) -> None:
    delays = retry_delays(Category.RATE_LIMIT, constant(1.0), server_wait=server_wait)
    assert delays == pytest.approx((expected_first, 1.0, 2.0))


def test_server_wait_only_shifts_rate_limit_delays() -> None:
    assert retry_delays(Category.NETWORK, constant(1.0), server_wait=5.0) == (0.5, 1.0, 2.0)
    assert retry_delays(Category.UNKNOWN, constant(1.0), server_wait=5.0) == (1.0,)


@given(
    category=st.sampled_from(Category),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_retry_delays_bounds(category: Category, rand: float) -> None:
    delays = retry_delays(category, constant(rand))
    assert len(delays) <= 3
    assert all(0.0 <= delay <= 2.0 for delay in delays)
    if category in (Category.NETWORK, Category.RATE_LIMIT):
        for delay, nominal in zip(delays, (0.5, 1.0, 2.0), strict=True):
            assert nominal / 2 <= delay <= nominal


# --- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("2.", 2.0),
        ("+7", 7.0),
        (" 5 ", 5.0),
        ("\t5\r\n", 5.0),
        ("-5", 0.0),
        ("-0.1", 0.0),
        ("3600", 3600.0),
        ("3601", DEFAULT_MAX_WAIT),
        ("99999999999999999999", DEFAULT_MAX_WAIT),
        ("9" * 400, DEFAULT_MAX_WAIT),  # float() gives inf; still just "huge"
    ],
)
def test_parse_retry_after_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize("formatter", [imf_fixdate, rfc850_date, asctime_date])
@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(seconds=30), 30.0),
        (timedelta(0), 0.0),
        (timedelta(minutes=-5), 0.0),  # in the past
        (timedelta(days=-4000), 0.0),
        (timedelta(hours=2), DEFAULT_MAX_WAIT),
    ],
)
def test_parse_retry_after_http_dates(
    formatter: Callable[[datetime], str], offset: timedelta, expected: float
) -> None:
    value = formatter(NOW + offset)
    assert parse_retry_after(value, NOW) == expected


def test_http_date_examples_from_the_rfc_forms() -> None:
    assert parse_retry_after("Sat, 29 Nov 2025 15:01:00 GMT", NOW) == 60.0
    assert parse_retry_after("Saturday, 29-Nov-25 15:01:00 GMT", NOW) == 60.0
    assert parse_retry_after("Sat Nov 29 15:01:00 2025", NOW) == 60.0


def test_http_date_is_compared_with_an_aware_now_in_any_zone() -> None:
    now_elsewhere = NOW.astimezone(timezone(timedelta(hours=9)))
    assert parse_retry_after(imf_fixdate(NOW + timedelta(seconds=42)), now_elsewhere) == 42.0


def test_parse_retry_after_respects_max_wait_argument() -> None:
    assert parse_retry_after("120", NOW, 60.0) == 60.0
    assert parse_retry_after("120", NOW, 0.0) == 0.0


@pytest.mark.parametrize("value", GARBAGE)
def test_parse_retry_after_garbage(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


# --- parse_retry_after_ms -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1500", 1.5),
        ("0", 0.0),
        ("250.5", 0.2505),
        (" 100 ", 0.1),
        ("-1", 0.0),
        ("3600000", 3600.0),
        ("3600001", DEFAULT_MAX_WAIT),
        ("9" * 400, DEFAULT_MAX_WAIT),
    ],
)
def test_parse_retry_after_ms(value: str, expected: float) -> None:
    assert parse_retry_after_ms(value, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("value", [*GARBAGE, imf_fixdate(NOW)])
def test_parse_retry_after_ms_garbage(value: str | None) -> None:
    assert parse_retry_after_ms(value, NOW) is None


# --- parse_ratelimit_reset ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),  # seconds remaining
        ("0", 0.0),
        ("2.5", 2.5),
        ("-5", 0.0),
        ("3599", 3599.0),
        ("999999999", DEFAULT_MAX_WAIT),  # just below the epoch floor: still "remaining"
        ("1000000000", DEFAULT_MAX_WAIT),  # the floor itself is not an epoch
        ("1000000001", 0.0),  # epoch in 2001: long past
        (str(EPOCH_NOW + 45), 45.0),  # epoch seconds
        (str(EPOCH_NOW - 45), 0.0),  # epoch in the past
        (f"{EPOCH_NOW + 45}.5", 45.5),
        (str((EPOCH_NOW + 45) * 1000), 45.0),  # epoch milliseconds
        (str((EPOCH_NOW - 45) * 1000), 0.0),
        (str((EPOCH_NOW + 99999) * 1000), DEFAULT_MAX_WAIT),
        ("1764432000", 3600.0),  # GitHub's example, one hour after NOW
        (imf_fixdate(NOW + timedelta(seconds=30)), 30.0),  # tolerated
        ("9" * 400, DEFAULT_MAX_WAIT),
    ],
)
def test_parse_ratelimit_reset(value: str, expected: float) -> None:
    assert parse_ratelimit_reset(value, NOW) == pytest.approx(expected)


def test_parse_ratelimit_reset_epoch_below_cap_with_larger_max_wait() -> None:
    assert parse_ratelimit_reset("1764432000", NOW, 7200.0) == 3600.0
    assert parse_ratelimit_reset("1764435600", NOW, 7200.0) == 7200.0


@pytest.mark.parametrize("value", GARBAGE)
def test_parse_ratelimit_reset_garbage(value: str | None) -> None:
    assert parse_ratelimit_reset(value, NOW) is None


# --- parse_ratelimit_header -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Older draft: one policy as comma-separated parameters.
        ("limit=10, remaining=0, reset=30", 30.0),
        ("Limit=10, Remaining=0, Reset=30", 30.0),
        ("limit=10, remaining=5, reset=30", 30.0),
        ("reset=30", 30.0),
        ("limit=10,remaining=0,reset=0", 0.0),
        ("limit=10, remaining=0, reset=-3", 0.0),
        (f"limit=10, remaining=0, reset={EPOCH_NOW + 20}", 20.0),
        # Newer draft: structured-field list of named policies.
        ('"default";r=0;t=30', 30.0),
        ("default;r=0;t=30", 30.0),
        ('"default";t=12', 12.0),
        ('"default"; r=0; t=30', 30.0),
        ('"default";r=0;t=99999', DEFAULT_MAX_WAIT),
        ('"default";r=0;t=-1', 0.0),
        # Several policies: longest exhausted one, else the soonest reset.
        ('"burst";r=0;t=5, "daily";r=0;t=600', 600.0),
        ('"burst";r=0;t=5, "daily";r=100;t=80000', 5.0),
        ('"burst";r=3;t=5, "daily";r=100;t=80000', 5.0),
        ('"burst";t=50, "daily";t=7', 7.0),
        ('"broken";r=0;t=x, "ok";r=0;t=9', 9.0),
    ],
)
def test_parse_ratelimit_header(value: str, expected: float) -> None:
    assert parse_ratelimit_header(value, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        *GARBAGE,
        ";;;",
        ",,,",
        "t=",
        "reset=",
        '"x";t=abc',
        '"x";t=1e3',
        "limit=10, remaining=0",
        '"default";q=100;w=60',  # that is RateLimit-Policy, which carries no reset
        "=",
        '"',
    ],
)
def test_parse_ratelimit_header_garbage(value: str | None) -> None:
    assert parse_ratelimit_header(value, NOW) is None


# --- parser properties ----------------------------------------------------------------------


@pytest.mark.parametrize("parser", PARSERS)
def test_parsers_reject_a_naive_now(parser: Parser) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parser("5", NOW.replace(tzinfo=None), DEFAULT_MAX_WAIT)


@pytest.mark.parametrize("parser", PARSERS)
def test_parsers_reject_a_bad_max_wait(parser: Parser) -> None:
    with pytest.raises(ValueError, match="max_wait"):
        parser("5", NOW, -1.0)


header_text = st.one_of(
    st.text(),
    st.text(alphabet='0123456789.-+ ,;="rtTlimRESAZ:GM'),
    st.from_regex(r"\A[+-]?[0-9]{0,20}(\.[0-9]{0,5})?\Z"),
)
nows = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
)
max_waits = st.floats(min_value=0, max_value=1e7)


@pytest.mark.parametrize("parser", PARSERS)
@given(value=header_text, now=nows, max_wait=max_waits)
def test_parsers_never_raise_and_stay_in_range(
    parser: Parser, value: str, now: datetime, max_wait: float
) -> None:
    result = parser(value, now, max_wait)
    assert result is None or 0.0 <= result <= max_wait


@given(
    when=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2068, 12, 31)),
    formatter=st.sampled_from([imf_fixdate, asctime_date]),
    max_wait=max_waits,
)
def test_http_dates_round_trip(
    when: datetime, formatter: Callable[[datetime], str], max_wait: float
) -> None:
    when = when.replace(microsecond=0, tzinfo=UTC)
    expected = max(0.0, min((when - NOW).total_seconds(), max_wait))
    assert parse_retry_after(formatter(when), NOW, max_wait) == pytest.approx(expected)


@given(seconds=st.integers(min_value=-(10**6), max_value=10**6))
def test_epoch_and_remaining_agree(seconds: int) -> None:
    expected = max(0.0, min(float(seconds), DEFAULT_MAX_WAIT))
    assert parse_ratelimit_reset(str(EPOCH_NOW + seconds), NOW) == expected
    assert parse_ratelimit_reset(str((EPOCH_NOW + seconds) * 1000), NOW) == expected
    if seconds >= 0:
        assert parse_ratelimit_reset(str(seconds), NOW) == expected


# --- rate_limit_wait ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"content-type": "application/json"}, None),
        ({"retry-after": "5"}, 5.0),
        ({"retry-after": imf_fixdate(NOW + timedelta(seconds=90))}, 90.0),
        ({"retry-after-ms": "2500"}, 2.5),
        ({"x-ms-retry-after-ms": "1500"}, 1.5),
        ({"x-ratelimit-reset": "30"}, 30.0),
        ({"x-rate-limit-reset": str(EPOCH_NOW + 40)}, 40.0),
        ({"ratelimit-reset": "12"}, 12.0),
        ({"ratelimit": '"default";r=0;t=20'}, 20.0),
        ({"ratelimit": "limit=10, remaining=0, reset=25"}, 25.0),
        # The largest valid hint wins.
        ({"retry-after": "5", "x-ratelimit-reset": "30"}, 30.0),
        ({"retry-after": "50", "retry-after-ms": "1000"}, 50.0),
        # Malformed values are ignored, not fatal.
        ({"retry-after": "abc", "x-ratelimit-reset": "30"}, 30.0),
        ({"retry-after": "abc", "ratelimit": ";;", "retry-after-ms": "nan"}, None),
        # Negative and huge values are clamped.
        ({"retry-after": "-10"}, 0.0),
        ({"retry-after": "86400"}, DEFAULT_MAX_WAIT),
        # Header names are matched case-insensitively.
        ({"Retry-After": "7"}, 7.0),
        ({"X-RateLimit-Reset": "8"}, 8.0),
        # A reset whose quota is not exhausted is not a demand to wait (GitHub secondary limit).
        (
            {
                "retry-after": "60",
                "x-ratelimit-remaining": "4000",
                "x-ratelimit-reset": str(EPOCH_NOW + 3000),
            },
            60.0,
        ),
        ({"x-ratelimit-remaining": "4000", "x-ratelimit-reset": "3000"}, None),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(EPOCH_NOW + 1200)}, 1200.0),
        ({"x-ratelimit-remaining": "abc", "x-ratelimit-reset": "30"}, 30.0),
        ({"ratelimit-remaining": "3", "ratelimit-reset": "30"}, None),
        ({"ratelimit-remaining": "0", "ratelimit-reset": "30"}, 30.0),
    ],
)
def test_rate_limit_wait_table(headers: dict[str, str], expected: float | None) -> None:
    assert rate_limit_wait(headers, NOW) == expected


def test_rate_limit_wait_respects_max_wait() -> None:
    assert rate_limit_wait({"retry-after": "120"}, NOW, max_wait=30.0) == 30.0


header_names = st.sampled_from(
    [
        "retry-after",
        "retry-after-ms",
        "x-ms-retry-after-ms",
        "x-ratelimit-reset",
        "x-rate-limit-reset",
        "x-ratelimit-remaining",
        "ratelimit",
        "ratelimit-reset",
        "ratelimit-remaining",
        "RETRY-AFTER",
        "other",
    ]
)


@given(headers=st.dictionaries(header_names, header_text), now=nows, max_wait=max_waits)
def test_rate_limit_wait_never_raises_and_stays_in_range(
    headers: dict[str, str], now: datetime, max_wait: float
) -> None:
    result = rate_limit_wait(headers, now, max_wait)
    assert result is None or 0.0 <= result <= max_wait


# --- deferral_delay / schedule_retry --------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "deferrals", "rand", "expected"),
    [
        (Category.NETWORK, 0, 1.0, 60.0),
        (Category.NETWORK, 0, 0.0, 30.0),
        (Category.NETWORK, 1, 1.0, 120.0),
        (Category.NETWORK, 2, 0.5, 180.0),
        (Category.NETWORK, 5, 1.0, 1920.0),
        (Category.NETWORK, 6, 1.0, 3600.0),  # 3840 capped
        (Category.NETWORK, 6, 0.0, 1800.0),
        (Category.NETWORK, 10**6, 1.0, 3600.0),  # no overflow
        (Category.NETWORK, -3, 1.0, 60.0),
        (Category.RATE_LIMIT, 0, 1.0, 60.0),
        (Category.RATE_LIMIT, 3, 1.0, 480.0),
        (Category.DATA, 0, 0.5, None),
        (Category.DATA, 9, 0.5, None),
        (Category.AUTH, 0, 0.5, None),
        (Category.UNKNOWN, 0, 0.5, None),
    ],
)
def test_deferral_delay_table(
    category: Category, deferrals: int, rand: float, expected: float | None
) -> None:
    assert deferral_delay(category, deferrals, rand) == expected


def test_deferral_delay_custom_base_and_cap() -> None:
    assert deferral_delay(Category.NETWORK, 2, 1.0, base=10.0, cap=100.0) == 40.0
    assert deferral_delay(Category.NETWORK, 4, 1.0, base=10.0, cap=100.0) == 100.0


@pytest.mark.parametrize(
    ("base", "cap"),
    [(-1.0, 60.0), (math.inf, 60.0), (60.0, -1.0), (60.0, math.inf), (60.0, math.nan)],
)
def test_deferral_delay_rejects_bad_base_or_cap(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        deferral_delay(Category.NETWORK, 0, 0.5, base=base, cap=cap)


@given(
    deferrals=st.integers(min_value=0, max_value=10**9),
    rand=st.floats(min_value=0, max_value=1),
    cap=st.floats(min_value=0, max_value=1e7),
)
def test_deferral_delay_grows_and_is_capped(deferrals: int, rand: float, cap: float) -> None:
    delay = deferral_delay(Category.NETWORK, deferrals, rand, cap=cap)
    later = deferral_delay(Category.NETWORK, deferrals + 1, rand, cap=cap)
    assert delay is not None
    assert later is not None
    assert 0.0 <= delay <= later <= cap


@pytest.mark.parametrize(
    ("category", "expected_seconds"),
    [
        (Category.RATE_LIMIT, 120.0),  # no header: back off like a deferral
        (Category.NETWORK, 120.0),
        (Category.DATA, None),
        (Category.AUTH, None),
        (Category.UNKNOWN, None),
    ],
)
def test_schedule_retry_table(category: Category, expected_seconds: float | None) -> None:
    result = schedule_retry(category, now=NOW, deferrals=1, rand=1.0)
    expected = None if expected_seconds is None else NOW + timedelta(seconds=expected_seconds)
    assert result == expected


def test_schedule_retry_rejects_a_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule_retry(Category.NETWORK, now=NOW.replace(tzinfo=None), deferrals=0, rand=0.5)


# --- planned_action / needs_reauthorization / idempotency_key -------------------------------


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        (Category.AUTH, "refresh OAuth token and replay (max 3 attempts)"),
        (Category.RATE_LIMIT, "retry after the rate-limit window"),
        (Category.NETWORK, "replay with exponential backoff (max 3 attempts)"),
        (Category.DATA, "no automatic retry; admin review of the payload"),
        (Category.UNKNOWN, "one retry after 1 s, then admin review"),
    ],
)
def test_planned_action_table(category: Category, expected: str) -> None:
    assert planned_action(category) == expected


def test_every_category_has_a_planned_action() -> None:
    assert all(planned_action(category) for category in Category)


@pytest.mark.parametrize(
    ("oauth_error", "expected"),
    [
        ("invalid_grant", True),
        ("INVALID_GRANT", True),
        ('{"error": "invalid_grant", "error_description": "Token has been revoked."}', True),
        ("invalid_client", False),
        ("invalid_grants_table", False),
        ("", False),
        (None, False),
    ],
)
def test_needs_reauthorization(oauth_error: str | None, expected: bool) -> None:
    assert needs_reauthorization(oauth_error) is expected


def test_idempotency_key_is_pinned() -> None:
    # Pinned: a change would make daemons of different versions send different keys for the
    # same event, and providers would then execute a replay twice.
    assert idempotency_key("evt-1") == "selfheal-321e8e86-8e8c-56ae-8be8-16f29a5754b5"


def test_idempotency_key_rejects_an_empty_id() -> None:
    with pytest.raises(ValueError, match="empty"):
        idempotency_key("")


@given(event_id=st.text(min_size=1), other=st.text(min_size=1))
def test_idempotency_key_is_deterministic_and_distinct(event_id: str, other: str) -> None:
    key = idempotency_key(event_id)
    assert key == idempotency_key(event_id)
    assert re.fullmatch(r"selfheal-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", key)
    if other != event_id:
        assert idempotency_key(other) != key
