"""Running it: systemd's notify protocol over a real Unix datagram socket (READY, the
watchdog's pings and what stops them, STATUS, STOPPING), and the daemon's HTTP server:
/metrics read with prometheus_client's own parser, /healthz turning 503 when Postgres
goes away."""

from __future__ import annotations

import os
import queue
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import DaemonProcess
from tests.support.events import insert_failure, wait_until
from tests.support.http import Response, StubServer, free_port
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.e2e

QUICK = {"SELFHEAL_POLL_INTERVAL_SECONDS": "0.5", "SELFHEAL_ALERT_GROUP_WAIT_SECONDS": "0"}


class NotifySocket:
    """systemd's side of sd_notify: a datagram socket that keeps what the daemon sends."""

    def __init__(self, path: str) -> None:
        self.address = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind("\0" + path[1:] if path.startswith("@") else path)
        self._socket.settimeout(0.2)
        self.messages: queue.Queue[dict[str, str]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.put(fields)

    def next(self, key: str, timeout: float = 30) -> dict[str, str]:
        """The next datagram that sets `key` (the ones before it are dropped)."""
        while True:
            message = self.messages.get(timeout=timeout)
            if key in message:
                return message

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _daemon(db_url: str, daemons: list[DaemonProcess], **env: str) -> DaemonProcess:
    daemon = DaemonProcess(db_url, **{**QUICK, **env})
    daemons.append(daemon)
    return daemon.started()


def test_ready_status_watchdog_and_stopping_reach_systemd(
    db_url: str, notify_socket: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    daemon = _daemon(db_url, daemons, NOTIFY_SOCKET=notify_socket.address, WATCHDOG_USEC="1000000")
    ready = notify_socket.next("READY")
    assert ready["READY"] == "1" and ready["STATUS"].startswith("listening")
    # Pings at half the interval, each with a live summary.
    for _ in range(3):
        ping = notify_socket.next("WATCHDOG")
        assert ping["WATCHDOG"] == "1"
    with psycopg.connect(db_url, autocommit=True) as conn:
        insert_failure(
            conn, service_name="billing", http_status=422, error_code="validation_error",
            error_message="amount is required",
        )  # fmt: skip
        wait_until(conn, "SELECT count(*) FROM system_integrity_events", (), 1)
    while "pending 1" not in notify_socket.next("STATUS")["STATUS"]:
        pass
    status = notify_socket.next("STATUS")["STATUS"]
    assert status == "listening; inbox 0; pending 1; open circuits 0; alerts queued 0"
    daemon.proc.send_signal(15)
    stopping = notify_socket.next("STOPPING")
    assert stopping["STOPPING"] == "1"
    # The grace (10 s) and the time after it: systemd must not kill it meanwhile.
    assert int(notify_socket.next("EXTEND_TIMEOUT_USEC")["EXTEND_TIMEOUT_USEC"]) == 15_000_000
    assert daemon.proc.wait(30) == 0


def test_a_stuck_loop_stops_the_watchdog_pings_until_it_moves_again(
    db_url: str, notify_socket: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    daemon = _daemon(
        db_url,
        daemons,
        NOTIFY_SOCKET=notify_socket.address,
        WATCHDOG_USEC="1000000",
        SELFHEAL_WATCHDOG_STALL_SECONDS="2",
        SELFHEAL_DB_TIMEOUT_SECONDS="120",  # the stuck statement outlasts the stall limit
    )
    notify_socket.next("WATCHDOG")
    with psycopg.connect(db_url) as blocker:
        # The claimer's next look at the inbox waits behind this lock: it is stuck.
        blocker.execute("LOCK TABLE selfheal_inbox IN ACCESS EXCLUSIVE MODE")
        stalled = daemon.wait_for("watchdog.stalled")
        assert any(loop.startswith("claimer made no progress") for loop in stalled["loops"])
        # STATUS goes on; the pings do not.
        while not notify_socket.messages.empty():
            notify_socket.messages.get()
        for _ in range(4):
            assert "WATCHDOG" not in notify_socket.next("STATUS")
        blocker.rollback()
    daemon.wait_for("watchdog.recovered")
    assert notify_socket.next("WATCHDOG")["WATCHDOG"] == "1"
    assert daemon.terminate() == 0


def test_an_abstract_socket_and_a_watchdog_for_another_process(
    db_url: str, daemons: list[DaemonProcess]
) -> None:
    abstract = NotifySocket(f"@selfheal-test-{os.getpid()}-{free_port()}")
    try:
        # WATCHDOG_PID names another process: the watchdog is not ours to ping.
        daemon = _daemon(
            db_url,
            daemons,
            NOTIFY_SOCKET=abstract.address,
            WATCHDOG_USEC="1000000",
            WATCHDOG_PID="1",
        )
        assert abstract.next("READY")["READY"] == "1"
        for _ in range(3):
            assert "WATCHDOG" not in abstract.next("STATUS")
        assert daemon.terminate() == 0
    finally:
        abstract.close()


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _sample(families: dict[str, Any], name: str, **labels: str) -> float:
    base = name
    for suffix in ("_total", "_count", "_sum", "_bucket"):
        base = base.removesuffix(suffix)
    for sample in families[base].samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    raise KeyError(f"{name} {labels}")


def test_metrics_and_health_over_http_and_a_503_when_postgres_goes_away(
    db_url: str, tcp_proxy: TcpProxy, daemons: list[DaemonProcess]
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proxied = tcp_proxy.url(db_url)
    with StubServer() as api:
        api.route("POST", "/v1/charges", [Response(503), Response(200, {"ok": True})])
        daemon = _daemon(
            proxied,
            daemons,
            SELFHEAL_LISTEN_DATABASE_URL=proxied,
            SELFHEAL_HTTP_ADDR=f"127.0.0.1:{port}",
            SELFHEAL_DB_TIMEOUT_SECONDS="2",
            SELFHEAL_RECONNECT_MAX_SECONDS="1",
        )
        assert daemon.events("http.listening")[0]["address"] == f"127.0.0.1:{port}"
        with psycopg.connect(db_url, autocommit=True) as conn:
            healed = insert_failure(
                conn,
                service_name="stripe",
                http_status=503,
                error_code=None,
                error_message="unavailable",
                endpoint=api.url + "/v1/charges",
            )
            insert_failure(
                conn, service_name="billing", http_status=422, error_code="validation_error",
                error_message="amount is required",
            )  # fmt: skip
            wait_until(
                conn,
                "SELECT status FROM system_integrity_events WHERE event_id = %s",
                (healed,),
                "resolved",
            )
            wait_until(conn, "SELECT count(*) FROM system_integrity_events", (), 2)
        # The gauges are read every few seconds: wait for one that saw both records.
        while True:
            code, text = _get(base + "/metrics")
            assert code == 200
            families = _families(text)
            if _sample(families, "selfheal_pending") == 1:
                break
        assert _sample(families, "selfheal_failures_recorded_total", service="stripe",
                       category="network") == 1  # fmt: skip
        assert _sample(families, "selfheal_failures_recorded_total", service="billing",
                       category="data") == 1  # fmt: skip
        assert _sample(families, "selfheal_recoveries_total", service="stripe",
                       outcome="resolved") == 1  # fmt: skip
        assert _sample(families, "selfheal_time_to_recover_seconds_count", category="network") == 1
        assert _sample(families, "selfheal_time_to_recover_seconds_bucket", le="86400.0") == 1
        assert _sample(families, "selfheal_notification_lag_seconds_count") == 2
        assert _sample(families, "selfheal_listener_connected") == 1
        assert _sample(families, "selfheal_inbox_depth") == 0
        assert _sample(families, "selfheal_build_info", version=daemon_version()) == 1
        for family in families.values():  # no event id, error code or user id as a label
            for sample in family.samples:
                assert set(sample.labels) <= {
                    "service", "category", "outcome", "channel", "result", "kind", "scope",
                    "le", "version", "implementation", "major", "minor", "patchlevel",
                }, sample  # fmt: skip
        assert _get(base + "/healthz") == (200, "ok\n")

        tcp_proxy.close()  # Postgres is gone: no bytes, no new connections
        while True:
            code, text = _get(base + "/healthz")
            if code == 503:
                break
        daemon.wait_for("listener.disconnected")
        while "postgres unavailable" not in text or "listener not listening" not in text:
            code, text = _get(base + "/healthz")
            assert code == 503
        assert daemon.terminate() == 0


def daemon_version() -> str:
    from selfheal import __version__

    return __version__


def test_an_http_address_in_use_stops_the_daemon_with_one_line(db_url: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        daemon = DaemonProcess(db_url, SELFHEAL_HTTP_ADDR=f"127.0.0.1:{port}")
        try:
            assert daemon.proc.wait(60) == 2
        finally:
            daemon.close()
    [line] = [raw for raw in daemon.raw if "SELFHEAL_HTTP_ADDR" in raw]
    assert line.startswith(
        f"selfheal: invalid configuration: SELFHEAL_HTTP_ADDR: cannot listen on 127.0.0.1:{port}"
    )
