"""Real loopback HTTP/1.1 stand-ins for the services the daemon talks to.

Integration tests point the daemon (in this process or in a subprocess) at a
:class:`StubServer`: a real HTTP/1.1 server on ``127.0.0.1`` with an ephemeral
port, so what is tested is the bytes on the wire, not a mock. The server
records every request exactly as received and answers from routes::

    with StubServer() as stub:
        stub.route("POST", "/api/chat.postMessage", [Response(503), Response(200, {"ok": True})])
        ...  # run the daemon against stub.url
        (first, second) = stub.wait_for_requests(2, "/api/chat.postMessage")

A route answers with a fixed :class:`Response`, a sequence of them (in order,
the last one repeating forever), or a handler ``Callable[[Request], Response]``.
A response can be slow (``delay``) or never come (``drop`` closes the
connection), which is how a slow or failing network is simulated.

Ready-made handlers: :class:`OAuthTokenEndpoint` (an RFC 6749 section 6
refresh-token endpoint with rotation and state), :func:`bearer_protected_api`
(an API that answers 401 ``invalid_auth`` unless the bearer token is valid) and
:class:`HoldUntilInFlight` (holds requests until a number of them are in flight at
once, and counts the peak: a concurrency cap checked on a signal, not a hold time).

Only the standard library is used: ``ThreadingHTTPServer`` with daemon
threads. :meth:`StubServer.stop` is prompt: it closes kept-alive connections
and interrupts delayed responses.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, unquote_plus, urlsplit

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_REFRESH_TOKEN",
    "Handler",
    "HoldUntilInFlight",
    "OAuthTokenEndpoint",
    "Request",
    "Response",
    "StubServer",
    "bearer_protected_api",
    "oauth_token_endpoint",
]


@dataclass(frozen=True)
class Request:
    """One request exactly as the server received it."""

    method: str
    path: str
    """The request target, including the query string."""
    headers: dict[str, str]
    """Header names lower-cased; a repeated header's values are joined with ``", "``."""
    body: bytes
    received_at: float
    """``time.monotonic()`` when the whole request had been read."""
    client_port: int = 0
    """The client's source port: equal ports on two requests mean a reused connection."""

    @property
    def path_only(self) -> str:
        """The path without the query string: what routes match on."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        """The query string parsed (the last value wins for a repeated name)."""
        return dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The ``application/x-www-form-urlencoded`` body parsed (the last value wins)."""
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))


@dataclass(frozen=True)
class Response:
    """What a route answers.

    ``body`` may be bytes, text (sent as UTF-8, ``text/plain`` unless a
    content-type header is given) or a dict/list (sent as JSON with
    ``content-type: application/json``). ``Content-Length`` is always computed.
    """

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering; :meth:`StubServer.stop` interrupts the wait."""
    drop: bool = False
    """Close the connection without answering, as a network failure would."""
    trickle: float = 0.0
    """Seconds between the body's bytes, sent one at a time after the headers: a server
    that stalls mid-body (each read succeeds, the whole never arrives in time)."""

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        """The body bytes and the headers to send (lower-case names, without content-length)."""
        headers: dict[str, str] = {}
        if isinstance(self.body, bytes):
            data = self.body
        elif isinstance(self.body, str):
            data = self.body.encode("utf-8")
            headers["content-type"] = "text/plain; charset=utf-8"
        else:
            data = json.dumps(self.body).encode("utf-8")
            headers["content-type"] = "application/json"
        for name, value in self.headers.items():
            if name.lower() != "content-length":
                headers[name.lower()] = value
        return data, headers


Handler = Callable[[Request], Response]

NO_ROUTE = Response(404, {"error": "no route"})


class _Sequence:
    """Answers with each response in turn, then repeats the last one forever."""

    def __init__(self, responses: Sequence[Response]) -> None:
        if not responses:
            raise ValueError("a response sequence needs at least one response")
        for response in responses:
            if not isinstance(response, Response):
                raise TypeError(f"expected Response in the sequence, got {response!r}")
        self._responses = tuple(responses)
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            response = self._responses[min(self._next, len(self._responses) - 1)]
            self._next += 1
        return response


def _as_handler(handler: Handler | Response | Sequence[Response]) -> Handler:
    if isinstance(handler, Response):
        fixed = handler
        return lambda _request: fixed
    if callable(handler):
        return handler
    if isinstance(handler, str | bytes):
        raise TypeError("a route answers with a Response, a sequence of them or a handler")
    return _Sequence(handler)


class _Server(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that knows its stub and its open connections."""

    daemon_threads = True
    block_on_close = True  # server_close() joins the handler threads.

    def __init__(self, stub: StubServer) -> None:
        self.stub = stub
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every handler blocked on a kept-alive connection: it reads end of file."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (timed out, closed its pool) is normal here;
        # anything else is kept for StubServer.errors rather than printed.
        exc = sys.exc_info()[1]
        if isinstance(exc, Exception) and not isinstance(exc, OSError):
            self.stub._record_error(exc)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # the CRLF after the chunk
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request = Request(
            method=self.command,
            path=self.path,
            headers=headers,
            body=body,
            received_at=time.monotonic(),
            client_port=self.client_address[1],
        )
        stub = self.server.stub
        stub._record(request)
        try:
            response = stub._handler_for(request)(request)
        except Exception as exc:  # a broken handler is a test bug: report it as a 500
            stub._record_error(exc)
            response = Response(500, {"error": "handler raised", "detail": repr(exc)})
        if response.delay > 0 and stub._stopping.wait(response.delay):
            response = Response(drop=True)  # stopping: never answer
        if response.drop:
            self.close_connection = True
            return
        data, out_headers = response.encoded()
        try:
            self.send_response(response.status)
            for name, value in out_headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD" and response.trickle > 0:
                self.wfile.flush()
                for index in range(len(data)):
                    if stub._stopping.wait(response.trickle):
                        break
                    self.wfile.write(data[index : index + 1])
                    self.wfile.flush()
            elif self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class StubServer:
    """A real HTTP/1.1 server on 127.0.0.1 that records requests and answers from routes."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._routes: dict[tuple[str, str], Handler] = {}
        self._requests: list[Request] = []
        self._errors: list[Exception] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (https with TLS), without a trailing slash."""
        if self._server is None:
            raise RuntimeError("the stub server is not started")
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def route(
        self, method: str, path: str, handler: Handler | Response | Sequence[Response]
    ) -> None:
        """Answer ``method path`` (the path without query string) with ``handler``.

        A sequence of responses answers in order and repeats its last one forever.
        Routing the same method and path again replaces the route.
        """
        with self._changed:
            self._routes[(method.upper(), path)] = _as_handler(handler)

    def requests(self, path: str | None = None) -> list[Request]:
        """The requests received so far (for ``path``, query ignored), oldest first."""
        with self._changed:
            return self._matching(path)

    def wait_for_requests(
        self, count: int, path: str | None = None, timeout: float = 10
    ) -> list[Request]:
        """Block until at least ``count`` requests (for ``path``) arrived; return them all.

        Raises ``TimeoutError`` saying what did arrive when ``timeout`` seconds pass first.
        """
        with self._changed:
            if self._changed.wait_for(lambda: len(self._matching(path)) >= count, timeout):
                return self._matching(path)
            seen = [f"{r.method} {r.path}" for r in self._requests]
            matched = len(self._matching(path))
        where = "" if path is None else f" for {path}"
        raise TimeoutError(
            f"expected at least {count} request(s){where} within {timeout:g}s, "
            f"got {matched}; all requests received: {seen or 'none'}"
        )

    def clear_requests(self) -> None:
        """Forget the requests received so far."""
        with self._changed:
            self._requests.clear()

    @property
    def errors(self) -> list[Exception]:
        """Exceptions raised by route handlers (answered with a 500) or by the server."""
        with self._changed:
            return list(self._errors)

    def start(self) -> Self:
        """Bind an ephemeral port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the stub server is already started")
        self._stopping.clear()
        self._server = _Server(self)
        if self._tls is not None:
            self._server.socket = self._tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"stub-http-{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly: interrupt delayed responses, close connections, join threads."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _matching(self, path: str | None) -> list[Request]:
        if path is None:
            return list(self._requests)
        return [r for r in self._requests if r.path_only == path]

    def _record(self, request: Request) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _record_error(self, exc: Exception) -> None:
        with self._changed:
            self._errors.append(exc)

    def _handler_for(self, request: Request) -> Handler:
        with self._changed:
            handler = self._routes.get((request.method.upper(), request.path_only))
        return handler if handler is not None else _as_handler(NO_ROUTE)


DEFAULT_CLIENT_ID = "selfheal-client"
DEFAULT_CLIENT_SECRET = "selfheal-secret"
DEFAULT_REFRESH_TOKEN = "rt-1"


def _oauth_error(status: int, error: str, description: str, **headers: str) -> Response:
    return Response(
        status,
        {"error": error, "error_description": description},
        {"cache-control": "no-store", "pragma": "no-cache", **headers},
    )


def _numbered(prefix: str, start: int) -> Iterator[str]:
    return (f"{prefix}{n}" for n in itertools.count(start))


class OAuthTokenEndpoint:
    """An RFC 6749 section 6 token endpoint for ``grant_type=refresh_token``; a Handler.

    Clients authenticate with HTTP Basic (section 2.3.1: id and secret each
    form-urlencoded, then ``base64(id:secret)``) or with ``client_id`` and
    ``client_secret`` form fields, not both. Errors follow section 5.2:
    ``invalid_request`` (400), ``invalid_client`` (401), ``unsupported_grant_type``
    (400), ``invalid_grant`` (400, a refresh token that is not the valid one),
    ``invalid_scope`` (400, a scope beyond ``granted_scope``).

    State, readable at any time: ``valid_refresh_token``, ``issued_access_tokens``,
    ``issued_refresh_tokens``, ``refresh_count`` (successful refreshes) and
    ``request_count`` (all requests). Set ``fail_with`` to a Response (a 500,
    ``b"<html>"``, a delay, a drop) to take the endpoint down; ``None`` brings it back.
    """

    def __init__(
        self,
        *,
        refresh_token: str = DEFAULT_REFRESH_TOKEN,
        access_tokens: Iterable[str] | None = None,
        refresh_tokens: Iterable[str] | None = None,
        rotate: bool = True,
        expires_in: int = 3600,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        granted_scope: str | None = None,
        fail_with: Response | None = None,
    ) -> None:
        self.valid_refresh_token = refresh_token
        self.rotate = rotate
        self.expires_in = expires_in
        self.client_id = client_id
        self.client_secret = client_secret
        self.granted_scope = granted_scope
        self.fail_with = fail_with
        self.issued_access_tokens: list[str] = []
        self.issued_refresh_tokens: list[str] = []
        self.refresh_count = 0
        self.request_count = 0
        self._access_tokens = (
            iter(access_tokens) if access_tokens is not None else _numbered("at-", 1)
        )
        self._refresh_tokens = (
            iter(refresh_tokens) if refresh_tokens is not None else _numbered("rt-", 2)
        )
        self._lock = threading.Lock()

    @property
    def current_access_token(self) -> str | None:
        """The access token issued last, if any."""
        with self._lock:
            return self.issued_access_tokens[-1] if self.issued_access_tokens else None

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.request_count += 1
            if self.fail_with is not None:
                return self.fail_with
            return self._refresh(request)

    def _client(self, request: Request, form: dict[str, str]) -> tuple[str, str] | str | None:
        """The (id, secret) presented, ``None`` for none, or a string describing misuse."""
        authorization = request.headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        in_body = "client_secret" in form
        if authorization:
            if scheme.lower() != "basic":
                return f"unsupported authorization scheme {scheme!r}"
            if in_body:
                return "more than one client authentication method"
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return "malformed basic credentials"
            encoded_id, sep, encoded_secret = decoded.partition(":")
            if not sep:
                return "malformed basic credentials"
            return unquote_plus(encoded_id), unquote_plus(encoded_secret)
        if in_body or "client_id" in form:
            return form.get("client_id", ""), form.get("client_secret", "")
        return None

    def _refresh(self, request: Request) -> Response:
        if request.method != "POST":
            return _oauth_error(405, "invalid_request", "the token endpoint takes POST")
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return _oauth_error(400, "invalid_request", f"unexpected content-type {content_type!r}")
        try:
            form = request.form()
        except UnicodeDecodeError:
            return _oauth_error(400, "invalid_request", "the body is not UTF-8")
        if "grant_type" not in form:
            return _oauth_error(400, "invalid_request", "grant_type is missing")
        client = self._client(request, form)
        if not isinstance(client, tuple) or client != (self.client_id, self.client_secret):
            reason = client if isinstance(client, str) else "client authentication failed"
            return _oauth_error(
                401, "invalid_client", reason, **{"www-authenticate": 'Basic realm="token"'}
            )
        if form["grant_type"] != "refresh_token":
            return _oauth_error(400, "unsupported_grant_type", f"grant_type {form['grant_type']!r}")
        presented = form.get("refresh_token")
        if not presented:
            return _oauth_error(400, "invalid_request", "refresh_token is missing")
        if presented != self.valid_refresh_token:
            return _oauth_error(400, "invalid_grant", "the refresh token is invalid or revoked")
        scope = form.get("scope")
        if scope is not None and self.granted_scope is not None:
            beyond = set(scope.split()) - set(self.granted_scope.split())
            if beyond:
                return _oauth_error(400, "invalid_scope", f"not granted: {sorted(beyond)}")
        access_token = next(self._access_tokens)
        self.issued_access_tokens.append(access_token)
        self.refresh_count += 1
        payload: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if self.rotate:
            self.valid_refresh_token = next(self._refresh_tokens)
            self.issued_refresh_tokens.append(self.valid_refresh_token)
            payload["refresh_token"] = self.valid_refresh_token
        if scope is not None:
            payload["scope"] = scope
        return Response(200, payload, {"cache-control": "no-store", "pragma": "no-cache"})


def oauth_token_endpoint(
    tokens: Iterator[str] | None = None,
    *,
    rotate: bool = True,
    expires_in: int = 3600,
    refresh_token: str = DEFAULT_REFRESH_TOKEN,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    fail_with: Response | None = None,
) -> OAuthTokenEndpoint:
    """An :class:`OAuthTokenEndpoint` issuing ``tokens`` (default ``at-1``, ``at-2``...)."""
    return OAuthTokenEndpoint(
        refresh_token=refresh_token,
        access_tokens=tokens,
        rotate=rotate,
        expires_in=expires_in,
        client_id=client_id,
        client_secret=client_secret,
        fail_with=fail_with,
    )


def bearer_protected_api(
    valid_tokens: Callable[[], Collection[str]] | Collection[str],
    *,
    ok: Response | None = None,
    status: int = 401,
    error: str = "invalid_auth",
) -> Handler:
    """A Slack-like API that requires ``authorization: Bearer <valid token>``.

    ``valid_tokens`` is read on every request, so it can follow a token endpoint:
    ``bearer_protected_api(lambda: endpoint.issued_access_tokens[-1:])``.
    With a valid token the answer is ``ok`` (default 200 ``{"ok": true}``);
    otherwise ``status`` with ``{"ok": false, "error": error}`` and, per RFC 6750
    section 3.1, ``www-authenticate: Bearer error="invalid_token"`` (just
    ``Bearer realm="api"`` when no credentials were sent).
    """
    if isinstance(valid_tokens, str):
        raise TypeError("valid_tokens is a collection of tokens, not one string")
    success = ok if ok is not None else Response(200, {"ok": True})

    def handle(request: Request) -> Response:
        tokens = valid_tokens() if callable(valid_tokens) else valid_tokens
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip() and token.strip() in tokens:
            return success
        challenge = 'Bearer error="invalid_token"' if scheme else 'Bearer realm="api"'
        return Response(status, {"ok": False, "error": error}, {"www-authenticate": challenge})

    return handle


class HoldUntilInFlight:
    """A Handler that holds each request until ``count`` requests are in flight at once.

    Once that many are in flight together, every held request gets ``response`` and later
    ones are answered at once: a client that keeps ``count`` requests open is seen to do
    so, without guessing how long to hold them. ``peak`` is the most requests in flight at
    once. Fewer than ``count`` together within ``timeout`` seconds: each held request
    raises ``TimeoutError`` (recorded in :attr:`StubServer.errors`, answered with a 500).
    """

    def __init__(self, count: int, response: Response | None = None, timeout: float = 10) -> None:
        self.count = count
        self.response = response if response is not None else Response(200, {"ok": True})
        self.timeout = timeout
        self.in_flight = 0
        self.peak = 0
        self._changed = threading.Condition()
        self._open = False

    def __call__(self, request: Request) -> Response:
        with self._changed:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            if self.in_flight >= self.count:
                self._open = True
                self._changed.notify_all()
            try:
                if not self._changed.wait_for(lambda: self._open, self.timeout):
                    raise TimeoutError(
                        f"{self.in_flight} request(s) in flight at most {self.peak}, "
                        f"never {self.count} at once within {self.timeout:g}s"
                    )
            finally:
                self.in_flight -= 1
        return self.response


class HeldApi:
    """A Handler whose requests wait until `release()` (at most 30 s), then succeed."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def __call__(self, request: Request) -> Response:
        self.released.wait(30)
        return Response(200, {"ok": True})

    def release(self) -> None:
        self.released.set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server to bind next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
