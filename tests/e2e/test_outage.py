"""Heal through an outage: circuits per service (and per user connection for auth), over
real daemons and a loopback stand-in for the service that goes down and comes back."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.daemon import DaemonProcess
from tests.support.events import insert_failure, wait_until
from tests.support.http import Request, Response, StubServer

pytestmark = pytest.mark.e2e

Conn = psycopg.Connection[tuple[object, ...]]

# Fast probes, so that an outage of a few probes takes seconds.
FAST_PROBES = {
    "SELFHEAL_CIRCUIT_PROBE_BASE_SECONDS": "0.2",
    "SELFHEAL_CIRCUIT_PROBE_MAX_SECONDS": "0.5",
}
# ...and every failed probe counted (by default one a minute), so that "stays down" takes
# seconds to reach the threshold too.
COUNT_EVERY_PROBE = {**FAST_PROBES, "SELFHEAL_CIRCUIT_COUNT_INTERVAL_SECONDS": "0"}


class Outage:
    """A service that answers 503 while down and 200 once back; counts what it received."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down = True
        self.while_down = 0
        self.in_flight = 0
        self.peak_while_down = 0
        self.hold = threading.Event()  # set: a request held while down returns at once

    def __call__(self, request: Request) -> Response:
        with self._lock:
            if not self.down:
                return Response(200, {"ok": True})
            self.while_down += 1
            self.in_flight += 1
            self.peak_while_down = max(self.peak_while_down, self.in_flight)
        try:
            # Held a little while down, so that two probes at once would overlap here.
            self.hold.wait(0.2)
            return Response(503, b"service unavailable")
        finally:
            with self._lock:
                self.in_flight -= 1

    def come_back(self) -> int:
        with self._lock:
            self.down = False
            return self.while_down


@pytest.fixture
def api() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


def _failures(conn: Conn, api: StubServer, count: int, service: str = "stripe") -> list[object]:
    return [
        insert_failure(
            conn,
            service_name=service,
            http_status=503,
            error_code=None,
            error_message="service unavailable",
            endpoint=api.url + "/v1/charges",
        )
        for _ in range(count)
    ]


def _count(conn: Conn, where: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM system_integrity_events WHERE {where}").fetchone()
    return int(row[0]) if row else 0


def _all_resolved(conn: Conn, count: int) -> None:
    """Wait until `count` failures are resolved, each with exactly one record."""
    wait_until(
        conn,
        "SELECT count(*) FROM system_integrity_events WHERE status = 'resolved'",
        (),
        count,
        timeout=60,
    )
    row = conn.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM system_integrity_events"
    ).fetchone()
    assert row == (count, count)


def _failed_probes(conn: Conn, service: str = "stripe") -> int:
    row = conn.execute(
        "SELECT circuit_failed_probes FROM integrations_master WHERE service_name = %s",
        (service,),
    ).fetchone()
    return int(row[0]) if row else 0


def test_a_service_down_for_a_while_heals_every_failure_and_is_not_disabled(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    outage = Outage()
    api.route("POST", "/v1/charges", outage)
    daemon = DaemonProcess(db_url, **FAST_PROBES)
    daemons.append(daemon)
    daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = _failures(conn, api, 200)
        opened = daemon.wait_for("circuit.opened")
        assert opened["service_name"] == "stripe"
        # Down through several probes: the failures wait, they do not replay on their own.
        wait_until(conn, "SELECT circuit_failed_probes >= 3 FROM integrations_master", (), True)
        received_while_down = outage.come_back()
        _all_resolved(conn, len(ids))
        row = conn.execute(
            "SELECT auto_recovery_enabled, circuit_opened_at FROM integrations_master"
        ).fetchone()
        assert row == (True, None)
    # 200 failures of a dead service: a handful of replays open the circuit, then one
    # probe at a time; never one request per failure.
    assert received_while_down <= 5 + 8 + 20, received_while_down
    assert outage.peak_while_down <= 8
    closed = daemon.wait_for("circuit.closed")
    assert closed["service_name"] == "stripe" and closed["failures_released"] > 0
    assert daemon.events("circuit.probe")
    assert daemon.terminate() == 0


def test_a_service_that_stays_down_is_disabled_at_the_threshold_and_then_left_alone(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    outage = Outage()
    outage.hold.set()
    api.route("POST", "/v1/charges", outage)
    daemon = DaemonProcess(db_url, **COUNT_EVERY_PROBE)
    daemons.append(daemon)
    daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        _failures(conn, api, 30)
        # The failed probes count, one each: the 9th network failure in the hour disables.
        wait_until(
            conn,
            "SELECT disabled_reason FROM integrations_master WHERE service_name = 'stripe'",
            (),
            "9 network failures in 60 minutes",
            timeout=60,
        )
        assert _failed_probes(conn) == 9  # every one counted: the 9th crossed
        after_disable = len(api.requests())
        # A new failure of the disabled service is recorded disabled, with no request.
        [late] = _failures(conn, api, 1)
        wait_until(
            conn,
            "SELECT status FROM system_integrity_events WHERE event_id = %s",
            (late,),
            "disabled",
        )
        assert len(api.requests()) == after_disable
        assert _count(conn, "status = 'disabled'") >= 1
    assert daemon.terminate() == 0


def test_two_daemons_probe_one_open_circuit_one_at_a_time(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    outage = Outage()
    api.route("POST", "/v1/charges", outage)
    pair = [DaemonProcess(db_url, **FAST_PROBES) for _ in range(2)]
    daemons.extend(pair)
    for daemon in pair:
        daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = _failures(conn, api, 100)
        wait_until(conn, "SELECT circuit_failed_probes >= 4 FROM integrations_master", (), True)
        probes_before = outage.while_down
        # Probes alone now: each held 0.2 s at the server; two at once would overlap there.
        outage.peak_while_down = 0
        wait_until(
            conn,
            "SELECT circuit_failed_probes >= 8 FROM integrations_master",
            (),
            True,
            timeout=60,
        )
        assert outage.peak_while_down == 1
        assert outage.while_down - probes_before >= 4
        outage.come_back()
        _all_resolved(conn, len(ids))
    for daemon in pair:
        assert daemon.terminate() == 0


def test_a_probe_that_meets_a_failure_of_its_own_closes_the_circuit(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    outage = Outage()
    gone = Outage()  # down with the service; once it is back, this one answers 404
    api.route("POST", "/v1/charges", outage)
    api.route("POST", "/v1/refunds/gone", lambda r: gone(r) if gone.down else Response(404))
    daemon = DaemonProcess(db_url, **FAST_PROBES)
    daemons.append(daemon)
    daemon.started()
    with psycopg.connect(db_url, autocommit=True) as conn:
        # The oldest waiting failure is one that can never succeed.
        insert_failure(
            conn,
            service_name="stripe",
            http_status=503,
            error_code=None,
            error_message="service unavailable",
            endpoint=api.url + "/v1/refunds/gone",
        )
        ids = _failures(conn, api, 30)
        daemon.wait_for("circuit.opened")
        wait_until(conn, "SELECT circuit_failed_probes >= 2 FROM integrations_master", (), True)
        outage.come_back()
        gone.come_back()
        wait_until(
            conn,
            "SELECT count(*) FROM system_integrity_events WHERE status = 'resolved'",
            (),
            len(ids),
            timeout=60,
        )
        row = conn.execute("SELECT circuit_opened_at FROM integrations_master").fetchone()
        assert row == (None,)
    assert daemon.terminate() == 0


def test_more_circuits_due_a_probe_than_free_slots_do_not_stop_the_daemon(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    outage = Outage()
    api.route("POST", "/v1/charges", outage)
    daemon = DaemonProcess(db_url, SELFHEAL_MAX_RECOVERIES="1", **FAST_PROBES)
    daemons.append(daemon)
    daemon.started()
    services = ("stripe", "slack", "teams")
    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = [i for name in services for i in _failures(conn, api, 6, service=name)]
        wait_until(
            conn,
            "SELECT count(*) FROM integrations_master WHERE circuit_failed_probes >= 1",
            (),
            len(services),
            timeout=60,
        )
        outage.come_back()
        wait_until(
            conn,
            "SELECT count(*) FROM system_integrity_events WHERE status = 'resolved'",
            (),
            len(ids),
            timeout=60,
        )
    assert not daemon.events("daemon.crashed")
    assert daemon.terminate() == 0
