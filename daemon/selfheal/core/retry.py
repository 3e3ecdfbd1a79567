"""Retry timing: the in-process backoff schedule per category, deferred retries, the
reconnect backoff, and the replay's idempotency key. Pure: randomness is passed in."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from selfheal.core.ratelimit import DEFAULT_MAX_WAIT, check_max_wait, check_now
from selfheal.models import Category

__all__ = [
    "deferral_delay",
    "idempotency_key",
    "jitter",
    "reconnect_delay",
    "retry_delays",
    "schedule_retry",
]

_BACKOFF = (0.5, 1.0, 2.0)
# Auth: every attempt is refresh-then-replay. The first replay goes right after the refresh
# (the new token is the fix); a 401 on a brand-new token is usually propagation lag at the
# provider, which a short pause cures. Not jittered: auth failures are per user connection,
# not a synchronized herd.
_AUTH_DELAYS = (0.0, 0.5, 1.0)
# Unknown: exactly one retry after 1 s, as specified; a single retry makes no herd to spread.
_UNKNOWN_DELAYS = (1.0,)

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
    check_max_wait(cap)
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
    base: float = 60.0,
    cap: float = DEFAULT_MAX_WAIT,
) -> datetime | None:
    """``next_retry_at`` for an event going pending, or None when no automatic retry is due:
    the deferrable categories back off with :func:`deferral_delay`."""
    check_now(now)
    delay = deferral_delay(category, deferrals, rand, base, cap)
    return None if delay is None else now + timedelta(seconds=delay)


def idempotency_key(event_id: str) -> str:
    """A key derived only from the event id: the same on every attempt and every daemon."""
    if not event_id:
        # An empty id would give every such event the same key, and providers would
        # deduplicate distinct calls into one.
        raise ValueError("event_id must not be empty")
    return f"selfheal-{uuid.uuid5(_IDEMPOTENCY_NAMESPACE, event_id)}"


def reconnect_delay(attempt: int, cap: float, rand: float) -> float:
    """Exponential backoff from 0.1 s with full-range jitter in [50%, 100%], capped."""
    base: float = min(cap, 0.1 * 2 ** min(attempt, 30))
    return base * (0.5 + rand * 0.5)
