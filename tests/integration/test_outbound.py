"""The HTTP edge over real sockets: TLS, refused and dropped connections, timeouts."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from selfheal.http.clients import HttpClients
from selfheal.http.oauth import RefreshFailed, refresh_access_token
from selfheal.http.replay import ReplayRequest, replay
from tests.support.http import Response, StubServer

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
async def clients(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[HttpClients]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    pool = HttpClients(timeout=0.5, per_service=2, trust_env=False, allow_loopback=True)
    yield pool
    await pool.aclose()


def request(url: str) -> ReplayRequest:
    return ReplayRequest(uuid.uuid4(), "POST", url, '{"text": "héllo"}', 1, "tok-123")


async def test_replay_over_tls_to_a_trusted_server(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the operator's way to add a CA
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with StubServer(tls=server_tls) as api:
        api.route("POST", "/hook", Response(200, {"ok": True}))
        trusting = HttpClients(timeout=5, per_service=2, trust_env=True, allow_loopback=True)
        try:
            result = await replay(trusting, "svc", request(api.url + "/hook"))
        finally:
            await trusting.aclose()
        [received] = api.requests()
    assert result.succeeded
    assert received.json() == {"text": "héllo"}
    assert received.headers["authorization"] == "Bearer tok-123"


async def test_an_untrusted_certificate_is_a_tls_error(
    certificate: tuple[Path, Path], clients: HttpClients
) -> None:
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    with StubServer(tls=server_tls) as api:
        result = await replay(clients, "svc", request(api.url + "/hook"))
    assert (result.status, result.error_code) == (None, "tls_error")


async def test_refused_dropped_and_slow(clients: HttpClients) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    refused = await replay(clients, "svc", request(f"http://127.0.0.1:{port}/x"))
    assert refused.error_code == "ECONNREFUSED"
    with StubServer() as api:
        api.route("POST", "/drop", Response(drop=True))
        api.route("POST", "/slow", Response(200, delay=3.0))
        api.route("POST", "/fail", Response(500, b"<html>oops</html>", {"Retry-After": "5"}))
        dropped = await replay(clients, "svc", request(api.url + "/drop"))
        slow = await replay(clients, "svc", request(api.url + "/slow"))
        failed = await replay(clients, "svc", request(api.url + "/fail"))
    assert dropped.error_code == "ECONNRESET"
    assert slow.error_code == "ETIMEDOUT"
    assert (failed.status, failed.headers["retry-after"], failed.body_sample) == (
        500,
        "5",
        "<html>oops</html>",
    )
    assert not failed.succeeded


async def test_a_body_that_trickles_ends_at_the_timeout(clients: HttpClients) -> None:
    # Every read gets a byte in time; the whole would take a minute. The replay ends at
    # the client's timeout (0.5 s) as a timeout, not a minute later.
    with StubServer() as api:
        api.route("POST", "/trickle", Response(200, b"x" * 120, trickle=0.5))
        result = await replay(clients, "svc", request(api.url + "/trickle"))
    assert (result.status, result.error_code) == (None, "ETIMEDOUT")


async def test_a_token_endpoint_that_trickles_is_a_temporary_failure(
    clients: HttpClients,
) -> None:
    with StubServer() as token_endpoint:
        token_endpoint.route(
            "POST", "/token", Response(200, {"access_token": "at-" + "x" * 100}, trickle=0.5)
        )
        config = {"token_url": token_endpoint.url + "/token", "client_id": "app"}
        with pytest.raises(RefreshFailed) as failed:
            await refresh_access_token(clients.client, config, "rt-1", deadline=0.5)
    assert failed.value.temporary
    assert failed.value.reason == "the token endpoint timed out"
