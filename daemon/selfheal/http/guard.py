"""Where replays may not go: the addresses a row of `integration_events` must not make the
daemon call (cloud metadata, link-local, unspecified, loopback unless allowed), and the
httpcore network backend that checks the address it connects to.

`GuardedBackend` resolves a host name once, drops the refused addresses and connects to
an address it checked, by IP, so a DNS answer that changes between the check and the
connect (rebinding) changes nothing. TLS still verifies the certificate against the URL's
host name: httpcore passes it to `start_tls` apart from the address.

With a proxy configured for a URL (``HTTPS_PROXY``, ``ALL_PROXY``), the proxy connects to
the destination for us: the guard then checks the proxy's address only. Which proxy, and
what it may reach, is the operator's choice.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import httpcore

__all__ = ["AddressRefused", "GuardedBackend", "refused"]

# httpcore's SOCKET_OPTION, spelled out (it is not exported).
_Socket = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]

_METADATA = frozenset(
    {
        ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
        ip_address("169.254.170.2"),  # AWS ECS task metadata and credentials
        ip_address("100.100.100.200"),  # Alibaba Cloud
        ip_address("fd00:ec2::254"),  # AWS, over IPv6
    }
)
_LINK_LOCAL = (ip_network("169.254.0.0/16"), ip_network("fe80::/10"))
_UNSPECIFIED = (ip_network("0.0.0.0/8"), ip_network("::/128"))  # 0.x reaches this host
_LOOPBACK = (ip_network("127.0.0.0/8"), ip_network("::1/128"))


def refused(address: IPv4Address | IPv6Address, allow_loopback: bool) -> str | None:
    """Why a replay may not connect to `address` (completing "ADDRESS is ..."), or None
    when it may. An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is judged as its IPv4."""
    if isinstance(address, IPv6Address):
        address = address.ipv4_mapped or IPv6Address(int(address))  # without a scope id
    if address in _METADATA:
        return "a cloud metadata address"
    if any(address in network for network in _LINK_LOCAL):
        return "a link-local address"
    if any(address in network for network in _UNSPECIFIED):
        return "an unspecified address"
    if not allow_loopback and any(address in network for network in _LOOPBACK):
        return "a loopback address"
    return None


class AddressRefused(httpcore.ConnectError):
    """The destination is a refused address (or a name that resolves only to such): no
    connection was attempted. The message says which address, and why."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects through `inner` to checked IPs only.

    A host is resolved once (an IP literal is not resolved at all); the allowed addresses
    are tried in the resolver's order, each by IP, within the one connect timeout; the
    last failure is raised. When every address is refused, `AddressRefused` is raised
    before any connection is attempted.
    """

    def __init__(self, inner: httpcore.AsyncNetworkBackend, allow_loopback: bool) -> None:
        self._inner = inner
        self._allow_loopback = allow_loopback

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[_Socket] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        *others, last = await self._allowed(host, port, timeout)
        options = list(socket_options or ())  # iterated once per address tried

        async def connect(address: str) -> httpcore.AsyncNetworkStream:
            left = None if deadline is None else max(deadline - loop.time(), 0.0)
            return await self._inner.connect_tcp(address, port, left, local_address, options)

        for address in others:
            try:
                return await connect(address)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                if deadline is not None and loop.time() >= deadline:
                    raise
        return await connect(last)

    async def _allowed(self, host: str, port: int, seconds: float | None) -> list[str]:
        try:
            literal = ip_address(host)
        except ValueError:
            pass
        else:  # nothing to resolve
            reason = refused(literal, self._allow_loopback)
            if reason is not None:
                raise AddressRefused(f"{host} is {reason}")
            return [host]
        try:
            async with asyncio.timeout(seconds):
                answers = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:  # socket.gaierror: no such name
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        allowed: list[str] = []
        reasons: list[str] = []
        for *_, sockaddr in answers:
            address = str(sockaddr[0])
            reason = refused(ip_address(address), self._allow_loopback)
            if reason is None:
                if address not in allowed:
                    allowed.append(address)
            elif (because := f"{address} is {reason}") not in reasons:
                reasons.append(because)
        if not allowed:
            raise AddressRefused(f"{host} resolves to refused addresses only: {'; '.join(reasons)}")
        return allowed

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[_Socket] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # A socket path is the operator's configuration, never a row's.
        return await self._inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
