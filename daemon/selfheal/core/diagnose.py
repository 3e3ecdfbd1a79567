"""Turn one claimed failure into the decision record to store: pure, no I/O."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson

from selfheal.core.alerts import alert_code, fingerprint
from selfheal.core.analyzer import analyze
from selfheal.core.plan import planned_action
from selfheal.core.sanitize import read_json, scrub, scrub_text, shape
from selfheal.models import Category, ClaimedFailure, Diagnosis, Failure, ReplayResult

__all__ = [
    "diagnose",
    "failure_reason",
    "needs_reauthorization",
    "parked_signals",
    "replay_failure_reason",
]

_REASON_LENGTH = 1000
_INVALID_GRANT = re.compile(r"\binvalid_grant\b", re.IGNORECASE)


def diagnose(claimed: ClaimedFailure, now: datetime) -> Diagnosis:
    failure = Failure.coerce(
        claimed.service_name,
        claimed.http_status,
        claimed.error_code,
        claimed.error_message,
        claimed.response_headers,
    )
    analysis = analyze(failure)
    signals: dict[str, Any] = {
        "signals": list(analysis.signals),
        "confidence": analysis.confidence,
        "advice": analysis.advice,
    }
    if failure.http_status is not None:
        signals["http_status"] = failure.http_status
    if failure.error_code:
        signals["error_code"] = scrub_text(failure.error_code, max_length=200)
    if analysis.category is Category.DATA and claimed.payload is not None:
        signals["payload_shape"] = shape(read_json(claimed.payload))
    service_name = failure.service_name or "unknown"
    code = alert_code(signals.get("error_code"), failure.http_status)
    return Diagnosis(
        event_id=claimed.event_id,
        service_name=service_name,
        user_id=claimed.user_id,
        analysis=analysis,
        reason=failure_reason(failure),
        action=planned_action(analysis.category),
        signals_json=orjson.dumps(scrub(signals)).decode(),
        # Due at once: the healer decides (thresholds first, so data failures too).
        next_retry_at=now,
        alert_group=fingerprint(service_name, analysis.category.value, code),
        alert_code=code,
    )


def failure_reason(failure: Failure) -> str:
    """One sanitized line: status, code and message."""
    head = f"HTTP {failure.http_status}" if failure.http_status is not None else "no HTTP status"
    if failure.error_code:
        head = f"{head} {failure.error_code}"
    text = f"{head}: {failure.error_message}" if failure.error_message else head
    return scrub_text(text, max_length=_REASON_LENGTH)


def parked_signals(error: str, attempts: int) -> str:
    """analyzer_signals of a parked failure; `error` is already sanitized."""
    return orjson.dumps(
        {
            "signals": ["parked"],
            "confidence": 0.0,
            "advice": "Processing this failure kept failing; inspect the event and the logs.",
            "error": error,
            "attempts": attempts,
        }
    ).decode()


def needs_reauthorization(oauth_error: str | None) -> bool:
    """Whether a failed token refresh means the user must re-authorize (``invalid_grant``).

    Accepts the OAuth ``error`` field or the raw token-endpoint body.
    """
    return oauth_error is not None and _INVALID_GRANT.search(oauth_error) is not None


def replay_failure_reason(service_name: str, result: ReplayResult | None) -> str | None:
    """The sanitized reason of the latest replay failure, for the record."""
    if result is None:
        return None
    failure = Failure.coerce(
        service_name, result.status, result.error_code, result.body_sample, result.headers
    )
    return f"replay failed ({analyze(failure).category.value}): {failure_reason(failure)}"
