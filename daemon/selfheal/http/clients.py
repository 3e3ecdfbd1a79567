"""The daemon's HTTP clients: replays through httpcore pools, one per service and origin;
token refreshes (rare) through one httpx client. One proxy policy for both: the
environment's (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``). Replays connect only to
addresses the guard allows (http/guard.py); token refreshes go to the admin's token URL."""

from __future__ import annotations

import asyncio
import urllib.request
from types import TracebackType
from typing import Literal, Self
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

from selfheal import __version__
from selfheal.http.aionet import AsyncioBackend
from selfheal.http.guard import GuardedBackend

__all__ = ["USER_AGENT", "HttpClients", "NetworkBackend", "OwnedClient"]

USER_AGENT = f"pg-selfheal/{__version__}"

#: "asyncio": our asyncio-native sockets (http/aionet.py, the default); "httpcore":
#: httpcore's own backend, which goes through anyio.
NetworkBackend = Literal["asyncio", "httpcore"]


class OwnedClient:
    """Owns one httpx client (`_client`): `async with` closes it at the end, shielded, so
    a cancelled daemon still closes its connections."""

    _client: httpx.AsyncClient

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()


class HttpClients:
    """The daemon's HTTP: replays through httpcore pools, one per service and origin;
    token refreshes (rare) through one httpx client.

    Replays are the hot path, and httpx's request machinery (cookies, auth flows,
    redirects, models) is about a third of a replay's CPU with none of it used: sending
    through httpcore, the connection layer httpx itself runs on, makes 2,000 replays a
    second fit one core. Pools stay small (a service's concurrency cap) because httpcore
    looks over every connection of a pool on every request.
    """

    def __init__(
        self,
        timeout: float,
        per_service: int,
        *,
        trust_env: bool = True,
        network: NetworkBackend = "asyncio",
        allow_loopback: bool = False,
    ) -> None:
        self.timeout = timeout  # the whole of one request, not only each read
        self._timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        self._per_service = per_service
        self._ssl = httpx.create_ssl_context(trust_env=trust_env)  # shared: costly to make
        self._proxies = urllib.request.getproxies() if trust_env else {}
        self._pools: dict[tuple[str, str], httpcore.AsyncConnectionPool] = {}
        # httpcore's own backend (through anyio) is the switch back if ours misbehaves.
        # Either way replays connect through the guard: a row's endpoint is untrusted.
        self._network = GuardedBackend(
            AsyncioBackend() if network == "asyncio" else httpcore.AnyIOBackend(),
            allow_loopback=allow_loopback,
        )
        self.client = httpx.AsyncClient(
            timeout=timeout, verify=self._ssl, trust_env=trust_env, follow_redirects=False
        )

    def _pool(self, service_name: str, url: str) -> httpcore.AsyncConnectionPool:
        parts = urlsplit(url)
        pool = self._pools.get((service_name, parts.netloc))
        if pool is None:
            # Services and their origins are a short list, so pools are kept.
            # One proxy policy with httpx (token refresh): the scheme's proxy, else ALL_PROXY.
            proxy = self._proxies.get(parts.scheme) or self._proxies.get("all")
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
        """Send and read the whole response within the timeout (a server that trickles
        its body does not hold a replay longer); httpcore errors pass through, a refused
        destination as `AddressRefused` (a ConnectError)."""
        try:
            # asyncio's own timeout: the daemon runs on asyncio, and on the hot path this
            # costs a third of an anyio cancel scope.
            async with asyncio.timeout(self.timeout):
                return await self._pool(service_name, url).request(
                    method,
                    url,
                    headers=list(headers.items()),
                    content=body or None,
                    extensions={"timeout": self._timeouts},
                )
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(f"no whole answer within {self.timeout:g} s") from exc

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools = {}
        await self.client.aclose()
