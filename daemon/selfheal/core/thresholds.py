"""When a user connection (auth) or a service (the other categories) is disabled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from selfheal.models import Category

__all__ = ["Thresholds", "crosses_threshold", "threshold_reason"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a user connection (auth) or a service (the rest) is disabled; rate limits never are."""

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
        """Counting past the largest service threshold decides nothing more."""
        return max(self.network_failures, self.data_consecutive, self.unknown_consecutive)

    def limit(self, category: Category) -> int | None:
        """The count that disables, or None: rate limits never disable."""
        return {
            Category.AUTH: self.auth_consecutive,
            Category.NETWORK: self.network_failures,
            Category.DATA: self.data_consecutive,
            Category.UNKNOWN: self.unknown_consecutive,
        }.get(category)


def crosses_threshold(category: Category, count: int, thresholds: Thresholds) -> bool:
    """Whether this failure disables its user connection (auth) or service (the rest).

    ``count`` includes the current failure and is the category's own count: consecutive
    failures for auth (per user connection), data and unknown (per service); for network,
    the service's failures within ``thresholds.network_window``.
    """
    limit = thresholds.limit(category)
    return limit is not None and count >= limit


def threshold_reason(category: Category, thresholds: Thresholds) -> str:
    """Why a threshold disabled something, naming the count that crossed it."""
    limit = thresholds.limit(category)
    if category is Category.NETWORK:
        minutes = int(thresholds.network_window.total_seconds() // 60)
        return f"{limit} network failures in {minutes} minutes"
    if category is Category.AUTH:
        return f"{limit} consecutive auth failures after refresh attempts"
    return f"{limit} consecutive {category.value} failures"
