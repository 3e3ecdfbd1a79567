"""Replays of failed calls: the request as the DESIGN describes it, the answer read into a
ReplayResult. httpcore errors are translated here; nothing above sees one."""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore

from selfheal.core.analyzer import ok_false
from selfheal.core.retry import idempotency_key
from selfheal.http.clients import USER_AGENT, HttpClients
from selfheal.http.guard import AddressRefused
from selfheal.models import ReplayResult

__all__ = ["ADDRESS_REFUSED", "ATTEMPT_HEADER", "ReplayRequest", "replay", "replayable"]

ATTEMPT_HEADER = "X-Selfheal-Attempt"
#: The error code of a replay the guard would not send (http/guard.py): nothing went out.
ADDRESS_REFUSED = "address_refused"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_BODYLESS = frozenset({"GET", "DELETE"})
_BODY_SAMPLE = 4096  # enough of an error body for the analyzer


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    event_id: uuid.UUID
    method: str
    endpoint: str
    payload: str | None  # JSON text
    attempt: int
    access_token: str | None

    def __repr__(self) -> str:  # never show the token
        return f"ReplayRequest({self.method} event={self.event_id} attempt={self.attempt})"


def replayable(method: str | None, endpoint: str | None) -> str | None:
    """Why an event cannot be replayed, or None when it can."""
    if not endpoint:
        return "the event has no endpoint"
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        return "the event's endpoint is not a valid URL"
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "the event's endpoint is not an absolute http(s) URL"
    if (method or "POST").upper() not in _METHODS:
        return f"unsupported HTTP method {method!r}"
    return None


async def replay(clients: HttpClients, service_name: str, request: ReplayRequest) -> ReplayResult:
    method = request.method.upper()
    headers = {
        "Idempotency-Key": idempotency_key(str(request.event_id)),
        ATTEMPT_HEADER: str(request.attempt),
        "User-Agent": USER_AGENT,
    }
    if request.access_token:
        headers["Authorization"] = f"Bearer {request.access_token}"
    content = b""
    if request.payload is not None and method not in _BODYLESS:
        content = request.payload.encode()  # the stored JSON text, sent as it is
        headers["Content-Type"] = "application/json"
    try:
        response = await clients.send(service_name, method, request.endpoint, headers, content)
    except ValueError:  # an URL httpcore cannot use (replayable() lets few through)
        return ReplayResult(None, {}, "invalid_url", "")
    except AddressRefused as exc:  # never connected: the message says which address, and why
        return ReplayResult(None, {}, ADDRESS_REFUSED, str(exc))
    except httpcore.TimeoutException:
        return ReplayResult(None, {}, "ETIMEDOUT", "")
    except _TRANSPORT_ERRORS as exc:
        return ReplayResult(None, {}, _transport_code(exc), "")
    body = response.content[:_BODY_SAMPLE].decode("utf-8", "replace")
    return ReplayResult(
        response.status,
        {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in response.headers
        },
        _ok_false_error(response.status, body),
        body,
    )


_TRANSPORT_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
    httpcore.PoolTimeout,
)


def _transport_code(exc: Exception) -> str:
    if isinstance(exc.__cause__ or exc.__context__, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, httpcore.ConnectError):
        return "ECONNREFUSED"
    if isinstance(exc, httpcore.RemoteProtocolError | httpcore.ReadError):
        return "ECONNRESET"
    return "network_error"


def _ok_false_error(status: int, body: str) -> str | None:
    """A 2xx that says `ok: false` is no success."""
    return ok_false(body) if 200 <= status < 300 else None
