"""A loopback TCP proxy that can go silent like a hung middlebox (NAT, firewall, LB).

``silence()`` freezes every connection open at that moment: nothing more is forwarded
either way, yet neither socket is closed or reset, so the peers see no error, only
silence (and the kernel still acknowledges what they send, so keepalives pass too).
Connections opened after it are forwarded normally: a client that gives up on a dead
link and reconnects gets a working one::

    with TcpProxy("127.0.0.1", 5432) as proxy:
        url = proxy.url(db_url)
        ...  # the daemon runs on url
        proxy.silence()
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any, Self

from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["TcpProxy", "tcp_target"]

_CHUNK = 65536


def tcp_target(conninfo: str) -> tuple[str, int] | None:
    """The (host, port) of a TCP conninfo; None when it names a unix socket."""
    params = conninfo_to_dict(conninfo)
    host = str(params.get("hostaddr") or params.get("host") or "")
    if not host or host.startswith("/") or "," in host:
        return None
    return host, int(params.get("port") or 5432)


class _Link:
    """One proxied connection: the client's socket and ours to the target."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.silenced = threading.Event()
        self.released = threading.Event()  # close(): silenced pumps may stop waiting
        self._ended = 0  # directions that saw end of file
        self._ended_lock = threading.Lock()

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self.silenced.is_set():
                data = source.recv(_CHUNK)
                if self.silenced.is_set():
                    break  # arrived after silence(): swallowed, like a dead path
                if not data:
                    sink.shutdown(socket.SHUT_WR)  # pass the end of file on, as TCP would
                    self._end_one_direction()
                    return
                sink.sendall(data)
        except OSError:
            self.close()
            return
        # Silent: hold both sockets open, unread, until the proxy is closed.
        self.released.wait()

    def _end_one_direction(self) -> None:
        with self._ended_lock:
            self._ended += 1
            both = self._ended == 2
        if both:
            self.close()

    def close(self) -> None:
        self.released.set()
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class TcpProxy:
    """Forward 127.0.0.1:``port`` to ``target_host:target_port`` until closed."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._closed = False
        self._acceptor = threading.Thread(
            target=self._accept, name=f"tcpproxy-{self.port}", daemon=True
        )
        self._acceptor.start()

    def url(self, conninfo: str) -> str:
        """`conninfo` with its host and port replaced by the proxy's."""
        params: dict[str, Any] = dict(conninfo_to_dict(conninfo))
        params.pop("hostaddr", None)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo(**params)

    @property
    def open_links(self) -> int:
        """Connections forwarded now (silenced ones not counted)."""
        with self._lock:
            return sum(
                1
                for link in self._links
                if not link.silenced.is_set() and not link.released.is_set()
            )

    def silence(self) -> int:
        """Freeze every connection open now (no bytes either way, no FIN, no RST).

        Returns how many were frozen. Later connections are forwarded normally.
        """
        with self._lock:
            links = [link for link in self._links if not link.released.is_set()]
        for link in links:
            link.silenced.set()
        return len(links)

    def close(self) -> None:
        """Stop accepting and close every connection, silenced ones included."""
        with self._lock:
            self._closed = True
            links, self._links = self._links, []
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for link in links:
            link.close()
        self._acceptor.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()  # target down: the client sees the connection refused-ish
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream)
            with self._lock:
                if self._closed:
                    link.close()
                    return
                self._links = [known for known in self._links if not known.released.is_set()]
                self._links.append(link)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=link.pump, args=(source, sink), name="tcpproxy-pump", daemon=True
                ).start()
