"""What a batch of outcomes does to its services and user connections. Pure."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from selfheal.models import (
    Category,
    Effects,
    Outcome,
    ServiceEffect,
    Status,
    UserConnectionEffect,
)

__all__ = ["fold_effects"]


def fold_effects(outcomes: Iterable[Outcome]) -> Effects:
    """Fold outcomes in the order their failures arrived, so that the failure that crossed a
    threshold names the reason: a success resets a counter, an unhealed failure adds one.

    Service counters take every category but auth (an auth failure lives in one user's
    connection) and skip outcomes that are themselves `disabled` (they made no request).
    """
    services: dict[uuid.UUID, ServiceEffect] = {}
    users: dict[uuid.UUID, UserConnectionEffect] = {}
    for o in sorted(outcomes, key=lambda o: o.job.failed_at):
        job = o.job
        if job.service_id is not None:
            effect = services.get(job.service_id) or ServiceEffect(job.service_id)
            if o.resolved:
                effect = replace(effect, reset=True, failed=0)
            elif job.category is not Category.AUTH and o.status is not Status.DISABLED:
                effect = replace(effect, failed=effect.failed + 1)
            services[job.service_id] = replace(
                effect,
                disable_reason=effect.disable_reason or o.disable_service,
                rate_limited_until=_later_of(effect.rate_limited_until, o.rate_limited_until),
            )
        if job.user_connection_id is not None:
            user = users.get(job.user_connection_id) or UserConnectionEffect(job.user_connection_id)
            if o.resolved:
                user = replace(user, reset=True, failed=0)
            else:
                user = replace(user, failed=user.failed + o.user_connection_failed, errored=True)
            users[job.user_connection_id] = replace(
                user, disable_reason=user.disable_reason or o.disable_user_connection
            )
    return Effects(tuple(services.values()), tuple(users.values()))


def _later_of(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)
