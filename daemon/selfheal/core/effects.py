"""What a batch of outcomes does: the thresholds' verdict on each (a failure that healing
could not fix counts; the one that crosses a threshold disables), and the effects on its
services and user connections (counters, disables, rate-limit windows, circuits). Pure."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from selfheal.core.circuit import CircuitPolicy, probe_delay
from selfheal.core.thresholds import Thresholds, crosses_threshold, threshold_reason
from selfheal.models import (
    Category,
    CircuitChange,
    Effects,
    Outcome,
    ServiceEffect,
    Settled,
    Status,
    UserConnectionEffect,
)

__all__ = ["fold_effects", "settle"]


def settle(
    outcomes: Iterable[Outcome],
    thresholds: Thresholds,
    policy: CircuitPolicy,
    *,
    now: datetime,
    rand: float,
) -> Settled:
    """The thresholds' verdict, in the order the failures arrived: each counted failure
    (see Outcome.counted) adds one to its service's count for its category, and the one
    that reaches the threshold disables the service. Auth failures count per user
    connection (consecutive), and disable it the same way. Then the effects of what is
    left."""
    services: dict[tuple[uuid.UUID, Category], int] = {}
    users: dict[tuple[uuid.UUID, Category], int] = {}
    settled: list[Outcome] = []
    for o in sorted(outcomes, key=lambda o: o.job.failed_at):
        job = o.job
        if o.user_connection_failed and job.user_connection_id is not None:
            key = (job.user_connection_id, Category.AUTH)
            o = _verdict(o, users, key, job.user_connection_failures, thresholds)
        if o.counted and job.service_id is not None and job.category is not Category.AUTH:
            key = (job.service_id, job.category)
            o = _verdict(o, services, key, job.threshold_count, thresholds)
        settled.append(o)
    return Settled(tuple(settled), fold_effects(settled, policy, now=now, rand=rand))


def _verdict(
    o: Outcome,
    counts: dict[tuple[uuid.UUID, Category], int],
    key: tuple[uuid.UUID, Category],
    counted_before: int,
    thresholds: Thresholds,
) -> Outcome:
    """One more failure for `key` (a user connection's auth failures, or a service's of one
    category); the one that reaches the threshold disables it."""
    count = max(counts.get(key, 0), counted_before) + 1
    counts[key] = count
    category = key[1]
    o = replace(o, failure_count=count)
    if o.status is Status.DISABLED:
        return o
    if not crosses_threshold(category, count, thresholds):
        if crosses_threshold(category, count + 1, thresholds):
            what = "the user connection" if category is Category.AUTH else o.job.service_name
            warning = f"one more unhealed {category.value} failure disables {what}"
            return replace(o, disable_warning=warning)
        return o
    reason = threshold_reason(category, thresholds)
    disabled = replace(o, status=Status.DISABLED, next_retry_at=None, held=False)
    if category is Category.AUTH:
        return replace(
            disabled,
            action=f"{o.action}; user connection disabled",
            disable_user_connection=reason,
        )
    return replace(
        disabled, action=f"{o.action}; service disabled: {reason}", disable_service=reason
    )


def fold_effects(
    outcomes: Iterable[Outcome], policy: CircuitPolicy, *, now: datetime, rand: float
) -> Effects:
    """Fold outcomes in the order their failures arrived, so that the failure that crossed a
    threshold names the reason: a success resets a counter and closes the circuit, a
    counted failure adds one, a recovery that found the service down opens its circuit,
    a failed probe moves the next one further off.

    Service counters take every category but auth (an auth failure lives in one user's
    connection); user connections take their auth outcomes.
    """
    services: dict[uuid.UUID, ServiceEffect] = {}
    users: dict[uuid.UUID, UserConnectionEffect] = {}
    for o in sorted(outcomes, key=lambda o: o.job.failed_at):
        job = o.job
        if job.service_id is not None:
            effect = services.get(job.service_id) or ServiceEffect(job.service_id, job.service_name)
            changed = _service_change(effect, o)
            circuit = _circuit(effect, o, service=True, policy=policy, now=now, rand=rand)
            if changed or circuit is not None:
                effect = replace(effect, **changed, **(circuit or {}))
            services[job.service_id] = effect
        if job.user_connection_id is not None:
            user = users.get(job.user_connection_id) or UserConnectionEffect(
                job.user_connection_id, job.service_name
            )
            changed = _user_change(user, o)
            circuit = _circuit(user, o, service=False, policy=policy, now=now, rand=rand)
            users[job.user_connection_id] = replace(user, **changed, **(circuit or {}))
    return Effects(tuple(services.values()), tuple(users.values()))


def _service_change(effect: ServiceEffect, o: Outcome) -> dict[str, Any]:
    """The fields one outcome changes on its service's effect (most change none)."""
    changed: dict[str, Any] = {}
    if o.resolved:
        if not effect.reset or effect.failed:
            changed.update(reset=True, failed=0)
    elif o.job.category is not Category.AUTH and o.counted:
        changed["failed"] = effect.failed + 1
    if o.disable_service and effect.disable_reason is None:
        changed["disable_reason"] = o.disable_service
    if o.rate_limited_until is not None:
        changed["rate_limited_until"] = _later_of(effect.rate_limited_until, o.rate_limited_until)
    return changed


def _user_change(user: UserConnectionEffect, o: Outcome) -> dict[str, Any]:
    changed: dict[str, Any] = (
        {"reset": True, "failed": 0}
        if o.resolved
        else {"failed": user.failed + o.user_connection_failed, "errored": True}
    )
    if o.disable_user_connection and user.disable_reason is None:
        changed["disable_reason"] = o.disable_user_connection
    return changed


def _circuit(
    effect: ServiceEffect | UserConnectionEffect,
    o: Outcome,
    *,
    service: bool,
    policy: CircuitPolicy,
    now: datetime,
    rand: float,
) -> dict[str, Any] | None:
    """The circuit change an outcome makes (a later outcome of the batch overrides an
    earlier one); the next probe when the outcome's own next_retry_at does not say."""
    job = o.job
    was_open = job.service_circuit_open if service else job.user_connection_circuit_open
    if o.resolved or (service and o.closes_circuit):
        # Only a circuit that is open (or opened earlier in this batch) has to close: a
        # close costs the write a look for the failures it releases.
        if was_open or effect.circuit is CircuitChange.OPEN:
            return {"circuit": CircuitChange.CLOSE, "next_probe_at": None}
        return None
    if o.opens_circuit if service else o.opens_user_circuit:
        return {
            "circuit": CircuitChange.OPEN,
            "next_probe_at": o.next_retry_at or _after(0, policy, now, rand),
        }
    # A probe probes the service's circuit when it is open, else the user connection's.
    probed = job.service_circuit_open if service else not job.service_circuit_open
    if o.probe_failed and probed:
        failed = job.service_failed_probes if service else job.user_connection_failed_probes
        return {
            "circuit": CircuitChange.PROBE_FAILED,
            "next_probe_at": o.next_retry_at or _after(failed + 1, policy, now, rand),
            "probe_counted": o.probe_counted,
        }
    return None


def _after(failed_probes: int, policy: CircuitPolicy, now: datetime, rand: float) -> datetime:
    return now + timedelta(seconds=probe_delay(failed_probes, rand, policy))


def _later_of(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)
