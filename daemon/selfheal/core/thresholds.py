"""When a user connection (auth) or a service (the other categories) is disabled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from selfheal.models import Category

__all__ = ["Thresholds", "crosses_threshold"]


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
