"""The HTTP edge: replays of failed calls and OAuth 2.0 refresh-token grants (RFC 6749 s. 6).

httpx and httpcore errors are translated here; nothing above sees a transport exception.
"""

from __future__ import annotations

import base64
import ssl
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpcore
import httpx
import orjson

from selfheal import __version__
from selfheal.core.diagnose import needs_reauthorization
from selfheal.core.retry import idempotency_key
from selfheal.http.aionet import AsyncioBackend

__all__ = [
    "ATTEMPT_HEADER",
    "HttpClients",
    "RefreshFailed",
    "ReplayRequest",
    "ReplayResult",
    "TokenGrant",
    "refresh_access_token",
    "replay",
    "replayable",
]

ATTEMPT_HEADER = "X-Selfheal-Attempt"
_USER_AGENT = f"pg-selfheal/{__version__}"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_BODYLESS = frozenset({"GET", "DELETE"})
_BODY_SAMPLE = 4096  # enough of an error body for the analyzer


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    event_id: uuid.UUID
    method: str
    endpoint: str
    payload: Any
    attempt: int
    access_token: str | None

    def __repr__(self) -> str:  # never show the token
        return f"ReplayRequest({self.method} event={self.event_id} attempt={self.attempt})"


@dataclass(frozen=True, slots=True)
class ReplayResult:
    status: int | None  # None: no HTTP answer at all
    headers: Mapping[str, str]
    error_code: str | None
    body_sample: str

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.error_code is None


class HttpClients:
    """The daemon's HTTP: replays through httpcore pools, one per service and origin;
    token refreshes (rare) through one httpx client.

    Replays are the hot path, and httpx's request machinery (cookies, auth flows,
    redirects, models) is about a third of a replay's CPU with none of it used: sending
    through httpcore, the connection layer httpx itself runs on, makes 2,000 replays a
    second fit one core. Pools stay small (a service's concurrency cap) because httpcore
    looks over every connection of a pool on every request.
    """

    def __init__(self, timeout: float, per_service: int, *, trust_env: bool = True) -> None:
        self._timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        self._per_service = per_service
        self._ssl = httpx.create_ssl_context(trust_env=trust_env)  # shared: costly to make
        self._proxies = urllib.request.getproxies() if trust_env else {}
        self._pools: dict[tuple[str, str], httpcore.AsyncConnectionPool] = {}
        self._network = AsyncioBackend()
        self.client = httpx.AsyncClient(
            timeout=timeout, verify=self._ssl, trust_env=trust_env, follow_redirects=False
        )

    def _pool(self, service_name: str, url: str) -> httpcore.AsyncConnectionPool:
        parts = urlsplit(url)
        pool = self._pools.get((service_name, parts.netloc))
        if pool is None:
            # Services and their origins are a short list, so pools are kept.
            proxy = self._proxies.get(parts.scheme)
            if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
                proxy = None
            pool = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl,
                proxy=httpcore.Proxy(proxy) if proxy else None,
                max_connections=self._per_service,
                network_backend=self._network,
            )
            self._pools[(service_name, parts.netloc)] = pool
        return pool

    async def send(
        self, service_name: str, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> httpcore.Response:
        """Send and read the whole response; httpcore errors pass through."""
        return await self._pool(service_name, url).request(
            method,
            url,
            headers=list(headers.items()),
            content=body or None,
            extensions={"timeout": self._timeouts},
        )

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools = {}
        await self.client.aclose()


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
        "User-Agent": _USER_AGENT,
    }
    if request.access_token:
        headers["Authorization"] = f"Bearer {request.access_token}"
    content = b""
    if request.payload is not None and method not in _BODYLESS:
        content = orjson.dumps(request.payload)
        headers["Content-Type"] = "application/json"
    try:
        response = await clients.send(service_name, method, request.endpoint, headers, content)
    except ValueError:  # an URL httpcore cannot use (replayable() lets few through)
        return ReplayResult(None, {}, "invalid_url", "")
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
    """Slack and others answer 200 with `{"ok": false, "error": ...}`: not a success."""
    if not (200 <= status < 300) or not body.startswith("{"):
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict) and parsed.get("ok") is False:
        error = parsed.get("error")
        return error if isinstance(error, str) and error else "ok_false"
    return None


# --- OAuth 2.0 refresh ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    refresh_token: str | None  # a rotated refresh token replaces the old one
    expires_in: float | None

    def __repr__(self) -> str:
        return f"TokenGrant(expires_in={self.expires_in}, rotated={self.refresh_token is not None})"


class RefreshFailed(Exception):
    """The refresh did not yield a token. `reauthorize`: the user must reconnect
    (invalid_grant); `temporary`: the endpoint is down or answered garbage."""

    def __init__(self, reason: str, *, reauthorize: bool = False, temporary: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.reauthorize = reauthorize
        self.temporary = temporary


async def refresh_access_token(
    client: httpx.AsyncClient, oauth_config: Mapping[str, Any], refresh_token: str
) -> TokenGrant:
    token_url = oauth_config.get("token_url")
    client_id = oauth_config.get("client_id")
    if not isinstance(token_url, str) or replayable("POST", token_url) is not None:
        raise RefreshFailed("oauth_config.token_url is missing or not an absolute URL")
    if not isinstance(client_id, str) or not client_id:
        raise RefreshFailed("oauth_config.client_id is missing")
    client_secret = oauth_config.get("client_secret")
    secret = client_secret if isinstance(client_secret, str) else ""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    scopes = oauth_config.get("scopes")
    if isinstance(scopes, list) and scopes:
        form["scope"] = " ".join(str(s) for s in scopes)
    elif isinstance(scopes, str) and scopes.strip():
        form["scope"] = scopes.strip()
    headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
    if str(oauth_config.get("client_auth", "basic")).lower() in {"form", "client_secret_post"}:
        form["client_id"] = client_id
        if secret:
            form["client_secret"] = secret
    else:
        # RFC 6749 s. 2.3.1: both parts form-urlencoded before the Basic encoding.
        pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    try:
        response = await client.post(token_url, data=form, headers=headers)
    except (httpx.InvalidURL, ValueError) as exc:
        raise RefreshFailed("oauth_config.token_url is not a valid URL") from exc
    except httpx.TimeoutException as exc:
        raise RefreshFailed("the token endpoint timed out", temporary=True) from exc
    except httpx.HTTPError as exc:
        raise RefreshFailed(
            f"the token endpoint is unreachable ({type(exc).__name__})", temporary=True
        ) from exc
    return _parse_grant(response)


def _parse_grant(response: httpx.Response) -> TokenGrant:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if response.status_code >= 500 or response.status_code == 429:
        raise RefreshFailed(
            f"the token endpoint answered HTTP {response.status_code}", temporary=True
        )
    if response.status_code != 200 or error is not None:
        code = error if isinstance(error, str) else f"HTTP {response.status_code}"
        raise RefreshFailed(
            f"the token endpoint refused the refresh: {code[:100]}",
            reauthorize=needs_reauthorization(code),
        )
    if not isinstance(body, dict):
        raise RefreshFailed("the token endpoint answered without a JSON object", temporary=True)
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise RefreshFailed("the token endpoint answered without an access_token", temporary=True)
    rotated = body.get("refresh_token")
    expires_in = body.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    return TokenGrant(
        access_token=access_token,
        refresh_token=rotated if isinstance(rotated, str) and rotated else None,
        expires_in=float(expires_in)
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
        else None,
    )
