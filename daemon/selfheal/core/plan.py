"""Planning: what the daemon will do about a diagnosed failure. Pure."""

from __future__ import annotations

from selfheal.models import Category

__all__ = ["planned_action"]

_PLANNED_ACTIONS = {
    Category.AUTH: "refresh OAuth token and replay (max 3 attempts)",
    Category.RATE_LIMIT: "retry after the rate-limit window",
    Category.NETWORK: "replay with exponential backoff (max 3 attempts)",
    Category.DATA: "no automatic retry; admin review of the payload",
    Category.UNKNOWN: "one retry after 1 s, then admin review",
}


def planned_action(category: Category) -> str:
    """What the daemon will do, recorded as ``action_taken`` before recovery runs."""
    return _PLANNED_ACTIONS[category]
