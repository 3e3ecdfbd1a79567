"""The shared frozen values: what flows from stage to stage (claim -> diagnose -> record ->
plan -> execute -> record outcome). Plain data, no behaviour beyond coercion."""

from __future__ import annotations

import enum
import itertools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from selfheal.core.sanitize import read_json, storable_text

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The daemon's clock; the pure core is handed one instead of reading it."""
    return datetime.now(UTC)


class Category(enum.StrEnum):
    AUTH = "auth"
    RATE_LIMIT = "rate_limit"
    NETWORK = "network"
    DATA = "data"
    UNKNOWN = "unknown"


class Status(enum.StrEnum):
    PENDING = "pending"
    RESOLVED = "resolved"
    DISABLED = "disabled"


def category_of(value: Any) -> Category:
    """A stored category; anything unexpected reads as unknown."""
    try:
        return Category(value)
    except ValueError:
        return Category.UNKNOWN


@dataclass(frozen=True, slots=True)
class Failure:
    """What the analyzer sees of one failed call; already coerced to sane types.

    ``response_headers`` has lower-case names and string values.
    """

    service_name: str = ""
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    response_headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def coerce(
        cls,
        service_name: Any = None,
        http_status: Any = None,
        error_code: Any = None,
        error_message: Any = None,
        response_headers: Any = None,
    ) -> Failure:
        """Build a Failure from untrusted values: odd types become None or empty, never raise."""
        return cls(
            service_name=_text(service_name) or "",
            http_status=_status(http_status),
            error_code=_text(error_code),
            error_message=_text(error_message),
            response_headers=_headers(response_headers),
        )


@dataclass(frozen=True, slots=True)
class Analysis:
    category: Category
    confidence: float
    signals: tuple[str, ...]
    advice: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category.value,
            "confidence": self.confidence,
            "signals": list(self.signals),
            "advice": self.advice,
        }


# --- claim, diagnose, record ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedFailure:
    """An integration_events row as claimed, before any coercion."""

    event_id: uuid.UUID
    service_name: str
    http_status: Any
    error_code: Any
    error_message: Any
    response_headers: str | None  # JSON text: the daemon reads it itself, within bounds
    payload: str | None  # JSON text, read (within bounds) only for a data failure's shape
    user_id: uuid.UUID | None
    endpoint: str | None
    attempts: int
    vanished: bool = False  # the event row was deleted after it was queued
    failed_at: datetime | None = None  # the event row's created_at


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The decision record to store for one failure."""

    event_id: uuid.UUID
    service_name: str
    user_id: uuid.UUID | None
    analysis: Analysis
    reason: str
    action: str
    signals_json: str
    next_retry_at: datetime | None
    alert_group: str = ""  # the fingerprint of its alert group (core/alerts.py)
    alert_code: str = ""  # the normalized error code the fingerprint is made of


@dataclass(frozen=True, slots=True)
class Recorded:
    recovery_id: uuid.UUID
    diagnosis: Diagnosis


# --- plan, execute, record the outcome ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """A leased record and what its recovery needs. Tokens are never shown in repr.

    ``threshold_count`` counts the service's failures of this category up to this one,
    since its counters were last reset (within the window for network), capped.
    """

    record_id: uuid.UUID
    event_id: uuid.UUID
    service_name: str
    category: Category
    attempts: int
    deferrals: int
    endpoint: str | None
    http_method: str | None
    payload: str | None  # the JSON text as stored: replayed as it is, never parsed
    response_headers: str | None  # JSON text, read within bounds when needed
    failed_at: datetime
    service_id: uuid.UUID | None
    service_enabled: bool
    oauth_config: Mapping[str, Any] | None
    user_connection_id: uuid.UUID | None
    user_connection_enabled: bool
    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    user_connection_failures: int
    threshold_count: int
    event_deleted: bool = False  # the integration_events row is gone (retention)
    # Hosts the user's token may go to (None: none listed, so no token is sent).
    allowed_hosts: tuple[str, ...] | None = None
    # Circuits: open, how many probes failed, when the next is due, and whether this job
    # is the probe.
    circuit_next_probe_at: datetime | None = None
    circuit_counted_at: datetime | None = None  # a failed probe last counted
    service_circuit_open: bool = False
    service_failed_probes: int = 0
    user_connection_circuit_open: bool = False
    user_connection_failed_probes: int = 0
    probe: bool = False
    counted_before: bool = False  # an earlier visit counted it towards a threshold
    user_id: uuid.UUID | None = None  # the event's user (whose connection it used)
    alert_group: str | None = None  # None: recorded before alerts existed
    retry_stopped: str | None = None  # why the LLM's answer for its group stops a retry

    @classmethod
    def from_columns(cls, **columns: Any) -> Job:
        """A row read by name (``psycopg.rows.kwargs_row``); odd stored values coerced."""
        oauth = columns["oauth_config"]
        hosts = columns.get("allowed_hosts")
        return cls(
            **{
                **columns,
                "category": category_of(columns["category"]),
                "oauth_config": oauth if isinstance(oauth, Mapping) else None,
                "allowed_hosts": None if hosts is None else tuple(str(h) for h in hosts),
            }
        )

    @property
    def circuit_open(self) -> bool:
        """An open circuit holds this job: its service's, or for auth its user connection's."""
        return self.service_circuit_open or (
            self.category is Category.AUTH and self.user_connection_circuit_open
        )

    @property
    def first_visit(self) -> bool:
        return self.attempts == 0 and self.deferrals == 0


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What one replay got back: a status (None: no HTTP answer at all), the headers with
    lower-case names, a provider error code, and the start of the body."""

    status: int | None
    headers: Mapping[str, str]
    error_code: str | None
    body_sample: str

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.error_code is None


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    refresh_token: str | None  # a rotated refresh token replaces the old one
    expires_in: float | None

    def __repr__(self) -> str:
        return f"TokenGrant(expires_in={self.expires_in}, rotated={self.refresh_token is not None})"


@dataclass(frozen=True, slots=True)
class UserConnectionTokens:
    """A user connection's tokens as read under its refresh lock."""

    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    refreshed_at: datetime | None
    reauth_digest: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one visit of a record ended, and what it asks of its service and user connection."""

    job: Job
    status: Status
    action: str
    attempts: int = 0  # replays made by this visit
    next_retry_at: datetime | None = None
    deferrals: int = 0
    reason: str | None = None  # a newer failure_reason (sanitized), or keep the old one
    disable_service: str | None = None
    disable_user_connection: str | None = None
    user_connection_failed: bool = False
    rate_limited_until: datetime | None = None
    backoff: float = 0.0  # the waits of the schedule, in seconds (not the time they took)
    held: bool = False  # waits behind an open circuit until it closes
    unhealed: bool = False  # healing ended without fixing it: counts towards thresholds
    probe_failed: bool = False  # this was a circuit's probe, and the service still fails
    probe_counted: bool = False  # ...and that failure counts towards the thresholds
    opens_circuit: bool = False  # its replays found the service down: the circuit opens
    opens_user_circuit: bool = False  # its auth recovery failed: the user connection's
    closes_circuit: bool = False  # a probe found the service up (its request failed alone)
    token_refreshed: bool = False  # this visit asked the token endpoint for a new token
    # The thresholds' count with this failure, and a warning that the next one disables.
    failure_count: int = 0
    disable_warning: str | None = None

    @property
    def resolved(self) -> bool:
        return self.status is Status.RESOLVED

    @property
    def counted(self) -> bool:
        """Whether thresholds count it: a failure once, when its healing first ends
        without fixing it, and a failed probe (at most one a minute: the failures waiting
        behind a circuit count through it, not one by one)."""
        return self.probe_counted or (self.unhealed and not self.job.counted_before)


class Recipe(enum.StrEnum):
    """How a planned recovery is executed."""

    REFRESH_AND_REPLAY = "refresh_and_replay"  # auth
    AFTER_RATE_LIMIT = "after_rate_limit"  # rate_limit
    BACKOFF = "backoff"  # network, unknown


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with a job: an outcome decided without any request, or a recipe to run."""

    job: Job
    outcome: Outcome | None = None
    recipe: Recipe | None = None


class CircuitChange(enum.StrEnum):
    OPEN = "open"
    PROBE_FAILED = "probe_failed"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class ServiceEffect:
    """What a batch of outcomes does to one integrations_master row."""

    service_id: uuid.UUID
    service_name: str
    reset: bool = False  # a recovery succeeded: the counters start again
    failed: int = 0  # counted failures after the last reset in the batch
    disable_reason: str | None = None
    rate_limited_until: datetime | None = None
    circuit: CircuitChange | None = None
    next_probe_at: datetime | None = None
    probe_counted: bool = False  # a failed probe counted: circuit_counted_at moves


@dataclass(frozen=True, slots=True)
class UserConnectionEffect:
    """What a batch of outcomes does to one user_integrations row."""

    user_connection_id: uuid.UUID
    service_name: str
    reset: bool = False
    failed: int = 0
    disable_reason: str | None = None
    errored: bool = False  # last_error_at moves
    circuit: CircuitChange | None = None
    next_probe_at: datetime | None = None
    probe_counted: bool = False


@dataclass(frozen=True, slots=True)
class TargetState:
    """A service or user connection the database says is down (circuit open) or disabled."""

    scope: str  # "service" | "user_connection"
    id: uuid.UUID
    name: str | None  # the service's name (None for a user connection)
    open: bool
    disabled: bool


@dataclass(frozen=True, slots=True)
class Effects:
    services: tuple[ServiceEffect, ...]
    user_connections: tuple[UserConnectionEffect, ...]


@dataclass(frozen=True, slots=True)
class Settled:
    """A batch of outcomes after the thresholds had their say, and what it does."""

    outcomes: tuple[Outcome, ...]
    effects: Effects


_MAX_FIELD = 64 * 1024


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = str(value)
    return storable_text(value[:_MAX_FIELD]) or None


def _status(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        # ASCII digits only: '²'.isdigit() is true, and int('²') raises.
        value = int(text) if text.isascii() and text.isdigit() else None
    if isinstance(value, int) and 100 <= value <= 599:
        return value
    return None


_MAX_HEADERS = 200


def _headers(value: Any) -> dict[str, str]:
    """Response headers as names and text: from a mapping or its JSON text, at most
    200 of them; values that are neither text, numbers nor lists of those are dropped (a
    nested value is no header, and printing a deep one could exhaust the stack)."""
    if isinstance(value, str):
        value = read_json(value)
    if not isinstance(value, Mapping):
        return {}
    headers: dict[str, str] = {}
    for name, raw in itertools.islice(value.items(), _MAX_HEADERS):
        key = _text(name)
        if not key:
            continue
        if isinstance(raw, list | tuple):
            raw = ", ".join(str(item) for item in raw if _is_scalar(item))
        if not _is_scalar(raw):
            continue
        text = _text(raw)
        if text is not None:
            headers[key.strip().lower()] = text.strip()
    return headers


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | bytes)


# --- alerts -----------------------------------------------------------------------------------


class AlertKind(enum.StrEnum):
    """The specification's four messages, and the digest of a group that keeps failing."""

    FAILURE = "failure"  # Integration Failure Detected (or a regression: it failed again)
    DIGEST = "digest"  # more failures of an alerted group since its last message
    ATTEMPT = "attempt"  # Recovery Attempt
    RECOVERED = "recovered"  # Integration Recovered
    DISABLED = "disabled"  # Integration Disabled


#: The user connections one Disabled message names; the rest it counts.
LISTED_USER_IDS = 10


class Channel(enum.StrEnum):
    SLACK = "slack"
    TEAMS = "teams"


@dataclass(frozen=True, slots=True)
class Alert:
    """What one admin message says, whatever the channel. Every text in it came from a
    third party (or from its sanitized record) and is rendered as untrusted.

    Fields by kind:
    - FAILURE: ``error`` the group's first failure, ``event_id`` and ``at`` its id and
      time, ``plan`` the recovery planned, ``status`` where it stands, ``failures`` the
      group's so far; ``regression``: the group had healed and fails again.
    - DIGEST: ``new_failures`` since ``since`` (the last message), ``failures`` in all.
    - ATTEMPT: ``action``, ``attempt`` of ``max_attempts``, ``error`` the previous error.
    - RECOVERED: ``action`` the resolution, ``recovered_after`` seconds from the first
      failure, ``error`` the original error, ``failures`` how many healed.
    - DISABLED: ``reason``, ``failures`` the count that crossed the threshold,
      ``user_ids`` the user connections disabled (empty: the service itself; at most ten,
      ``more_user_ids`` the rest), ``action`` the command that re-enables.
    - Every kind: ``second_opinion`` the LLM's reading of the group, once it answered
      (advice, shown with the failure, digest and disable messages).
    """

    kind: AlertKind
    service_name: str
    category: str
    error: str = ""
    at: datetime | None = None
    event_id: uuid.UUID | None = None
    failures: int = 0
    new_failures: int = 0
    since: datetime | None = None
    plan: str = ""
    status: str = ""
    regression: bool = False
    action: str = ""
    attempt: int = 0
    max_attempts: int = 3
    recovered_after: float | None = None
    reason: str = ""
    user_ids: tuple[str, ...] = ()
    more_user_ids: int = 0
    second_opinion: str = ""  # the LLM's reading of the group, when it has one


@dataclass(frozen=True, slots=True)
class AlertGroup:
    """A selfheal_alert_groups row as the notifier reads it (see sql/migrations/0008), with
    what it needs to know of the group's failures: whether every one of them healed, and
    where the episode's first failure stands."""

    fingerprint: str
    service_name: str
    category: str
    error_code: str
    failures: int
    opened_at: datetime
    episode_base: int
    sample_event_id: uuid.UUID | None
    sample_error: str | None
    sample_plan: str | None
    sample_at: datetime | None
    alerted_at: datetime | None
    reported_failures: int
    reported_at: datetime | None
    closed_at: datetime | None
    regression: bool
    resolution: str | None
    notices: Mapping[str, Mapping[str, Any]]
    noticed: Mapping[str, str]  # attempt kind -> ISO time it was last sent
    next_check_at: datetime | None
    llm_reasoning: str | None = None  # the LLM's second opinion, once it answered
    healed: bool = False
    sample_status: str | None = None

    @property
    def episode_failures(self) -> int:
        return self.failures - self.episode_base


@dataclass(frozen=True, slots=True)
class GroupTouch:
    """What a batch of outcomes tells one alert group: how its latest failure healed, and
    the recovery attempts and disables to announce (by kind, see core/alerts.py)."""

    fingerprint: str
    service_name: str
    category: str
    resolution: str | None = None
    notices: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClaimedAlert:
    """An outbox row leased for delivery, with its channel's state at the claim."""

    id: int
    alert_group: str | None
    kind: str
    alert: Mapping[str, Any]  # Alert's fields as stored (see alert_from_row)
    attempts: int
    failures: int  # the channel's failed deliveries in a row
    broken: str | None  # why the channel is broken (this delivery is its probe)


@dataclass(frozen=True, slots=True)
class ClaimedQuestion:
    """An alert group leased for the LLM's second opinion, with its sample failure: the
    record's analyzer reading and the event's fields as the integration wrote them."""

    call_id: int
    fingerprint: str
    service_name: str
    category: str
    signals: str | None  # analyzer_signals as JSON text
    sample_error: str | None  # the record's sanitized failure_reason
    http_status: Any
    error_code: Any
    error_message: Any
    retry_count: Any
    payload: str | None  # JSON text, read (within bounds) only for its shape


@dataclass(frozen=True, slots=True)
class QueuedAlert:
    id: int
    channel: str
    alert_group: str | None
    kind: str


def alert_from_row(fields: Mapping[str, Any]) -> Alert:
    """An Alert from its stored JSON (orjson's dataclass form); unknown keys are ignored."""
    known = {k: v for k, v in fields.items() if k in Alert.__dataclass_fields__}
    for name in ("at", "since"):
        if isinstance(known.get(name), str):
            known[name] = datetime.fromisoformat(known[name])
    if isinstance(known.get("event_id"), str):
        known["event_id"] = uuid.UUID(known["event_id"])
    known["user_ids"] = tuple(str(u) for u in known.get("user_ids", ()))
    return Alert(**{**known, "kind": AlertKind(known["kind"])})


@dataclass(frozen=True, slots=True)
class Gauges:
    """What the sampler reads every few seconds (db/queries.GAUGES)."""

    pending: int
    disabled_services: int
    disabled_user_connections: int
    open_circuits: int
    inbox: int
    oldest_inbox_seconds: float
    outbox: int
