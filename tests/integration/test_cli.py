"""The one-shot commands print the contract's JSON shapes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from selfheal.cli import classify, main
from tests.support.events import insert_failure
from tests.support.http import Response, StubServer

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SELFHEAL_LOG_FORMAT", "json")
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    return db_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    out = capsys.readouterr().out.strip()
    return code, json.loads(out) if out.startswith("{") else out


def test_heal_prints_the_webhook_response(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(env, autocommit=True) as conn:
        event_id = insert_failure(
            conn, http_status=429, error_code="ratelimited", response_headers={"retry-after": "30"}
        )
    code, body = run(capsys, "heal", str(event_id))
    assert code == 0
    assert body["success"] is True
    assert body["category"] == "rate_limit"
    assert body["status"] == "pending"
    assert body["action_taken"]
    uuid.UUID(body["recovery_id"])
    # Healing again reports the same record.
    assert run(capsys, "heal", str(event_id))[1]["recovery_id"] == body["recovery_id"]


def test_heal_of_an_unknown_event_fails_clearly(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, body = run(capsys, "heal", str(uuid.uuid4()))
    assert code == 1
    assert body["success"] is False
    assert "not found" in body["error"]


def test_scan_processes_the_window_up_to_the_limit(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(env, autocommit=True) as conn:
        ids = [insert_failure(conn, service_name=f"svc{n}") for n in range(5)]
        old = insert_failure(conn)
        conn.execute(
            "UPDATE integration_events SET created_at = now() - interval '2 hours' WHERE id = %s",
            (old,),
        )
    code, body = run(capsys, "scan", "--window-minutes", "15", "--limit", "3")
    assert code == 0
    assert body["success"] is True
    assert body["processed_count"] == 3
    assert body["pending_count"] == 3
    assert body["resolved_count"] == body["disabled_count"] == 0
    assert {e["event_id"] for e in body["events"]} <= {str(i) for i in ids}
    assert set(body["events"][0]) == {
        "event_id",
        "service_name",
        "category",
        "action_taken",
        "status",
    }
    assert run(capsys, "scan")[1]["processed_count"] == 2  # the old one is outside the window


def test_classify_reads_json_lines_and_survives_bad_ones() -> None:
    stdin = io.StringIO(
        '{"service_name": "github", "http_status": 403, "error_message": '
        '"You have exceeded a secondary rate limit", "response_headers": {"retry-after": "60"}}\n'
        "not json\n"
        "[1, 2]\n"
        '{"http_status": "nonsense", "response_headers": "odd"}\n'
    )
    stdout = io.StringIO()
    assert classify(stdin, stdout) == 0
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert lines[0]["category"] == "rate_limit"
    assert "error" in lines[1] and "error" in lines[2]
    assert lines[3]["category"] == "unknown"


def test_inject_refuses_outside_development(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inject", "--service", "slack", "--failure", "auth"]) == 2
    assert "ENVIRONMENT=development" in capsys.readouterr().err


def test_inject_status_and_enable(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "development")
    code, body = run(capsys, "inject", "--service", "slack", "--failure", "network")
    assert code == 0
    _, healed = run(capsys, "heal", body["event_id"])
    assert healed["category"] == "network"
    assert healed["status"] == "pending"
    assert healed["action_taken"] == "cannot replay: the event has no endpoint"
    _, status = run(capsys, "status", "--json")
    assert (status["pending"], status["failures_24h"], status["disabled"]) == (1, 1, 0)
    assert status["by_category"] == {"network": {"pending": 1}}
    assert status["pending_by_category"] == {"network": 1}
    # The unhealed failure counts against its service (recovery_fail_count).
    [failing] = status["top_failing_services"]
    assert failing == {
        "service_name": "slack",
        "failures_24h": 1,
        "resolved_24h": 0,
        "pending_24h": 1,
        "enabled": True,
        "unhealed_since_success": 1,
    }
    code, text = run(capsys, "status")
    assert code == 0 and "network" in text
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "slack 1 0 1" in lines and any(
        line.startswith("active failures (pending) 1") for line in lines
    )
    with psycopg.connect(env, autocommit=True) as conn:
        # The healer registered the service on its first failure; an operator's view of it:
        conn.execute(
            "UPDATE integrations_master SET auto_recovery_enabled = false, "
            "recovery_fail_count = 9, disabled_reason = 'too many' WHERE service_name = 'slack'"
        )
        _, status = run(capsys, "status", "--json")
        assert status["disabled_integrations"][0]["reason"] == "too many"
        assert status["disabled"] == 1
        code, enabled = run(capsys, "enable", "slack")
        assert (code, enabled["enabled"]) == (0, 1)
        row = conn.execute(
            "SELECT auto_recovery_enabled, recovery_fail_count FROM integrations_master"
        ).fetchone()
        assert row == (True, 0)
        assert run(capsys, "enable", "nope")[0] == 1
        # Both are on record, with what came of them.
        assert conn.execute(
            "SELECT action, via, service_name, result FROM selfheal_operator_actions ORDER BY id"
        ).fetchall() == [
            ("enable", "cli", "slack", "enabled"),
            ("enable", "cli", "nope", "not_found"),
        ]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("migrate", "run", "heal", "scan", "classify", "inject", "status", "enable"):
        assert command in out


def test_heal_reports_the_real_outcome(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    with StubServer() as api, psycopg.connect(env, autocommit=True) as conn:
        api.route("POST", "/ok", [Response(503), Response(200, {"ok": True})])
        healed = insert_failure(
            conn,
            http_status=503,
            error_code=None,
            error_message="unavailable",
            endpoint=api.url + "/ok",
        )
        limited = insert_failure(
            conn,
            service_name="github",
            http_status=429,
            error_code=None,
            error_message="slow down",
            response_headers={"retry-after": "120"},
            endpoint=api.url + "/later",
        )
        code, body = run(capsys, "heal", str(healed))
        assert code == 0
        assert (body["status"], body["category"]) == ("resolved", "network")
        assert "retry_scheduled" not in body
        code, body = run(capsys, "heal", str(limited))
        assert (body["status"], body["category"]) == ("pending", "rate_limit")
        assert body["retry_scheduled"] is True
        assert body["next_retry_at"] > datetime.now(UTC).isoformat()
        assert api.requests("/later") == []


def test_without_database_url_or_the_embedded_extra_it_says_what_to_install() -> None:
    # The extra's modules made unimportable, as in an install without `[embedded]`.
    code = (
        "import sys; sys.modules['pgserver'] = None; "
        "from selfheal.cli import main; sys.exit(main(['status']))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "selfheal: DATABASE_URL is not set and the embedded Postgres is not installed: "
        "set DATABASE_URL, or install it with pip install 'pg-selfheal[embedded]'"
    ]


def test_status_shows_an_open_circuit_and_enable_closes_it(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(env, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO integrations_master (service_name, circuit_opened_at, "
            "circuit_failed_probes, circuit_next_probe_at) "
            "VALUES ('stripe', now(), 2, now() + interval '5 seconds')"
        )
        for _ in range(3):
            event_id = insert_failure(conn, service_name="stripe", http_status=503)
            conn.execute(
                "INSERT INTO system_integrity_events (event_id, service_name, failure_category, "
                "status, held_by_circuit, next_retry_at, action_taken) "
                "VALUES (%s, 'stripe', 'network', 'pending', true, now() + interval '1 hour', "
                "'waiting for stripe to recover (circuit open)')",
                (event_id,),
            )
        _, status = run(capsys, "status", "--json")
        [circuit] = status["circuits"]
        assert (circuit["service_name"], circuit["failures_waiting"], circuit["failed_probes"]) == (
            "stripe",
            3,
            2,
        )
        _, text = run(capsys, "status")
        assert "circuit   stripe open since" in text and "3 failures waiting" in text
        code, enabled = run(capsys, "enable", "stripe")
        assert (code, enabled["enabled"]) == (0, 1)
        assert run(capsys, "status", "--json")[1]["circuits"] == []
        # The failures that waited are due again, now.
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE NOT held_by_circuit AND next_retry_at <= now()) "
            "FROM system_integrity_events"
        ).fetchone()
        assert row == (3,)


KNOWN_RECORDS = """
INSERT INTO system_integrity_events (event_id, service_name, failure_category, status,
                                     created_at, resolved_at, next_retry_at)
SELECT gen_random_uuid(), r.service, r.category, r.status,
       now() - make_interval(secs => r.age), now() - make_interval(secs => r.age - r.ttr),
       CASE WHEN r.status = 'pending' THEN now() + interval '1 hour' END
FROM (VALUES
    -- service, category, status, seconds ago, seconds it took to recover
    ('stripe', 'network', 'resolved', 3600, 10), ('stripe', 'network', 'resolved', 3000, 20),
    ('stripe', 'network', 'resolved', 2400, 30), ('stripe', 'rate_limit', 'resolved', 600, 40),
    ('stripe', 'data', 'pending', 500, 0), ('slack', 'auth', 'resolved', 400, 100),
    ('slack', 'auth', 'pending', 300, 0), ('teams', 'unknown', 'disabled', 200, 0),
    -- two days old: active, but not part of the last day's figures
    ('slack', 'data', 'pending', 172800, 0), ('slack', 'network', 'resolved', 172800, 5)
) AS r(service, category, status, age, ttr)
"""


def test_status_reports_the_kpis_of_known_data(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(env, autocommit=True) as conn:
        conn.execute(KNOWN_RECORDS)
        conn.execute(
            "UPDATE system_integrity_events SET resolved_at = NULL WHERE status <> 'resolved'"
        )
        conn.execute(
            "INSERT INTO integrations_master (service_name, auto_recovery_enabled, "
            "disabled_reason) VALUES ('teams', false, '5 consecutive unknown failures')"
        )
    _, status = run(capsys, "status", "--json")
    for key in (
        "pending", "disabled", "recovery_rate_24h", "mttr_seconds", "by_category",
        "top_failing_services", "llm", "circuits", "alert_groups",
    ):  # fmt: skip
        assert key in status, key
    assert status["pending"] == 3  # the old one too
    assert status["pending_by_category"] == {"data": 2, "auth": 1}
    assert status["disabled"] == 1
    assert status["failures_24h"] == 8 and status["resolved_24h"] == 5
    assert status["recovery_rate_24h"] == 0.625
    assert status["mttr_seconds"] == pytest.approx((10 + 20 + 30 + 40 + 100) / 5, abs=0.01)
    assert status["ttr_p90_seconds"] == pytest.approx(76, abs=0.01)  # between 40 and 100
    assert status["by_category"] == {
        "network": {"resolved": 3},
        "rate_limit": {"resolved": 1},
        "data": {"pending": 1},
        "auth": {"resolved": 1, "pending": 1},
        "unknown": {"disabled": 1},
    }
    assert [(s["service_name"], s["failures_24h"]) for s in status["top_failing_services"]] == [
        ("stripe", 5),
        ("slack", 2),
        ("teams", 1),
    ]
    assert status["top_failing_services"][2]["enabled"] is False
    assert status["llm"]["calls"] == 0 and status["alert_groups"]["open_groups"] == 0
    _, text = run(capsys, "status")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "active failures (pending) 3 oldest 48.0 h ago" in lines
    assert "recovery rate, 24 h 62.5% 5 resolved" in lines
    assert "time to recover, 24 h 40.0 s p90 1.3 min" in lines
    assert "stripe 5 4 1" in lines
    assert "disabled teams: 5 consecutive unknown failures" in lines


def test_inject_writes_each_kind_as_an_integration_would(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "development")
    user = uuid.uuid4()
    code, body = run(
        capsys, "inject", "--service", "acme", "--failure", "unknown", "--count", "3",
        "--user", str(user), "--endpoint", "https://api.acme.example/v1/widgets",
    )  # fmt: skip
    assert code == 0 and body["success"] and len(body["event_ids"]) == 3
    assert body["event_id"] == body["event_ids"][0]
    with psycopg.connect(env, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT service_name, status, http_status, error_code, user_id, endpoint, "
            "selfheal_attempt FROM integration_events"
        ).fetchall()
        queued = conn.execute("SELECT count(*) FROM selfheal_inbox").fetchone()
    assert set(rows) == {
        ("acme", "error", 418, "teapot", user, "https://api.acme.example/v1/widgets", None)
    }
    assert queued == (3,)  # the trigger saw them, as any integration's rows
    for kind in ("auth", "rate_limit", "network", "data", "unknown"):
        code, body = run(capsys, "inject", "--service", "acme", "--failure", kind)
        assert code == 0, kind
    with pytest.raises(SystemExit) as refused:
        main(["inject", "--service", "acme", "--failure", "auth", "--count", "0"])
    assert refused.value.code == 2
    assert "'0' is not a count from 1 to 100,000" in capsys.readouterr().err
