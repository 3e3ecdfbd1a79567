"""Tests of the loopback HTTP stub itself, over real sockets with httpx."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote_plus

import httpx
import pytest

from tests.support.http import (
    HoldUntilInFlight,
    OAuthTokenEndpoint,
    Request,
    Response,
    StubServer,
    bearer_protected_api,
    oauth_token_endpoint,
)

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


@pytest.fixture
def client(stub: StubServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stub.url, timeout=5) as http:
        yield http


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 2.3.1: form-urlencode each part, then base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def test_route_answers_and_records_the_exact_request(
    stub: StubServer, client: httpx.Client
) -> None:
    stub.route("POST", "/api/chat.postMessage", Response(201, {"ok": True}, {"X-Trace": "t1"}))

    response = client.post(
        "/api/chat.postMessage?retry=1", content=b'{"text":"hi"}', headers={"X-Custom": "A"}
    )

    assert response.status_code == 201
    assert response.json() == {"ok": True}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-trace"] == "t1"
    (request,) = stub.requests("/api/chat.postMessage")
    assert request.method == "POST"
    assert request.path == "/api/chat.postMessage?retry=1"
    assert request.path_only == "/api/chat.postMessage"
    assert request.query == {"retry": "1"}
    assert request.headers["x-custom"] == "A"
    assert request.headers["content-length"] == "13"
    assert all(name == name.lower() for name in request.headers)
    assert request.body == b'{"text":"hi"}'
    assert request.json() == {"text": "hi"}


def test_sequence_answers_in_order_then_repeats_the_last(
    stub: StubServer, client: httpx.Client
) -> None:
    stub.route("GET", "/flaky", [Response(503, "down"), Response(429), Response(200, b"up")])

    statuses = [client.get("/flaky").status_code for _ in range(5)]

    assert statuses == [503, 429, 200, 200, 200]
    assert client.get("/flaky").text == "up"


def test_handler_sees_the_request_and_keep_alive_reuses_the_connection(
    stub: StubServer, client: httpx.Client
) -> None:
    def echo(request: Request) -> Response:
        return Response(200, {"form": request.form(), "method": request.method})

    stub.route("PUT", "/echo", echo)

    first = client.put("/echo", data={"a": "1 2", "b": "&"})
    second = client.put("/echo", data={"a": "3"})

    assert first.json() == {"form": {"a": "1 2", "b": "&"}, "method": "PUT"}
    assert second.json()["form"] == {"a": "3"}
    one, two = stub.requests()
    assert one.client_port == two.client_port  # HTTP/1.1 keep-alive
    assert one.received_at <= two.received_at


def test_unmatched_route_is_a_json_404(stub: StubServer, client: httpx.Client) -> None:
    stub.route("GET", "/known", Response(204))

    assert client.get("/known?x=1").status_code == 204
    missing = client.post("/known")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no route"}


def test_drop_closes_the_connection_without_an_answer(
    stub: StubServer, client: httpx.Client
) -> None:
    stub.route("POST", "/hook", [Response(drop=True), Response(200)])

    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/hook", json={"n": 1})

    assert client.post("/hook", json={"n": 2}).status_code == 200
    assert [r.json() for r in stub.requests("/hook")] == [{"n": 1}, {"n": 2}]


def test_delay_makes_a_client_time_out(stub: StubServer) -> None:
    stub.route("GET", "/slow", Response(200, delay=60))  # stop() cuts it short

    with httpx.Client(base_url=stub.url, timeout=0.05) as http, pytest.raises(httpx.ReadTimeout):
        http.get("/slow")

    assert len(stub.requests("/slow")) == 1


def test_stop_interrupts_a_delayed_response() -> None:
    stub = StubServer().start()
    stub.route("GET", "/stuck", Response(200, delay=60))
    with httpx.Client(base_url=stub.url, timeout=0.05) as http, pytest.raises(httpx.ReadTimeout):
        http.get("/stuck")
    stub.wait_for_requests(1, "/stuck")

    started = time.monotonic()
    stub.stop()

    assert time.monotonic() - started < 5
    with pytest.raises(RuntimeError):
        _ = stub.url


def test_wait_for_requests_blocks_until_they_arrive(stub: StubServer) -> None:
    stub.route("POST", "/hook", Response(200))

    def send() -> None:
        with httpx.Client(base_url=stub.url, timeout=5) as http:
            for n in range(3):
                http.post("/hook", json={"n": n})

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    arrived = stub.wait_for_requests(3, "/hook", timeout=5)
    sender.join(5)

    assert [r.json()["n"] for r in arrived] == [0, 1, 2]


def test_wait_for_requests_timeout_says_what_arrived(
    stub: StubServer, client: httpx.Client
) -> None:
    client.get("/other")

    with pytest.raises(TimeoutError) as excinfo:
        stub.wait_for_requests(1, "/hook", timeout=0.05)

    message = str(excinfo.value)
    assert "at least 1 request(s) for /hook" in message
    assert "got 0" in message
    assert "GET /other" in message


def test_a_raising_handler_is_a_500_and_is_recorded(stub: StubServer, client: httpx.Client) -> None:
    def broken(request: Request) -> Response:
        raise ValueError("bug in the test")

    stub.route("GET", "/broken", broken)

    assert client.get("/broken").status_code == 500
    assert [type(e) for e in stub.errors] == [ValueError]


def test_hold_until_in_flight_answers_once_enough_requests_are_open(stub: StubServer) -> None:
    gate = HoldUntilInFlight(3)
    stub.route("POST", "/capped", gate)
    statuses: list[int] = []

    def send() -> None:
        with httpx.Client(base_url=stub.url, timeout=30) as http:
            statuses.append(http.post("/capped").status_code)

    senders = [threading.Thread(target=send, daemon=True) for _ in range(3)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)

    assert statuses == [200, 200, 200]
    assert (gate.peak, gate.in_flight) == (3, 0)
    with httpx.Client(base_url=stub.url, timeout=30) as http:
        assert http.post("/capped").status_code == 200  # open from then on
    assert gate.peak == 3


def test_hold_until_in_flight_fails_when_too_few_are_open(
    stub: StubServer, client: httpx.Client
) -> None:
    gate = HoldUntilInFlight(2, timeout=0.05)
    stub.route("POST", "/capped", gate)

    assert client.post("/capped").status_code == 500
    assert client.post("/capped").status_code == 500

    assert gate.peak == 1
    [first, second] = stub.errors
    assert isinstance(first, TimeoutError) and isinstance(second, TimeoutError)
    assert "never 2 at once" in str(first)


# The OAuth 2.0 refresh endpoint (RFC 6749 section 6).


@pytest.fixture
def oauth(stub: StubServer) -> OAuthTokenEndpoint:
    endpoint = OAuthTokenEndpoint(client_id="my app:1", client_secret="s&cr=t+")
    stub.route("POST", "/oauth/token", endpoint)
    return endpoint


def test_refresh_with_basic_auth_rotates_the_refresh_token(
    oauth: OAuthTokenEndpoint, client: httpx.Client
) -> None:
    auth = {"authorization": basic("my app:1", "s&cr=t+")}

    first = client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "rt-1"}, headers=auth
    )

    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    assert first.json() == {
        "access_token": "at-1",
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "rt-2",
    }
    assert oauth.valid_refresh_token == "rt-2"
    assert oauth.current_access_token == "at-1"

    reused = client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "rt-1"}, headers=auth
    )

    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert oauth.refresh_count == 1
    assert oauth.request_count == 2


def test_refresh_with_form_client_credentials_and_no_rotation(
    stub: StubServer, client: httpx.Client
) -> None:
    endpoint = oauth_token_endpoint(iter(["tok-a", "tok-b"]), rotate=False, expires_in=60)
    stub.route("POST", "/token", endpoint)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": "rt-1",
        "client_id": endpoint.client_id,
        "client_secret": endpoint.client_secret,
        "scope": "chat:write",
    }

    bodies = [client.post("/token", data=form).json() for _ in range(2)]

    assert bodies == [
        {"access_token": "tok-a", "token_type": "Bearer", "expires_in": 60, "scope": "chat:write"},
        {"access_token": "tok-b", "token_type": "Bearer", "expires_in": 60, "scope": "chat:write"},
    ]
    assert endpoint.issued_access_tokens == ["tok-a", "tok-b"]
    assert endpoint.valid_refresh_token == "rt-1"


@pytest.mark.parametrize(
    ("form", "headers", "status", "error"),
    [
        pytest.param(
            {"grant_type": "refresh_token", "refresh_token": "rt-1"},
            {"authorization": basic("my app:1", "wrong")},
            401,
            "invalid_client",
            id="wrong-secret",
        ),
        pytest.param(
            {"grant_type": "refresh_token", "refresh_token": "rt-1"},
            {},
            401,
            "invalid_client",
            id="no-client-auth",
        ),
        pytest.param(
            # httpx.BasicAuth does not form-urlencode: "my app:1" then breaks the split.
            {"grant_type": "refresh_token", "refresh_token": "rt-1"},
            {"authorization": "Basic " + base64.b64encode(b"my app:1:s&cr=t+").decode()},
            401,
            "invalid_client",
            id="basic-not-urlencoded",
        ),
        pytest.param(
            {"grant_type": "client_credentials"},
            {"authorization": basic("my app:1", "s&cr=t+")},
            400,
            "unsupported_grant_type",
            id="unsupported-grant",
        ),
        pytest.param(
            {"grant_type": "refresh_token", "refresh_token": "rt-0"},
            {"authorization": basic("my app:1", "s&cr=t+")},
            400,
            "invalid_grant",
            id="unknown-refresh-token",
        ),
    ],
)
def test_token_endpoint_errors(
    oauth: OAuthTokenEndpoint,
    client: httpx.Client,
    form: dict[str, str],
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    response = client.post("/oauth/token", data=form, headers=headers)

    assert response.status_code == status
    assert response.json()["error"] == error
    assert oauth.refresh_count == 0
    assert oauth.valid_refresh_token == "rt-1"


def test_token_endpoint_can_be_taken_down(oauth: OAuthTokenEndpoint, client: httpx.Client) -> None:
    oauth.fail_with = Response(500, b"<html>", {"content-type": "text/html"})
    form = {"grant_type": "refresh_token", "refresh_token": "rt-1"}
    auth = {"authorization": basic("my app:1", "s&cr=t+")}

    down = client.post("/oauth/token", data=form, headers=auth)
    oauth.fail_with = None
    up = client.post("/oauth/token", data=form, headers=auth)

    assert (down.status_code, down.content) == (500, b"<html>")
    assert up.json()["access_token"] == "at-1"


def test_bearer_api_follows_the_token_endpoint(
    stub: StubServer, oauth: OAuthTokenEndpoint, client: httpx.Client
) -> None:
    stub.route("POST", "/api/chat.postMessage", bearer_protected_api(oauth.issued_access_tokens))

    anonymous = client.post("/api/chat.postMessage")
    stale = client.post("/api/chat.postMessage", headers={"authorization": "Bearer old"})
    client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "rt-1"},
        headers={"authorization": basic("my app:1", "s&cr=t+")},
    )
    fresh = client.post("/api/chat.postMessage", headers={"authorization": "Bearer at-1"})

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="api"'
    assert stale.status_code == 401
    assert stale.json() == {"ok": False, "error": "invalid_auth"}
    assert stale.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert (fresh.status_code, fresh.json()) == (200, {"ok": True})


def test_oauth_form_requests_are_form_encoded(oauth: OAuthTokenEndpoint, stub: StubServer) -> None:
    with httpx.Client(base_url=stub.url, timeout=5) as http:
        response = http.post(
            "/oauth/token",
            content=b"grant_type=refresh_token&refresh_token=rt-1",
            headers={**FORM, "authorization": basic("my app:1", "s&cr=t+")},
        )
        wrong_type = http.post(
            "/oauth/token",
            json={"grant_type": "refresh_token", "refresh_token": "rt-2"},
            headers={"authorization": basic("my app:1", "s&cr=t+")},
        )

    assert response.status_code == 200
    assert wrong_type.status_code == 400
    assert wrong_type.json()["error"] == "invalid_request"
