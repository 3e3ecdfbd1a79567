"""Rate-limit headers: how long the server asks us to wait. Pure; shared by the analyzer
(does a 4xx carry a wait?) and recovery (how long to wait)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "DEFAULT_MAX_WAIT",
    "SHORT_WAIT_LIMIT",
    "check_max_wait",
    "check_now",
    "parse_number",
    "parse_ratelimit_header",
    "parse_ratelimit_reset",
    "parse_retry_after",
    "parse_retry_after_ms",
    "rate_limit_wait",
    "ratelimit_exhausted",
]

#: A server-demanded wait below this is slept in-process; anything longer becomes a deferral.
SHORT_WAIT_LIMIT = 10.0
#: Upper bound on any wait a header can impose, so a hostile or buggy server cannot park an
#: event for years.
DEFAULT_MAX_WAIT = 3600.0

# Above these, an X-RateLimit-Reset value cannot be "seconds remaining" (10**9 s is 31 years);
# it is an epoch timestamp in seconds (GitHub, Twitter) or in milliseconds.
_EPOCH_SECONDS_FLOOR = 10**9
_EPOCH_MILLISECONDS_FLOOR = 10**12
# Legitimate values of these headers are short; refusing long ones bounds parsing cost.
_MAX_HEADER_VALUE = 1024
# Plain decimal only: no exponent ('1e309'), no 'nan'/'inf', ASCII digits only.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_RETRY_AFTER_MS_HEADERS = ("retry-after-ms", "x-ms-retry-after-ms")
# Each reset header is paired with the remaining-quota header that says whether it applies.
_RESET_HEADERS = (
    ("x-ratelimit-reset", "x-ratelimit-remaining"),
    ("x-rate-limit-reset", "x-rate-limit-remaining"),
    ("ratelimit-reset", "ratelimit-remaining"),
)


def parse_retry_after(
    value: str | None, now: datetime, max_wait: float = DEFAULT_MAX_WAIT
) -> float | None:
    """Retry-After as delta-seconds (decimals tolerated) or an HTTP-date (all three forms)."""
    _check_args(now, max_wait)
    text = _clean(value)
    if text is None:
        return None
    seconds = parse_number(text)
    if seconds is None:
        seconds = _seconds_until_http_date(text, now)
    return _clamp(seconds, max_wait)


def parse_retry_after_ms(
    value: str | None, now: datetime, max_wait: float = DEFAULT_MAX_WAIT
) -> float | None:
    """``retry-after-ms`` / ``x-ms-retry-after-ms``: milliseconds to wait."""
    _check_args(now, max_wait)
    text = _clean(value)
    milliseconds = None if text is None else parse_number(text)
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
    number = parse_number(text)
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
        reset = parse_number(params.get("t") or params.get("reset") or "")
        if reset is None:
            continue
        seconds = _reset_seconds(reset, now)
        remaining = parse_number(params.get("r") or params.get("remaining") or "")
        if remaining is not None and remaining <= 0:
            exhausted.append(seconds)
        else:
            others.append(seconds)
    if exhausted:
        return _clamp(max(exhausted), max_wait)
    if others:
        return _clamp(min(others), max_wait)
    return None


def ratelimit_exhausted(value: str | None) -> bool:
    """Whether a ``RateLimit`` header (either form) marks some policy as used up (remaining 0)."""
    text = _clean(value)
    if text is None:
        return False
    for params in _ratelimit_policies(text):
        remaining = parse_number(params.get("r") or params.get("remaining") or "")
        if remaining is not None and remaining <= 0:
            return True
    return False


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
        remaining = parse_number(_clean(lowered.get(remaining_name)) or "")
        if remaining is not None and remaining > 0:
            continue
        waits.append(parse_ratelimit_reset(lowered.get(reset_name), now, max_wait))
    valid = [wait for wait in waits if wait is not None]
    return max(valid) if valid else None


def _check_args(now: datetime, max_wait: float) -> None:
    check_now(now)
    check_max_wait(max_wait)


def check_now(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")


def check_max_wait(max_wait: float) -> None:
    if not (max_wait >= 0 and math.isfinite(max_wait)):
        raise ValueError(f"max_wait must be finite and >= 0, got {max_wait!r}")


def _clean(value: str | None) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_VALUE:
        return None
    return text


def parse_number(text: str) -> float | None:
    text = text.strip().strip('"')
    if len(text) > _MAX_HEADER_VALUE or not _NUMBER.fullmatch(text):
        return None
    return float(text)  # a very long digit string gives inf, which _clamp caps


def _clamp(seconds: float | None, max_wait: float) -> float | None:
    check_max_wait(max_wait)
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
