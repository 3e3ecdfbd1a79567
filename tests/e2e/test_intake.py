"""POST /integration-self-heal over HTTP: the specification's webhook and scan modes, the
token, bodies that are refused with nothing written, the wait for a slow recovery, and a
POST racing the trigger on one event."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.daemon import DaemonProcess
from tests.support.events import insert_failure, wait_until
from tests.support.http import HeldApi, Response, StubServer, free_port

pytestmark = pytest.mark.e2e

TOKEN = "intake-Token-0123456789abcdef"
QUICK = {"SELFHEAL_POLL_INTERVAL_SECONDS": "0.5", "INTERNAL_WEBHOOK_TOKEN": TOKEN}


class Intake:
    def __init__(self, db_url: str, daemons: list[DaemonProcess], **env: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/integration-self-heal"
        self.daemon = DaemonProcess(
            db_url, **{**QUICK, "SELFHEAL_HTTP_ADDR": f"127.0.0.1:{port}", **env}
        )
        daemons.append(self.daemon)
        self.daemon.started()

    def post(
        self,
        body: Any,
        *,
        query: str = "",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        data = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.url + query,
            data=data,
            method="POST",
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {TOKEN}"} if headers is None else headers),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def api() -> Iterator[StubServer]:
    with StubServer() as server:
        server.route("POST", "/v1/charges", Response(200, {"ok": True}))
        yield server


def _events(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM integration_events").fetchone()
    assert row is not None
    return int(row[0])


def test_a_failure_reported_by_post_alone_is_written_and_healed(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    intake = Intake(db_url, daemons)
    event_id = uuid.uuid4()
    code, body = intake.post(
        {
            "mode": "webhook",
            "event_id": str(event_id),
            "service_name": "stripe",
            "http_status": 503,
            "error_code": None,
            "error_message": "service unavailable",
            "payload": {"amount": 100},
            "endpoint": api.url + "/v1/charges",
            "retry_count": 0,
            "user_id": None,
        }
    )
    assert code == 200, body
    assert body["success"] is True and body["status"] == "resolved"
    assert body["category"] == "network" and body["recovery_id"]
    [replay] = api.requests("/v1/charges")
    assert replay.json() == {"amount": 100}
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT service_name, http_status, status FROM integration_events WHERE id = %s",
            (event_id,),
        ).fetchone()
        assert row == ("stripe", 503, "success")  # written as a failure, then healed
        assert conn.execute(
            "SELECT count(*) FROM system_integrity_events WHERE event_id = %s", (event_id,)
        ).fetchone() == (1,)
    assert intake.daemon.terminate() == 0


def test_an_existing_event_is_healed_and_scan_mode_sweeps_the_window(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    intake = Intake(db_url, daemons)
    with psycopg.connect(db_url, autocommit=True) as conn:
        event_id = insert_failure(
            conn, service_name="billing", http_status=422, error_code="validation_error",
            error_message="amount is required",
        )  # fmt: skip
        code, body = intake.post({"event_id": str(event_id)}, headers={"X-Internal-Token": TOKEN})
        assert code == 200 and body["category"] == "data" and body["status"] == "pending"
        assert _events(conn) == 1  # healed, not written again
        code, scanned = intake.post({"window_minutes": 15, "limit": 50}, query="?mode=scan")
        assert code == 200 and scanned["success"] is True
        assert set(scanned) >= {"processed_count", "resolved_count", "pending_count", "events"}
    assert intake.daemon.terminate() == 0


REFUSED = [
    ({"Authorization": "Bearer wrong"}, b'{"event_id": null, "service_name": "x"}', 401),
    ({}, b'{"service_name": "x"}', 401),
    ({"Authorization": f"Bearer {TOKEN}"}, b"{not json", 400),
    ({"Authorization": f"Bearer {TOKEN}"}, b"[1, 2]", 400),
    ({"Authorization": f"Bearer {TOKEN}"}, b'{"error_message": "no service"}', 422),
    ({"Authorization": f"Bearer {TOKEN}"}, b'{"service_name": "x", "http_status": 9000}', 422),
    ({"Authorization": f"Bearer {TOKEN}"}, b'{"service_name": "x", "event_id": "nope"}', 422),
    ({"Authorization": f"Bearer {TOKEN}"}, b'{"window_minutes": -1}', 422),
    ({"Authorization": f"Bearer {TOKEN}"}, b'{"payload": "' + b"a" * 1_100_000 + b'"}', 413),
]  # fmt: skip


def test_a_wrong_token_or_a_bad_body_gets_a_json_error_and_nothing_is_written(
    db_url: str, daemons: list[DaemonProcess]
) -> None:
    intake = Intake(db_url, daemons)
    for headers, raw, status in REFUSED:
        query = "?mode=scan" if b"window_minutes" in raw else ""
        code, body = intake.post(None, raw=raw, headers=headers, query=query)
        assert (code, body["success"]) == (status, False), (raw[:60], body)
        assert isinstance(body["error"], str) and TOKEN not in body["error"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert _events(conn) == 0
    assert TOKEN not in "".join(intake.daemon.raw)
    assert intake.daemon.terminate() == 0


def test_without_the_token_setting_there_is_no_intake(
    db_url: str, daemons: list[DaemonProcess]
) -> None:
    intake = Intake(db_url, daemons, INTERNAL_WEBHOOK_TOKEN="")
    code, _ = _status_of(intake, {"service_name": "x"})
    assert code == 404
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert _events(conn) == 0
    assert intake.daemon.terminate() == 0


def _status_of(intake: Intake, body: Any) -> tuple[int, str]:
    request = urllib.request.Request(  # noqa: S310 - loopback
        intake.url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_slow_recovery_answers_with_the_pending_record_and_goes_on(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    held = HeldApi()
    api.route("POST", "/v1/slow", held)
    intake = Intake(db_url, daemons, SELFHEAL_WEBHOOK_WAIT_SECONDS="1")
    code, body = intake.post(
        {"service_name": "stripe", "http_status": 503, "endpoint": api.url + "/v1/slow"}
    )
    assert code == 200 and body["success"] is True and body["status"] == "pending"
    held.release()
    with psycopg.connect(db_url, autocommit=True) as conn:
        wait_until(conn, "SELECT status FROM system_integrity_events", (), "resolved", timeout=60)
    assert intake.daemon.terminate() == 0


def test_a_post_and_the_trigger_racing_on_one_event_make_one_record(
    db_url: str, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    intake = Intake(db_url, daemons)
    results: list[tuple[int, dict[str, Any]]] = []
    for _ in range(5):
        event_id = uuid.uuid4()
        report = {
            "event_id": str(event_id),
            "service_name": "stripe",
            "http_status": 503,
            "endpoint": api.url + "/v1/charges",
        }

        # The same failure twice at once: the daemon hears the first write's NOTIFY while
        # the second POST heals it.
        def post(body: dict[str, Any] = report) -> None:
            results.append(intake.post(body))

        threads = [threading.Thread(target=post) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        with psycopg.connect(db_url, autocommit=True) as conn:
            wait_until(
                conn,
                "SELECT count(*) FROM system_integrity_events WHERE event_id = %s",
                (event_id,),
                1,
            )
            assert conn.execute(
                "SELECT count(*) FROM integration_events WHERE id = %s", (event_id,)
            ).fetchone() == (1,)
    assert all(code == 200 and body["success"] for code, body in results), results
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM system_integrity_events"
        ).fetchone() == (5, 5)
    assert intake.daemon.terminate() == 0
