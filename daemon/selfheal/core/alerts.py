"""When admins hear of failures, and what they hear: alert groups (one per service,
category and error code) and their episodes, the notices a batch of outcomes leaves, and
what a webhook's answer means for the message and its channel. Pure."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from selfheal.core.ratelimit import DEFAULT_MAX_WAIT
from selfheal.core.sanitize import scrub_text
from selfheal.models import (
    LISTED_USER_IDS,
    Alert,
    AlertGroup,
    AlertKind,
    Channel,
    GroupTouch,
    Settled,
)

__all__ = [
    "FINGERPRINT_VERSION",
    "Advanced",
    "AlertPolicy",
    "Attempted",
    "DeliveryPolicy",
    "WebhookAnswer",
    "advance",
    "after_delivery",
    "alert_code",
    "fingerprint",
    "touches",
]

#: Part of every fingerprint: a change to how codes are normalized starts new groups
#: instead of merging into old ones.
FINGERPRINT_VERSION = "v1"

# Request and object ids in a code are not kinds of failure: uuids, long runs of digits,
# and long tokens of letters and digits (req_8f3a9b2c1d4e5f60, ch_3MmlLrLkdIwHu7ix0snN0B15).
_IDS = re.compile(
    r"(?<![a-z0-9])(?:[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"
    r"|(?=[a-z]*\d)[a-z0-9]{10,}|\d{6,})(?![a-z0-9])"
)
_SEPARATORS = re.compile(r"[^a-z0-9_.:#-]+")
_CODE_LENGTH = 64


def alert_code(error_code: str | None, http_status: int | None) -> str:
    """The normalized error code of a failure: lower case, ids folded to ``#``, at most 64
    chars; ``http_503`` without a code, ``none`` without either."""
    if error_code:
        code = _IDS.sub("#", error_code.strip().lower()[:1000])
        code = _SEPARATORS.sub("_", code).strip("_")[:_CODE_LENGTH]
        if code:
            return code
    return f"http_{http_status}" if http_status is not None else "none"


def fingerprint(service_name: str, category: str, code: str) -> str:
    """The alert group's key: versioned, and of fixed length however long the name."""
    digest = hashlib.sha256(f"{service_name}\x1f{category}\x1f{code}".encode()).hexdigest()
    return f"{FINGERPRINT_VERSION}:{digest[:24]}"


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    group_wait: timedelta = timedelta(seconds=30)  # a group that heals sooner says nothing
    group_interval: timedelta = timedelta(seconds=300)  # at most one digest per group


# --- what a batch of outcomes tells the groups ----------------------------------------------

_DISABLED = "disabled:"
_ATTEMPT = "attempt:"


def touches(settled: Settled) -> tuple[GroupTouch, ...]:
    """Per alert group: how its latest failure healed, and what to announce of the batch:
    a disable (of the service, or of a user connection), a token refresh, a circuit that
    opened, a disable that the next failure makes."""
    found: dict[str, GroupTouch] = {}
    for o in settled.outcomes:
        job = o.job
        notices: dict[str, dict[str, Any]] = {}
        attempt = {"attempt": max(o.attempts, 1), "max_attempts": 3, "error": o.reason or ""}
        if o.disable_service:
            notices[f"{_DISABLED}service"] = {
                "reason": o.disable_service,
                "failures": o.failure_count,
            }
        if o.disable_user_connection:
            user = job.user_id or job.user_connection_id
            notices[f"{_DISABLED}user:{user}"] = {
                "reason": o.disable_user_connection,
                "failures": o.failure_count,
                "user_id": str(user),
            }
        if o.token_refreshed:
            notices[f"{_ATTEMPT}token_refresh"] = {"action": o.action, **attempt}
        if o.opens_circuit:
            notices[f"{_ATTEMPT}circuit_opened"] = {"action": o.action, **attempt}
        if o.disable_warning:
            notices[f"{_ATTEMPT}disable_warning"] = {
                **attempt,
                "action": o.disable_warning,
                "attempt": o.failure_count,
                "max_attempts": o.failure_count + 1,
            }
        resolution = o.action if o.resolved and job.alert_group else None
        if not notices and resolution is None:
            continue
        group = job.alert_group or fingerprint(job.service_name, job.category.value, "none")
        seen = found.get(group) or GroupTouch(group, job.service_name, job.category.value)
        found[group] = replace(
            seen,
            resolution=resolution or seen.resolution,
            notices={**seen.notices, **notices},
        )
    return tuple(found.values())


# --- the notifier's look at a group ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advanced:
    """A group after the notifier looked at it, and the messages that look decided."""

    group: AlertGroup
    alerts: tuple[Alert, ...]


def advance(group: AlertGroup, policy: AlertPolicy, now: datetime) -> Advanced:
    """The group's next state and messages.

    A closed group that failed again reopens (a regression when its last episode was
    announced). An episode is announced once its first failure is ``group_wait`` old and
    not every failure healed (a disable announces it at once); after that, failures only
    count, and a digest goes out at most once per ``group_interval`` when they grew. When
    every failure healed, one *Recovered* message closes it. Recovery attempts wait for
    the announcement (and are dropped with a group that heals first); each kind goes out at
    most once per interval. A disable always goes out.
    """
    g = group
    if g.closed_at is not None and g.failures > g.episode_base:
        g = replace(
            g,
            opened_at=g.sample_at or now,
            closed_at=None,
            regression=g.alerted_at is not None,
            alerted_at=None,
            reported_failures=g.episode_base,
            reported_at=None,
            resolution=None,
        )
    alerts: list[Alert] = []
    disables = {k: v for k, v in g.notices.items() if k.startswith(_DISABLED)}
    attempts = {k: v for k, v in g.notices.items() if k.startswith(_ATTEMPT)}
    is_open = g.closed_at is None
    if is_open and g.alerted_at is None:
        wait_over = now >= g.opened_at + policy.group_wait
        if wait_over and g.healed and not disables:
            return Advanced(_closed(g, now), ())
        if wait_over or disables:
            if not disables:  # else the Disabled message is the announcement
                alerts.append(_failure_detected(g))
            g = replace(g, alerted_at=now, reported_failures=g.failures, reported_at=now)
    alerts.extend(_disabled(g, disables))
    if not is_open or g.alerted_at is None:
        kept = {} if not is_open else attempts  # until the group is announced
        return Advanced(
            replace(g, notices=kept, next_check_at=_next_check(g, policy)), tuple(alerts)
        )
    noticed = dict(g.noticed)
    for key, notice in attempts.items():
        last = noticed.get(key)
        if last is None or now - datetime.fromisoformat(last) >= policy.group_interval:
            alerts.append(_attempt(g, notice))
            noticed[key] = now.isoformat()
    g = replace(g, notices={}, noticed=noticed)
    if g.healed:
        if g.episode_failures > 0:  # a group made by a notice only has nothing to recover
            alerts.append(_recovered(g, now))
        return Advanced(_closed(g, now), tuple(alerts))
    if g.failures > g.reported_failures and g.reported_at is not None:
        if now >= g.reported_at + policy.group_interval:
            alerts.append(_digest(g))
            g = replace(g, reported_failures=g.failures, reported_at=now)
    return Advanced(replace(g, next_check_at=_next_check(g, policy)), tuple(alerts))


def _next_check(g: AlertGroup, policy: AlertPolicy) -> datetime | None:
    if g.closed_at is not None:
        return None
    if g.alerted_at is None:
        return g.opened_at + policy.group_wait
    if g.failures > g.reported_failures and g.reported_at is not None:
        return g.reported_at + policy.group_interval
    return None


def _closed(g: AlertGroup, now: datetime) -> AlertGroup:
    return replace(
        g,
        closed_at=now,
        episode_base=g.failures,
        sample_event_id=None,
        sample_error=None,
        sample_plan=None,
        sample_at=None,
        notices={},
        next_check_at=None,
    )


def _alert(g: AlertGroup, kind: AlertKind, **fields: Any) -> Alert:
    defaults = {"error": g.sample_error or "", "second_opinion": g.llm_reasoning or ""}
    return Alert(kind, g.service_name, g.category, **{**defaults, **fields})


def _failure_detected(g: AlertGroup) -> Alert:
    return _alert(
        g,
        AlertKind.FAILURE,
        at=g.sample_at or g.opened_at,
        event_id=g.sample_event_id,
        failures=g.episode_failures,
        plan=g.sample_plan or "",
        status=g.sample_status or "pending",
        regression=g.regression,
    )


def _digest(g: AlertGroup) -> Alert:
    return _alert(
        g,
        AlertKind.DIGEST,
        failures=g.episode_failures,
        new_failures=g.failures - g.reported_failures,
        since=g.reported_at,
    )


def _recovered(g: AlertGroup, now: datetime) -> Alert:
    return _alert(
        g,
        AlertKind.RECOVERED,
        action=g.resolution or "recovered",
        failures=g.episode_failures,
        recovered_after=(now - g.opened_at).total_seconds(),
    )


def _attempt(g: AlertGroup, notice: Mapping[str, Any]) -> Alert:
    return _alert(
        g,
        AlertKind.ATTEMPT,
        action=str(notice.get("action", "")),
        attempt=int(notice.get("attempt", 1)),
        max_attempts=int(notice.get("max_attempts", 3)),
        error=str(notice.get("error") or g.sample_error or ""),
    )


def _disabled(g: AlertGroup, disables: Mapping[str, Mapping[str, Any]]) -> list[Alert]:
    """One message for the service's disable, one for its user connections' (listed)."""
    alerts = []
    service = disables.get(f"{_DISABLED}service")
    if service is not None:
        alerts.append(_disable_alert(g, service, []))
    users = [v for k, v in sorted(disables.items()) if k.startswith(f"{_DISABLED}user:")]
    if users:
        ids = [str(u.get("user_id", "")) for u in users]
        alerts.append(_disable_alert(g, users[0], ids))
    return alerts


def _disable_alert(g: AlertGroup, notice: Mapping[str, Any], user_ids: list[str]) -> Alert:
    return _alert(
        g,
        AlertKind.DISABLED,
        reason=str(notice.get("reason", "")),
        failures=int(notice.get("failures", 0)),
        user_ids=tuple(user_ids[:LISTED_USER_IDS]),
        more_user_ids=max(0, len(user_ids) - LISTED_USER_IDS),
    )


# --- what a webhook's answer means -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """What one post to a webhook got back; ``status`` None: no HTTP answer at all."""

    status: int | None
    body: str = ""  # the start of the body
    retry_after: float | None = None  # seconds, from a 429's Retry-After
    error: str | None = None  # the network error's name, without a URL


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    spacing: float = 1.0  # between two messages to one webhook (Slack: about one a second)
    retry_base: float = 1.0  # the first wait after a failure; doubling, jittered
    retry_cap: float = 300.0
    broken_probe: float = 900.0  # a broken channel tries its next message this often
    max_hold: float = DEFAULT_MAX_WAIT  # the longest Retry-After honoured


@dataclass(frozen=True, slots=True)
class Attempted:
    """What a delivery attempt decided: the message's new status (delivered, queued again,
    dead) and why; the channel's failures in a row, how long it holds its queue, and why
    it is broken (None: it is not)."""

    status: str
    error: str | None
    failures: int
    hold: float
    broken: str | None

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"


def after_delivery(
    channel: Channel,
    answer: WebhookAnswer,
    *,
    failures: int,
    broken: str | None,
    policy: DeliveryPolicy,
    rand: float,
) -> Attempted:
    """Success is a 2xx (for Slack, with the body ``ok``). A 429 holds the webhook's whole
    queue for its Retry-After; no answer or a 5xx retries after a jittered, doubling wait.
    Anything else is permanent: the message is dead and the channel broken, except that
    while it is broken its next message (a probe, every ``broken_probe`` seconds) stays
    queued, so that nothing loops and nothing more is lost."""
    status = answer.status
    if status is not None and 200 <= status < 300:
        if channel is not Channel.SLACK or answer.body.strip() == "ok":
            return Attempted("delivered", None, 0, 0.0, None)
    reason = _reason(answer)
    if status == 429:
        wait = answer.retry_after if answer.retry_after is not None else _backoff(0, policy, rand)
        return Attempted("queued", reason, failures, min(wait, policy.max_hold), broken)
    if status is None or status >= 500:
        return Attempted("queued", reason, failures + 1, _backoff(failures, policy, rand), broken)
    if broken is not None:
        return Attempted("queued", reason, failures + 1, policy.broken_probe, broken)
    return Attempted("dead", reason, failures + 1, policy.broken_probe, reason)


def _backoff(failures: int, policy: DeliveryPolicy, rand: float) -> float:
    delay: float = min(policy.retry_cap, policy.retry_base * 2.0 ** min(failures, 30))
    return delay * (0.5 + rand * 0.5)


def _reason(answer: WebhookAnswer) -> str:
    if answer.status is None:
        return f"no answer: {answer.error or 'network error'}"
    body = answer.body.strip().splitlines()[0] if answer.body.strip() else ""
    text = f"HTTP {answer.status} {body}".strip()
    if 200 <= answer.status < 300:
        text = f"HTTP {answer.status}, not ok: {body}".strip(": ")
    return scrub_text(text, max_length=200)
