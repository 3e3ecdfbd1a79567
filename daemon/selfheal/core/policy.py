"""Pure recovery decisions: retry delays, rate-limit header parsing, disable thresholds.

No I/O here: the clock (``now``, timezone-aware) and randomness (``rand``) are always passed in.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from selfheal.models import Category

__all__ = [
    "DEFAULT_MAX_WAIT",
    "SHORT_WAIT_LIMIT",
    "Thresholds",
    "crosses_threshold",
    "deferral_delay",
    "idempotency_key",
    "jitter",
    "needs_reauthorization",
    "parse_ratelimit_header",
    "parse_ratelimit_reset",
    "parse_retry_after",
    "parse_retry_after_ms",
    "planned_action",
    "rate_limit_wait",
    "retries_in_process",
    "retry_delays",
    "schedule_retry",
]

#: A server-demanded wait below this is slept in-process; anything longer becomes a deferral.
SHORT_WAIT_LIMIT = 10.0
#: Upper bound on any wait a header can impose, so a hostile or buggy server cannot park an
#: event for years.
DEFAULT_MAX_WAIT = 3600.0

_BACKOFF = (0.5, 1.0, 2.0)
# Auth: every attempt is refresh-then-replay. The first replay goes right after the refresh
# (the new token is the fix); a 401 on a brand-new token is usually propagation lag at the
# provider, which a short pause cures. Not jittered: auth failures are per user connection,
# not a synchronized herd.
_AUTH_DELAYS = (0.0, 0.5, 1.0)
# Unknown: exactly one retry after 1 s, as specified; a single retry makes no herd to spread.
_UNKNOWN_DELAYS = (1.0,)

# Above these, an X-RateLimit-Reset value cannot be "seconds remaining" (10**9 s is 31 years);
# it is an epoch timestamp in seconds (GitHub, Twitter) or in milliseconds.
_EPOCH_SECONDS_FLOOR = 10**9
_EPOCH_MILLISECONDS_FLOOR = 10**12
# Legitimate values of these headers are short; refusing long ones bounds parsing cost.
_MAX_HEADER_VALUE = 1024
# Plain decimal only: no exponent ('1e309'), no 'nan'/'inf', ASCII digits only.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_INVALID_GRANT = re.compile(r"\binvalid_grant\b", re.IGNORECASE)

_RETRY_AFTER_MS_HEADERS = ("retry-after-ms", "x-ms-retry-after-ms")
# Each reset header is paired with the remaining-quota header that says whether it applies.
_RESET_HEADERS = (
    ("x-ratelimit-reset", "x-ratelimit-remaining"),
    ("x-rate-limit-reset", "x-rate-limit-remaining"),
    ("ratelimit-reset", "ratelimit-remaining"),
)

_PLANNED_ACTIONS = {
    Category.AUTH: "refresh OAuth token and replay (max 3 attempts)",
    Category.RATE_LIMIT: "retry after the rate-limit window",
    Category.NETWORK: "replay with exponential backoff (max 3 attempts)",
    Category.DATA: "no automatic retry; admin review of the payload",
    Category.UNKNOWN: "one retry after 1 s, then admin review",
}

# Only these categories are retried out-of-process. Data needs a fixed payload, auth needs a
# working grant (re-authorization or an alert-driven fix) and unknown goes to admin review:
# blind retries there would only count towards disabling the connection or service.
_DEFERRABLE = frozenset({Category.NETWORK, Category.RATE_LIMIT})

# Fixed namespace so every daemon derives the same key for the same event.
_IDEMPOTENCY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:pg-selfheal:idempotency-key")


def jitter(delay: float, rand: float) -> float:
    """Spread ``delay`` over [delay/2, delay] so many clients do not retry in lockstep."""
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand must be in [0, 1], got {rand!r}")
    if not delay >= 0.0:  # also rejects NaN
        raise ValueError(f"delay must be >= 0, got {delay!r}")
    return delay * (0.5 + rand * 0.5)


def retry_delays(
    category: Category, rand: Callable[[], float], *, server_wait: float | None = None
) -> tuple[float, ...]:
    """Seconds to sleep before each synchronous replay; the tuple length is the attempt budget.

    ``rand`` is called once per jittered delay, in order. For rate_limit, ``server_wait`` (a
    short wait from :func:`rate_limit_wait`) is added to the first delay so the first replay
    is never earlier than the server demands, and the jitter spreads the clients that would
    all come back at the instant the window resets. Callers decide with
    :func:`retries_in_process` whether the wait is short enough to sleep at all.
    """
    if category is Category.NETWORK:
        return tuple(jitter(delay, rand()) for delay in _BACKOFF)
    if category is Category.RATE_LIMIT:
        delays = [jitter(delay, rand()) for delay in _BACKOFF]
        if server_wait is not None and server_wait > 0:
            delays[0] += server_wait
        return tuple(delays)
    if category is Category.AUTH:
        return _AUTH_DELAYS
    if category is Category.UNKNOWN:
        return _UNKNOWN_DELAYS
    return ()  # data: replaying the same payload cannot succeed


def retries_in_process(category: Category, server_wait: float | None) -> bool:
    """Whether to run the synchronous retries now, or defer straight away (long rate-limit)."""
    if category is Category.DATA:
        return False
    if category is Category.RATE_LIMIT and server_wait is not None:
        return server_wait < SHORT_WAIT_LIMIT
    return True


# --- header parsers -------------------------------------------------------------------------


def parse_retry_after(
    value: str | None, now: datetime, max_wait: float = DEFAULT_MAX_WAIT
) -> float | None:
    """Retry-After as delta-seconds (decimals tolerated) or an HTTP-date (all three forms)."""
    _check_args(now, max_wait)
    text = _clean(value)
    if text is None:
        return None
    seconds = _number(text)
    if seconds is None:
        seconds = _seconds_until_http_date(text, now)
    return _clamp(seconds, max_wait)


def parse_retry_after_ms(
    value: str | None, now: datetime, max_wait: float = DEFAULT_MAX_WAIT
) -> float | None:
    """``retry-after-ms`` / ``x-ms-retry-after-ms``: milliseconds to wait."""
    _check_args(now, max_wait)
    text = _clean(value)
    milliseconds = None if text is None else _number(text)
    return None if milliseconds is None else _clamp(milliseconds / 1000.0, max_wait)


def parse_ratelimit_reset(
    value: str | None, now: datetime, max_wait: float = DEFAULT_MAX_WAIT
) -> float | None:
    """X-RateLimit-Reset: epoch seconds, epoch milliseconds or seconds remaining.

    Told apart by magnitude: no API asks for 31 years of waiting, so anything above 10**9 is an
    epoch (and above 10**12 epoch milliseconds). An HTTP-date is tolerated as well.
    """
    _check_args(now, max_wait)
    text = _clean(value)
    if text is None:
        return None
    number = _number(text)
    if number is None:
        return _clamp(_seconds_until_http_date(text, now), max_wait)
    return _clamp(_reset_seconds(number, now), max_wait)


def parse_ratelimit_header(
    value: str | None, now: datetime, max_wait: float = DEFAULT_MAX_WAIT
) -> float | None:
    """The IETF draft ``RateLimit`` header, old or structured-field form.

    Old: ``limit=10, remaining=0, reset=30``. New: ``"default";r=0;t=30`` with one item per
    policy. When several policies are given, the wait is the longest among the exhausted ones
    (remaining 0); if none is marked exhausted, the soonest reset, since waiting for a daily
    window that still has quota would stall the event for nothing.
    """
    _check_args(now, max_wait)
    text = _clean(value)
    if text is None:
        return None
    exhausted: list[float] = []
    others: list[float] = []
    for params in _ratelimit_policies(text):
        reset = _number(params.get("t") or params.get("reset") or "")
        if reset is None:
            continue
        seconds = _reset_seconds(reset, now)
        remaining = _number(params.get("r") or params.get("remaining") or "")
        if remaining is not None and remaining <= 0:
            exhausted.append(seconds)
        else:
            others.append(seconds)
    if exhausted:
        return _clamp(max(exhausted), max_wait)
    if others:
        return _clamp(min(others), max_wait)
    return None


def rate_limit_wait(
    headers: Mapping[str, str], now: datetime, max_wait: float = DEFAULT_MAX_WAIT
) -> float | None:
    """The wait the server demands, in seconds within [0, max_wait], or None if it names none.

    The largest of all readable hints wins. A reset header is ignored when its paired
    remaining header says quota is left: GitHub sends X-RateLimit-Reset on every response, and
    on a secondary-limit 429 it points at the primary window, not at when to retry.
    """
    _check_args(now, max_wait)
    lowered = {str(name).strip().lower(): value for name, value in headers.items()}
    waits: list[float | None] = [
        parse_retry_after(lowered.get("retry-after"), now, max_wait),
        parse_ratelimit_header(lowered.get("ratelimit"), now, max_wait),
    ]
    waits.extend(
        parse_retry_after_ms(lowered.get(name), now, max_wait) for name in _RETRY_AFTER_MS_HEADERS
    )
    for reset_name, remaining_name in _RESET_HEADERS:
        remaining = _number(_clean(lowered.get(remaining_name)) or "")
        if remaining is not None and remaining > 0:
            continue
        waits.append(parse_ratelimit_reset(lowered.get(reset_name), now, max_wait))
    valid = [wait for wait in waits if wait is not None]
    return max(valid) if valid else None


# --- thresholds, deferrals, scheduling ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a connection (auth) or a service (the rest) is disabled; rate limits never are."""

    auth_consecutive: int = 3
    network_window: timedelta = timedelta(minutes=60)
    network_failures: int = 9
    data_consecutive: int = 5
    unknown_consecutive: int = 5

    def __post_init__(self) -> None:
        counts = (
            self.auth_consecutive,
            self.network_failures,
            self.data_consecutive,
            self.unknown_consecutive,
        )
        if any(count < 1 for count in counts):
            raise ValueError("thresholds must be at least 1")
        if self.network_window <= timedelta(0):
            raise ValueError("network_window must be positive")

    @property
    def count_cap(self) -> int:
        """Counting past the largest threshold decides nothing more."""
        return max(self.network_failures, self.data_consecutive, self.unknown_consecutive)


def crosses_threshold(
    category: Category, consecutive: int, recent_in_window: int, thresholds: Thresholds
) -> bool:
    """Whether this failure disables its connection or service.

    Both counts include the current failure: ``consecutive`` for auth (per user connection),
    data and unknown (per service); ``recent_in_window`` for network, the failures of the
    service within ``thresholds.network_window``.
    """
    if category is Category.AUTH:
        return consecutive >= thresholds.auth_consecutive
    if category is Category.NETWORK:
        return recent_in_window >= thresholds.network_failures
    if category is Category.DATA:
        return consecutive >= thresholds.data_consecutive
    if category is Category.UNKNOWN:
        return consecutive >= thresholds.unknown_consecutive
    return False  # rate_limit: the server will let us through eventually


def deferral_delay(
    category: Category,
    deferrals: int,
    rand: float,
    base: float = 60.0,
    cap: float = DEFAULT_MAX_WAIT,
) -> float | None:
    """Seconds until the next out-of-process retry, or None if the category is never retried.

    ``deferrals`` counts earlier deferrals of the event (0 for the first). The delay is
    ``base * 2**deferrals`` capped at ``cap`` and then jittered, so it stays within
    [cap/2, cap] once the cap is reached.
    """
    if category not in _DEFERRABLE:
        return None
    if base < 0 or not math.isfinite(base):
        raise ValueError(f"base must be finite and >= 0, got {base!r}")
    _check_max_wait(cap)
    # Beyond 2**62 the product has long passed any sane cap; bounding the exponent keeps the
    # arithmetic in float range for absurd deferral counts.
    exponent = min(max(deferrals, 0), 62)
    return jitter(min(base * 2.0**exponent, cap), rand)


def schedule_retry(
    category: Category,
    *,
    now: datetime,
    deferrals: int,
    rand: float,
    server_wait: float | None = None,
    base: float = 60.0,
    cap: float = DEFAULT_MAX_WAIT,
) -> datetime | None:
    """``next_retry_at`` for an event going pending, or None when no automatic retry is due.

    A rate limit with a server-demanded wait is retried exactly when the server says (capped);
    everything else deferrable backs off with :func:`deferral_delay`.
    """
    _check_args(now, cap)
    if category is Category.RATE_LIMIT and server_wait is not None:
        wait = _clamp(server_wait, cap)
        return now + timedelta(seconds=cap if wait is None else wait)
    delay = deferral_delay(category, deferrals, rand, base, cap)
    return None if delay is None else now + timedelta(seconds=delay)


# --- small pure helpers for the shell -------------------------------------------------------


def planned_action(category: Category) -> str:
    """What the daemon will do, recorded as ``action_taken`` before recovery runs."""
    return _PLANNED_ACTIONS[category]


def needs_reauthorization(oauth_error: str | None) -> bool:
    """Whether a failed token refresh means the user must re-authorize (``invalid_grant``).

    Accepts the OAuth ``error`` field or the raw token-endpoint body.
    """
    return oauth_error is not None and _INVALID_GRANT.search(oauth_error) is not None


def idempotency_key(event_id: str) -> str:
    """A key derived only from the event id: the same on every attempt and every daemon."""
    if not event_id:
        # An empty id would give every such event the same key, and providers would
        # deduplicate distinct calls into one.
        raise ValueError("event_id must not be empty")
    return f"selfheal-{uuid.uuid5(_IDEMPOTENCY_NAMESPACE, event_id)}"


# --- internals ------------------------------------------------------------------------------


def _check_args(now: datetime, max_wait: float) -> None:
    _check_now(now)
    _check_max_wait(max_wait)


def _check_now(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")


def _check_max_wait(max_wait: float) -> None:
    if not (max_wait >= 0 and math.isfinite(max_wait)):
        raise ValueError(f"max_wait must be finite and >= 0, got {max_wait!r}")


def _clean(value: str | None) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_VALUE:
        return None
    return text


def _number(text: str) -> float | None:
    text = text.strip().strip('"')
    if len(text) > _MAX_HEADER_VALUE or not _NUMBER.fullmatch(text):
        return None
    return float(text)  # a very long digit string gives inf, which _clamp caps


def _clamp(seconds: float | None, max_wait: float) -> float | None:
    _check_max_wait(max_wait)
    if seconds is None or math.isnan(seconds):
        return None
    return max(0.0, min(seconds, max_wait))


def _reset_seconds(number: float, now: datetime) -> float:
    if number > _EPOCH_MILLISECONDS_FLOOR:
        return number / 1000.0 - now.timestamp()
    if number > _EPOCH_SECONDS_FLOOR:
        return number - now.timestamp()
    return number


def _seconds_until_http_date(text: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except Exception:
        # The stdlib date parser has raised ValueError, TypeError, IndexError and
        # OverflowError on hostile input across Python versions; an unreadable date is
        # treated as no date.
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # asctime form carries no zone; HTTP is GMT
    return (when - now).total_seconds()


def _ratelimit_policies(text: str) -> list[dict[str, str]]:
    """Split a RateLimit value into one parameter dict per policy.

    Members of the new form start with a policy name (``"default";r=0;t=30``); members of the
    old form are bare ``key=value`` pairs that together describe the single policy.
    """
    policies: list[dict[str, str]] = []
    legacy: dict[str, str] = {}
    for member in text.split(","):
        segments = [segment.strip() for segment in member.split(";")]
        if not segments[0]:
            continue
        if "=" in segments[0]:
            target, pairs = legacy, segments
        else:
            target, pairs = {}, segments[1:]
            policies.append(target)
        for pair in pairs:
            key, sep, val = pair.partition("=")
            if sep:
                target[key.strip().lower()] = val.strip()
    if legacy:
        policies.append(legacy)
    return policies
