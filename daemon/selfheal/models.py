"""Plain frozen data shared by the pure core (analyzer, policy, sanitize) and the shell."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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


_MAX_FIELD = 64 * 1024


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = str(value)
    # Postgres text cannot hold NUL; lone surrogates cannot be encoded.
    value = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return value[:_MAX_FIELD] or None


def _status(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 100 <= value <= 599:
        return value
    return None


def _headers(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    headers: dict[str, str] = {}
    for name, raw in value.items():
        key = _text(name)
        if not key:
            continue
        if isinstance(raw, list | tuple):
            raw = ", ".join(str(item) for item in raw)
        text = _text(raw)
        if text is not None:
            headers[key.strip().lower()] = text.strip()
    return headers
