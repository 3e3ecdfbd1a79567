"""The replay guard over real sockets: refused addresses are never dialled, a name is
judged by the address it resolves to, and the connection goes to the address checked."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpcore
import pytest

from selfheal.http.clients import HttpClients, NetworkBackend
from selfheal.http.guard import GuardedBackend
from selfheal.http.replay import ReplayRequest, replay
from tests.support.http import Response, StubServer

pytestmark = pytest.mark.anyio

BACKENDS = pytest.mark.parametrize("network", ["asyncio", "httpcore"])


def request(url: str) -> ReplayRequest:
    return ReplayRequest(uuid.uuid4(), "POST", url, '{"text": "hi"}', 1, "tok-123")


@asynccontextmanager
async def replaying(
    network: NetworkBackend, *, allow_loopback: bool, trust_env: bool = False
) -> AsyncIterator[HttpClients]:
    clients = HttpClients(
        timeout=0.5,
        per_service=2,
        trust_env=trust_env,
        network=network,
        allow_loopback=allow_loopback,
    )
    try:
        yield clients
    finally:
        await clients.aclose()


@contextmanager
def dialled(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The hosts the event loop is asked to connect to (both backends go through
    `loop.create_connection`)."""
    loop = asyncio.get_running_loop()
    hosts: list[str] = []
    real = loop.create_connection

    async def create_connection(protocol: Any, host: str, port: int, **kw: Any) -> Any:
        hosts.append(host)
        return await real(protocol, host, port, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "create_connection", create_connection)
        yield hosts


def _answer(addresses: Sequence[str], port: int) -> list[tuple[Any, ...]]:
    return [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
        if ":" in a
        else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
        for a in addresses
    ]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """`dns("name.test", first, later)`: the resolver answers `first` for that name, then
    `later` (a rebinding attacker's DNS); returns the list of lookups of the name."""
    real = socket.getaddrinfo

    def install(name: str, first: Sequence[str], later: Sequence[str] | None = None) -> list[str]:
        lookups: list[str] = []

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host != name:
                return real(host, port, *args, **kwargs)
            lookups.append(host)
            answer = first if len(lookups) == 1 or later is None else later
            return _answer(answer, int(port))

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return lookups

    return install


@BACKENDS
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://[::ffff:169.254.169.254]/latest/", "::ffff:169.254.169.254 is a cloud metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254 is a cloud metadata address"),
        ("http://169.254.1.1:8080/", "169.254.1.1 is a link-local address"),
        ("http://0.0.0.0:8080/", "0.0.0.0 is an unspecified address"),
    ],
)
async def test_a_replay_to_a_metadata_or_link_local_address_is_never_dialled(
    network: NetworkBackend, url: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with replaying(network, allow_loopback=True) as clients:
        with dialled(monkeypatch) as hosts:
            started = time.monotonic()
            result = await replay(clients, "svc", request(url))
    assert (result.status, result.error_code) == (None, "address_refused")
    assert result.body_sample.startswith(why)
    assert hosts == []
    assert time.monotonic() - started < 0.5  # refused, not timed out


@BACKENDS
async def test_loopback_is_refused_unless_allowed(
    network: NetworkBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with StubServer() as api:
        api.route("POST", "/hook", Response(200, {"ok": True}))
        async with replaying(network, allow_loopback=False) as clients:
            with dialled(monkeypatch) as hosts:
                refused = await replay(clients, "svc", request(api.url + "/hook"))
        assert (refused.status, refused.error_code) == (None, "address_refused")
        assert refused.body_sample == "127.0.0.1 is a loopback address"
        assert (hosts, api.requests()) == ([], [])

        async with replaying(network, allow_loopback=True) as clients:
            allowed = await replay(clients, "svc", request(api.url + "/hook"))
        [received] = api.requests("/hook")
    assert (allowed.status, allowed.error_code) == (200, None)
    assert received.headers["authorization"] == "Bearer tok-123"


@BACKENDS
async def test_a_name_is_judged_by_the_addresses_it_resolves_to(
    network: NetworkBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with StubServer() as api:
        api.route("POST", "/hook", Response(200, {"ok": True}))
        url = api.url.replace("127.0.0.1", "localhost") + "/hook"
        async with replaying(network, allow_loopback=False) as clients:
            with dialled(monkeypatch) as hosts:
                refused = await replay(clients, "svc", request(url))
        assert (refused.status, refused.error_code) == (None, "address_refused")
        assert refused.body_sample.startswith("localhost resolves to refused addresses only:")
        assert "is a loopback address" in refused.body_sample
        assert (hosts, api.requests()) == ([], [])

        async with replaying(network, allow_loopback=True) as clients:
            with dialled(monkeypatch) as hosts:
                allowed = await replay(clients, "svc", request(url))
        [received] = api.requests("/hook")
    assert allowed.status == 200
    # Dialled by address (localhost may give ::1 first, where nothing listens), and it
    # reached the server on 127.0.0.1; the request still names the host.
    assert hosts[-1] == "127.0.0.1"
    assert "localhost" not in hosts
    assert received.headers["host"] == f"localhost:{url.split(':')[2].split('/')[0]}"


@BACKENDS
async def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_dialled(
    network: NetworkBackend,
    monkeypatch: pytest.MonkeyPatch,
    dns: Callable[..., list[str]],
) -> None:
    # Rebinding: the first answer passes the check, every later one is the metadata service.
    lookups = dns("rebind.test", ["169.254.169.254", "127.0.0.1"], ["169.254.169.254"])
    with StubServer() as api:
        api.route("POST", "/hook", Response(200, {"ok": True}))
        url = api.url.replace("127.0.0.1", "rebind.test") + "/hook"
        async with replaying(network, allow_loopback=True) as clients:
            with dialled(monkeypatch) as hosts:
                result = await replay(clients, "svc", request(url))
        [received] = api.requests("/hook")
    assert result.status == 200
    assert (lookups, hosts) == (["rebind.test"], ["127.0.0.1"])
    assert received.headers["host"].startswith("rebind.test:")


@BACKENDS
async def test_the_next_checked_address_is_tried_when_the_first_does_not_answer(
    network: NetworkBackend,
    monkeypatch: pytest.MonkeyPatch,
    dns: Callable[..., list[str]],
) -> None:
    dns("dual.test", ["::1", "127.0.0.1"])  # nothing listens on ::1 at the stub's port
    with StubServer() as api:
        api.route("POST", "/hook", Response(200, {"ok": True}))
        async with replaying(network, allow_loopback=True) as clients:
            with dialled(monkeypatch) as hosts:
                url = api.url.replace("127.0.0.1", "dual.test") + "/hook"
                result = await replay(clients, "svc", request(url))
        assert len(api.requests("/hook")) == 1
    assert result.status == 200
    assert hosts == ["::1", "127.0.0.1"]


async def test_a_name_that_does_not_resolve_is_a_connect_error(
    dns: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_such_name(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    async with replaying("asyncio", allow_loopback=True) as clients:
        result = await replay(clients, "svc", request("http://nowhere.test/hook"))
    assert (result.status, result.error_code) == (None, "ECONNREFUSED")


async def test_a_resolver_that_hangs_is_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)  # in the executor's thread
        return _answer(["127.0.0.1"], 80)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    guard = GuardedBackend(httpcore.AnyIOBackend(), allow_loopback=True)
    with pytest.raises(httpcore.ConnectTimeout, match=r"resolving slow\.test"):
        await guard.connect_tcp("slow.test", 80, timeout=0.05)


class _Unanswering(httpcore.AsyncNetworkBackend):
    """Every connect takes the whole timeout, then times out."""

    def __init__(self) -> None:
        self.tried: list[str] = []
        self.slept: list[float] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        *rest: Any,
    ) -> Any:
        self.tried.append(host)
        await asyncio.sleep(timeout or 0)
        raise httpcore.ConnectTimeout("timed out")

    async def connect_unix_socket(self, path: str, *a: Any) -> Any:
        self.tried.append(path)
        raise httpcore.ConnectError("no socket")

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


async def test_the_connect_timeout_covers_every_address_tried(
    dns: Callable[..., list[str]],
) -> None:
    dns("slow.test", ["192.0.2.1", "192.0.2.2"])
    inner = _Unanswering()
    guard = GuardedBackend(inner, allow_loopback=False)
    with pytest.raises(httpcore.ConnectTimeout):
        await guard.connect_tcp("slow.test", 443, timeout=0.05)
    assert inner.tried == ["192.0.2.1"]  # no time was left for the second
    # A socket path and sleeps are the operator's and httpcore's: passed through.
    with pytest.raises(httpcore.ConnectError):
        await guard.connect_unix_socket("/run/proxy.sock")
    await guard.sleep(0.25)
    assert (inner.tried[-1], inner.slept) == ("/run/proxy.sock", [0.25])


@pytest.fixture(scope="module")
def named_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for the name rebind.test only (no IP address in it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls-name")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=rebind.test", "-addext", "subjectAltName=DNS:rebind.test"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@BACKENDS
async def test_tls_verifies_the_host_name_though_the_address_is_dialled(
    network: NetworkBackend,
    named_certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    dns: Callable[..., list[str]],
) -> None:
    cert, key = named_certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("NO_PROXY", "*")
    dns("rebind.test", ["127.0.0.1"])
    with StubServer(tls=server_tls) as api:
        api.route("POST", "/hook", Response(200, {"ok": True}))
        async with replaying(network, allow_loopback=True, trust_env=True) as clients:
            with dialled(monkeypatch) as hosts:
                by_name = await replay(
                    clients, "svc", request(api.url.replace("127.0.0.1", "rebind.test") + "/hook")
                )
            by_address = await replay(clients, "svc", request(api.url + "/hook"))
    assert (by_name.status, hosts) == (200, ["127.0.0.1"])
    # The same server by its address: the certificate does not name it.
    assert (by_address.status, by_address.error_code) == (None, "tls_error")
