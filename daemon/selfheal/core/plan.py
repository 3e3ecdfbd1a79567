"""Planning: what to do with a leased record, and the outcomes a recovery can end in.

Pure: a Job, the thresholds and the clock's reading in; frozen values out. The executor
(services/execute.py) runs the HTTP of a recipe and calls back here to word the outcome.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from selfheal.core.retry import schedule_retry
from selfheal.core.thresholds import Thresholds, crosses_threshold, threshold_reason
from selfheal.models import Category, Job, Outcome, Plan, Recipe, Status

__all__ = [
    "auth_failed",
    "crashed",
    "later",
    "plan",
    "planned_action",
    "rate_limit_window",
    "resolved",
]

_PLANNED_ACTIONS = {
    Category.AUTH: "refresh OAuth token and replay (max 3 attempts)",
    Category.RATE_LIMIT: "retry after the rate-limit window",
    Category.NETWORK: "replay with exponential backoff (max 3 attempts)",
    Category.DATA: "no automatic retry; admin review of the payload",
    Category.UNKNOWN: "one retry after 1 s, then admin review",
}

_RECIPES = {
    Category.AUTH: Recipe.REFRESH_AND_REPLAY,
    Category.RATE_LIMIT: Recipe.AFTER_RATE_LIMIT,
    Category.NETWORK: Recipe.BACKOFF,
    Category.UNKNOWN: Recipe.BACKOFF,
}

#: A recovery that crashed is tried again after this long.
CRASH_RETRY = timedelta(minutes=5)


def planned_action(category: Category) -> str:
    """What the daemon will do, recorded as ``action_taken`` before recovery runs."""
    return _PLANNED_ACTIONS[category]


def plan(job: Job, thresholds: Thresholds, replay_problem: str | None) -> Plan:
    """Decide a job: disabled, over a threshold, never replayed, or a recipe to execute.

    ``replay_problem`` says why the event cannot be replayed (no endpoint, a bad URL or
    method), None when it can; it is checked only for jobs that would replay.
    """
    if job.event_deleted:
        return _decided(job, Status.PENDING, "the event was deleted; nothing to replay")
    if not job.service_enabled:
        return _decided(job, Status.DISABLED, f"recovery disabled for {job.service_name}")
    if job.category is Category.AUTH and not job.user_connection_enabled:
        return _decided(job, Status.DISABLED, "recovery disabled for this user connection")
    if (
        job.first_visit
        and job.category is not Category.AUTH
        and crosses_threshold(job.category, job.threshold_count, thresholds)
    ):
        reason = threshold_reason(job.category, thresholds)
        outcome = Outcome(
            job, Status.DISABLED, f"service disabled: {reason}", disable_service=reason
        )
        return Plan(job, outcome=outcome)
    recipe = _RECIPES.get(job.category)
    if recipe is None:  # data: the same payload cannot succeed
        return _decided(job, Status.PENDING, planned_action(job.category))
    if replay_problem is not None:
        return _decided(job, Status.PENDING, f"cannot replay: {replay_problem}")
    return Plan(job, recipe=recipe)


def _decided(job: Job, status: Status, action: str) -> Plan:
    return Plan(job, outcome=Outcome(job, status, action))


def resolved(job: Job, attempts: int, how: str, backoff: float) -> Outcome:
    plural = "s" if attempts != 1 else ""
    return Outcome(
        job,
        Status.RESOLVED,
        f"{how} ({attempts} attempt{plural})",
        attempts=attempts,
        backoff=backoff,
    )


def later(
    job: Job,
    category: Category,
    what: str,
    attempts: int,
    reason: str | None,
    *,
    now: datetime,
    rand: float,
    max_wait: float,
) -> Outcome:
    """Pending, with the category's next out-of-process retry when it has one."""
    next_retry_at = schedule_retry(
        category, now=now, deferrals=job.deferrals, rand=rand, cap=max_wait
    )
    scheduled = next_retry_at is not None
    return Outcome(
        job,
        Status.PENDING,
        f"{what}; {'retry scheduled' if scheduled else 'admin review'}",
        attempts=attempts,
        next_retry_at=next_retry_at,
        deferrals=job.deferrals + scheduled,
        reason=reason,
    )


def rate_limit_window(
    job: Job, wait: float, attempts: int, reason: str | None, *, now: datetime
) -> Outcome:
    """Pending until the window ends; the whole service waits for it."""
    until = now + timedelta(seconds=wait)
    return Outcome(
        job,
        Status.PENDING,
        f"rate limited; retry after {round(wait)} s",
        attempts=attempts,
        next_retry_at=until,
        deferrals=job.deferrals + 1,
        reason=reason,
        rate_limited_until=until,
    )


def auth_failed(
    job: Job, action: str, attempts: int, reason: str | None, thresholds: Thresholds
) -> Outcome:
    """An auth recovery that did not heal: counts against the user connection, and
    disables it at the threshold."""
    if job.user_connection_id is None:
        return Outcome(job, Status.PENDING, action, attempts=attempts, reason=reason)
    failures = job.user_connection_failures + 1
    if crosses_threshold(Category.AUTH, failures, thresholds):
        return Outcome(
            job,
            Status.DISABLED,
            f"{action}; user connection disabled",
            attempts=attempts,
            reason=reason,
            disable_user_connection=threshold_reason(Category.AUTH, thresholds),
            user_connection_failed=True,
        )
    return Outcome(
        job, Status.PENDING, action, attempts=attempts, reason=reason, user_connection_failed=True
    )


def crashed(job: Job, error_type: str, *, now: datetime) -> Outcome:
    """A recovery that raised: the record stays pending and is tried again later."""
    return Outcome(
        job,
        Status.PENDING,
        f"recovery crashed ({error_type}); retry scheduled",
        next_retry_at=now + CRASH_RETRY,
        deferrals=job.deferrals + 1,
    )
