"""Admin alerts in Slack and Teams, over real daemons and loopback stand-ins for a Slack
incoming webhook and a Teams Workflows webhook: grouping, the four messages on the wire,
delivery through outages, kill -9, two daemons, and no webhook URL in any log line."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.daemon import DaemonProcess
from tests.support.events import insert_failure, wait_until
from tests.support.http import HeldApi, Request, Response, StubServer

pytestmark = pytest.mark.e2e

Conn = psycopg.Connection[tuple[object, ...]]

# The secret parts of the webhook URLs: none of them may appear in a log line or a row.
SLACK_SECRET = "XoXoSlackWebhookSecret0123456789"
TEAMS_SIGNATURE = "TeamsFlowSignature9876543210abcdef"
SLACK_PATH = f"/services/T0SELFHEAL/B0SELFHEAL/{SLACK_SECRET}"
TEAMS_PATH = "/workflows/0123abcd/triggers/manual/paths/invoke"

# Quick: no group wait, no pacing, short retries (each test that needs the defaults says so).
QUICK = {
    "SELFHEAL_ALERT_GROUP_WAIT_SECONDS": "0",
    "SELFHEAL_ALERT_SEND_INTERVAL_SECONDS": "0",
    "SELFHEAL_ALERT_RETRY_BASE_SECONDS": "0.05",
    "SELFHEAL_POLL_INTERVAL_SECONDS": "0.5",
}


class Webhooks:
    """One loopback server standing in for both webhooks; Slack answers `ok`, Teams 202."""

    def __init__(self, server: StubServer) -> None:
        self.server = server
        self.slack(Response(200, b"ok", {"content-type": "text/plain"}))
        self.teams(Response(202, b""))

    def slack(self, answer: Any) -> None:
        self.server.route("POST", SLACK_PATH, answer)

    def teams(self, answer: Any) -> None:
        self.server.route("POST", TEAMS_PATH, answer)

    @property
    def env(self) -> dict[str, str]:
        return {
            "SLACK_WEBHOOK_URL": self.server.url + SLACK_PATH,
            "MICROSOFT_TEAMS_WEBHOOK_URL": (
                f"{self.server.url}{TEAMS_PATH}?api-version=2016-06-01&sp=%2Ftriggers"
                f"%2Fmanual%2Frun&sv=1.0&sig={TEAMS_SIGNATURE}"
            ),
        }

    def slack_posts(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        return [r.json() for r in self.server.wait_for_requests(count, SLACK_PATH, timeout)]

    def teams_posts(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        return [r.json() for r in self.server.wait_for_requests(count, TEAMS_PATH, timeout)]

    def slack_requests(self) -> list[Request]:
        return self.server.requests(SLACK_PATH)

    def teams_requests(self) -> list[Request]:
        return self.server.requests(TEAMS_PATH)


@pytest.fixture
def webhooks() -> Iterator[Webhooks]:
    with StubServer() as server:
        yield Webhooks(server)


@pytest.fixture
def api() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


def _daemon(db_url: str, daemons: list[DaemonProcess], **env: str) -> DaemonProcess:
    daemon = DaemonProcess(db_url, **env)
    daemons.append(daemon)
    return daemon.started()


def _data_failure(conn: Conn, service: str = "billing", message: str = "amount is required") -> Any:
    """A failure that never heals by itself (data: no automatic retry)."""
    return insert_failure(
        conn,
        service_name=service,
        http_status=422,
        error_code="validation_error",
        error_message=message,
    )


def _slack_text(message: dict[str, Any]) -> str:
    """Everything a Slack user reads of a message: the fallback and every block's text."""
    return json.dumps(message, ensure_ascii=False)


def _teams_card(message: dict[str, Any]) -> dict[str, Any]:
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card: dict[str, Any] = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    return card


def _alert_rows(conn: Conn) -> list[tuple[object, ...]]:
    return conn.execute("SELECT channel, kind, status FROM selfheal_alerts ORDER BY id").fetchall()


def _no_secret_anywhere(daemon: DaemonProcess, conn: Conn) -> None:
    logged = "".join(daemon.raw)
    stored = conn.execute(
        "SELECT coalesce(string_agg(alert::text || coalesce(last_error, ''), ''), '')"
        " FROM selfheal_alerts"
    ).fetchone()
    channels = conn.execute(
        "SELECT coalesce(string_agg(c::text, ''), '') FROM selfheal_alert_channels c"
    ).fetchone()
    for secret in (SLACK_SECRET, TEAMS_SIGNATURE, "/services/T0SELFHEAL", TEAMS_PATH):
        assert secret not in logged
        assert stored is not None and secret not in str(stored[0])
        assert channels is not None and secret not in str(channels[0])


def test_a_failure_is_announced_once_in_each_channel_with_what_admins_need(
    db_url: str, webhooks: Webhooks, daemons: list[DaemonProcess]
) -> None:
    daemon = _daemon(db_url, daemons, **QUICK, **webhooks.env)
    with psycopg.connect(db_url, autocommit=True) as conn:
        event_id = _data_failure(conn)
        [slack] = webhooks.slack_posts(1)
        [teams] = webhooks.teams_posts(1)
        text = _slack_text(slack)
        for expected in ("Integration Failure Detected", "billing", "data", str(event_id)):
            assert expected in text
        assert "amount is required" in text and "no automatic retry" in text
        assert slack["text"] and len(slack["blocks"]) <= 50
        card = json.dumps(_teams_card(teams), ensure_ascii=False)
        for expected in ("Integration Failure Detected", "billing", str(event_id)):
            assert expected in card
        wait_until(conn, "SELECT count(*) FROM selfheal_alerts WHERE status = 'delivered'", (), 2)
        assert _alert_rows(conn) == [
            ("slack", "failure", "delivered"),
            ("teams", "failure", "delivered"),
        ]
        [queued, queued_too] = daemon.events("alert.queued")
        assert {queued["channel"], queued_too["channel"]} == {"slack", "teams"}
        assert len(daemon.events("alert.delivered")) == 2
        _no_secret_anywhere(daemon, conn)
    assert daemon.terminate() == 0


def _groups(conn: Conn) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT failures - episode_base, reported_failures, closed_at IS NOT NULL,"
        " next_check_at IS NULL FROM selfheal_alert_groups ORDER BY opened_at"
    ).fetchall()


def test_a_burst_of_identical_failures_gives_one_alert_per_channel_and_one_digest(
    db_url: str, webhooks: Webhooks, daemons: list[DaemonProcess]
) -> None:
    # (Data failures would disable the service at the fifth: not what this test is about.)
    daemon = _daemon(
        db_url,
        daemons,
        **QUICK,
        SELFHEAL_ALERT_GROUP_INTERVAL_SECONDS="1",
        SELFHEAL_DISABLE_DATA_AFTER="100000",
        **webhooks.env,
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        _data_failure(conn)
        webhooks.slack_posts(1)
        webhooks.teams_posts(1)
        conn.execute(
            "INSERT INTO integration_events (service_name, event_type, payload, status,"
            " error_code, error_message, http_status)"
            " SELECT 'billing', 'invoice.create', '{}', 'error', 'validation_error',"
            " 'amount is required (row ' || g || ')', 422 FROM generate_series(1, 999) g"
        )
        # The digest reported all 1,000 and nothing is left to say: the group rests.
        wait_until(
            conn,
            "SELECT reported_failures = 1000 AND next_check_at IS NULL FROM selfheal_alert_groups",
            (),
            True,
        )
        wait_until(conn, "SELECT count(*) FROM selfheal_alerts WHERE status = 'queued'", (), 0)
        assert _alert_rows(conn) == [
            ("slack", "failure", "delivered"),
            ("teams", "failure", "delivered"),
            ("slack", "digest", "delivered"),
            ("teams", "digest", "delivered"),
        ]
        [_, digest] = webhooks.slack_posts(2)
        assert "and 999 more since" in _slack_text(digest)
        [_, digest_card] = webhooks.teams_posts(2)
        assert "999 more" in json.dumps(_teams_card(digest_card), ensure_ascii=False)
        assert len(webhooks.slack_requests()) == len(webhooks.teams_requests()) == 2
    assert daemon.terminate() == 0


def _network_failure(conn: Conn, api: StubServer) -> Any:
    return insert_failure(
        conn,
        service_name="stripe",
        http_status=503,
        error_code=None,
        error_message="service unavailable",
        endpoint=api.url + "/v1/charges",
    )


def test_a_group_that_heals_within_the_wait_sends_nothing(
    db_url: str, webhooks: Webhooks, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    api.route("POST", "/v1/charges", Response(200, {"ok": True}))
    daemon = _daemon(
        db_url, daemons, **{**QUICK, "SELFHEAL_ALERT_GROUP_WAIT_SECONDS": "1"}, **webhooks.env
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(3):
            _network_failure(conn, api)
        # Closed, quietly, once the wait was over: every failure had healed.
        wait_until(
            conn, "SELECT bool_and(closed_at IS NOT NULL) FROM selfheal_alert_groups", (), True
        )
        assert _groups(conn) == [(0, 0, True, True)]
        assert _alert_rows(conn) == []
    assert webhooks.server.requests() == []
    assert daemon.events("alert.queued") == []
    assert daemon.terminate() == 0


def test_recovered_closes_the_group_with_totals_and_a_regression_alerts_again(
    db_url: str, webhooks: Webhooks, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    held = HeldApi()
    api.route("POST", "/v1/charges", held)
    daemon = _daemon(db_url, daemons, **QUICK, **webhooks.env)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(3):
            _network_failure(conn, api)
        [detected] = webhooks.slack_posts(1)
        assert "Integration Failure Detected" in _slack_text(detected)
        wait_until(conn, "SELECT failures FROM selfheal_alert_groups", (), 3)
        held.release()
        [_, recovered] = webhooks.slack_posts(2)
        [_, recovered_card] = webhooks.teams_posts(2)
        text = _slack_text(recovered)
        assert "Integration Recovered" in text
        assert "3" in text and "service unavailable" in text
        assert "Integration Recovered" in json.dumps(_teams_card(recovered_card))
        wait_until(conn, "SELECT closed_at IS NOT NULL FROM selfheal_alert_groups", (), True)

        # It fails again: a regression, announced again.
        held.released.clear()
        _network_failure(conn, api)
        [*_, again] = webhooks.slack_posts(3)
        assert "Failing Again" in _slack_text(again)
        held.release()
        webhooks.slack_posts(4)  # ...and it recovers again
        kinds = [kind for channel, kind, _ in _alert_rows(conn) if channel == "slack"]
        assert kinds == ["failure", "recovered", "failure", "recovered"]
        _no_secret_anywhere(daemon, conn)
    assert daemon.terminate() == 0


def test_an_alert_is_delivered_after_the_webhook_answered_500_three_times(
    db_url: str, webhooks: Webhooks, daemons: list[DaemonProcess]
) -> None:
    webhooks.slack([Response(500, "rollup_error")] * 3 + [Response(200, b"ok")])
    daemon = _daemon(db_url, daemons, **QUICK, **webhooks.env)
    with psycopg.connect(db_url, autocommit=True) as conn:
        _data_failure(conn)
        posts = webhooks.slack_posts(4)
        assert all(post == posts[0] for post in posts)  # the same message, again
        wait_until(
            conn, "SELECT status FROM selfheal_alerts WHERE channel = 'slack'", (), "delivered"
        )
        retries = daemon.events("alert.retry")
        assert len(retries) == 3 and all("500 rollup_error" in r["error"] for r in retries)
        assert len(webhooks.teams_requests()) == 1  # Teams was not held by Slack's trouble
        _no_secret_anywhere(daemon, conn)
    assert daemon.terminate() == 0


def test_a_429_holds_the_webhook_for_its_retry_after(
    db_url: str, webhooks: Webhooks, daemons: list[DaemonProcess]
) -> None:
    webhooks.slack([Response(429, "rate_limited", {"retry-after": "1"}), Response(200, b"ok")])
    daemon = _daemon(db_url, daemons, **QUICK, **webhooks.env)
    with psycopg.connect(db_url, autocommit=True) as conn:
        _data_failure(conn)
        _data_failure(conn, service="shipping")
        first, second, third = webhooks.server.wait_for_requests(3, SLACK_PATH)
        # Nothing went to that webhook until its Retry-After had passed, then in order.
        assert second.received_at - first.received_at >= 1.0
        assert second.body == first.body and third.body != first.body
        wait_until(
            conn,
            "SELECT count(*) FROM selfheal_alerts WHERE channel = 'slack' AND status = 'delivered'",
            (),
            2,
        )
        [retry] = daemon.events("alert.retry")
        assert retry["retry_in"] == 1.0
    assert daemon.terminate() == 0


def test_a_permanent_4xx_marks_the_alert_dead_flags_the_channel_and_does_not_retry(
    db_url: str, webhooks: Webhooks, daemons: list[DaemonProcess]
) -> None:
    webhooks.slack(Response(404, "channel_not_found"))
    daemon = _daemon(db_url, daemons, **QUICK, **webhooks.env)
    with psycopg.connect(db_url, autocommit=True) as conn:
        _data_failure(conn)
        wait_until(conn, "SELECT status FROM selfheal_alerts WHERE channel = 'slack'", (), "dead")
        _data_failure(conn, service="shipping")
        webhooks.teams_posts(2)
        # The second message waits behind the broken channel: queued, never attempted.
        wait_until(
            conn,
            "SELECT status || ':' || attempts FROM selfheal_alerts"
            " WHERE channel = 'slack' ORDER BY id DESC LIMIT 1",
            (),
            "queued:0",
        )
        assert len(webhooks.slack_requests()) == 1
        [dead] = daemon.events("alert.dead")
        assert dead["channel"] == "slack" and "404 channel_not_found" in dead["reason"]
        assert daemon.events("alert.channel_broken")[0]["reason"] == dead["reason"]
        status = _status(db_url)
        [slack] = [c for c in status["alert_groups"]["channels"] if c["channel"] == "slack"]
        assert slack["broken_reason"] == "HTTP 404 channel_not_found"
        assert slack["queued"] == 1 and slack["dead"] == 1
        _no_secret_anywhere(daemon, conn)
    assert daemon.terminate() == 0


def _status(db_url: str) -> dict[str, Any]:
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "selfheal", "status", "--json"],
        env={**os.environ, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    status: dict[str, Any] = json.loads(done.stdout)
    return status


class HoldFirst:
    """Holds the first request until released (the daemon is killed meanwhile), answers
    every later one with `ok`; counts them."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.count += 1
            first = self.count == 1
        if first:
            self.arrived.set()
            self.release.wait(30)
            return Response(500, "too late")
        return Response(200, b"ok")


def test_a_daemon_killed_mid_delivery_delivers_once_after_restart(
    db_url: str, webhooks: Webhooks, daemons: list[DaemonProcess]
) -> None:
    hold = HoldFirst()
    webhooks.slack(hold)
    quick_lease = {"SELFHEAL_LEASE_SECONDS": "1", "SELFHEAL_HTTP_TIMEOUT_SECONDS": "1"}
    first = _daemon(db_url, daemons, **QUICK, **quick_lease, **webhooks.env)
    with psycopg.connect(db_url, autocommit=True) as conn:
        _data_failure(conn)
        assert hold.arrived.wait(30)
        first.kill()
        hold.release.set()
        second = _daemon(db_url, daemons, **QUICK, **quick_lease, **webhooks.env)
        wait_until(
            conn, "SELECT status FROM selfheal_alerts WHERE channel = 'slack'", (), "delivered"
        )
        assert hold.count == 2  # the one cut off by the kill, and exactly one after it
        assert len(second.events("alert.delivered")) >= 1
        row = conn.execute(
            "SELECT attempts FROM selfheal_alerts WHERE channel = 'slack'"
        ).fetchone()
        assert row == (2,)
    assert second.terminate() == 0


def test_two_daemons_deliver_each_alert_once(
    db_url: str, webhooks: Webhooks, daemons: list[DaemonProcess]
) -> None:
    one = _daemon(db_url, daemons, **QUICK, **webhooks.env)
    two = _daemon(db_url, daemons, **QUICK, **webhooks.env)
    services = [f"service-{n}" for n in range(12)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for service in services:
            _data_failure(conn, service=service)
        wait_until(conn, "SELECT count(*) FROM selfheal_alerts WHERE status = 'delivered'", (), 24)
        slack = [r.json() for r in webhooks.slack_requests()]
        teams = [r.json() for r in webhooks.teams_requests()]
        assert len(slack) == len(teams) == len(services)
        for service in services:
            assert (
                sum(
                    f"{service}\\n" in _slack_text(m)
                    or f"`{service}`" in _slack_text(m)
                    or _mentions(m, service)
                    for m in slack
                )
                == 1
            )
        delivered = len(one.events("alert.delivered")) + len(two.events("alert.delivered"))
        assert delivered == 24
        _no_secret_anywhere(one, conn)
        _no_secret_anywhere(two, conn)
    assert one.terminate() == 0 and two.terminate() == 0


def _mentions(message: dict[str, Any], service: str) -> bool:
    """Whether a message is about `service` (and not about service-10 when asked for -1)."""
    text = _slack_text(message)
    return any(text.count(f"{service}{end}") for end in ('"', " ", "*", "\\n", ")"))


def test_a_disable_alerts_with_the_reason_the_command_and_the_dashboard_link(
    db_url: str, webhooks: Webhooks, daemons: list[DaemonProcess]
) -> None:
    dashboard = "https://ops.example.com/selfheal"
    # The second data failure in a row disables (each counted before the next arrives).
    daemon = _daemon(
        db_url,
        daemons,
        **QUICK,
        SELFHEAL_DASHBOARD_URL=dashboard,
        SELFHEAL_DISABLE_DATA_AFTER="2",
        **webhooks.env,
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        _data_failure(conn)
        wait_until(conn, "SELECT bool_and(counted) FROM system_integrity_events", (), True)
        _data_failure(conn)
        wait_until(conn, "SELECT auto_recovery_enabled FROM integrations_master", (), False)
        wait_until(conn, "SELECT count(*) FROM selfheal_alerts WHERE kind = 'disabled'", (), 2)
        wait_until(conn, "SELECT count(*) FROM selfheal_alerts WHERE status = 'queued'", (), 0)
        slack = [r.json() for r in webhooks.slack_requests()]
        [disabled] = [m for m in slack if "Integration Disabled" in _slack_text(m)]
        text = _slack_text(disabled)
        assert "2 consecutive data failures" in text and "selfheal enable billing" in text
        buttons = [e for b in disabled["blocks"] if b["type"] == "actions" for e in b["elements"]]
        assert [b["url"] for b in buttons] == [dashboard]
        # The failure before warned: the next one disables.
        [warning] = [m for m in slack if "Recovery Attempt" in _slack_text(m)]
        assert "one more unhealed data failure disables billing" in _slack_text(warning)
        assert "1/2" in _slack_text(warning)
        teams = [r.json() for r in webhooks.teams_requests()]
        [card] = [_teams_card(m) for m in teams if "Integration Disabled" in json.dumps(m)]
        assert [a["url"] for a in card["actions"]] == [dashboard]
        assert "selfheal enable billing" in json.dumps(card)
    assert daemon.terminate() == 0


def test_a_token_refresh_and_a_circuit_that_opens_are_recovery_attempts(
    db_url: str, webhooks: Webhooks, api: StubServer, daemons: list[DaemonProcess]
) -> None:
    from psycopg.types.json import Jsonb

    from tests.support.http import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, OAuthTokenEndpoint

    endpoint = OAuthTokenEndpoint(refresh_token="rt-1")
    api.route("POST", "/oauth/token", endpoint)
    api.route("POST", "/api/chat.postMessage", Response(200, {"ok": True}))
    api.route("POST", "/v1/charges", Response(503, "service unavailable"))
    daemon = _daemon(db_url, daemons, **QUICK, **webhooks.env)
    with psycopg.connect(db_url, autocommit=True) as conn:
        oauth = {
            "token_url": api.url + "/oauth/token",
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
        }
        row = conn.execute(
            "INSERT INTO integrations_master (service_name, oauth_config, allowed_hosts)"
            " VALUES ('slack', %s, %s) RETURNING id",
            (Jsonb(oauth), [api.url.removeprefix("http://")]),
        ).fetchone()
        assert row is not None
        user_id = __import__("uuid").uuid4()
        conn.execute(
            "INSERT INTO user_integrations (user_id, integration_id, access_token, refresh_token)"
            " VALUES (%s, %s, 'old-token', 'rt-1')",
            (user_id, row[0]),
        )
        insert_failure(conn, user_id=user_id, endpoint=api.url + "/api/chat.postMessage")
        for _ in range(6):  # a service down: its circuit opens
            _network_failure(conn, api)
        wait_until(conn, "SELECT count(*) FROM selfheal_alerts WHERE kind = 'attempt'", (), 4)
        wait_until(conn, "SELECT count(*) FROM selfheal_alerts WHERE status = 'queued'", (), 0)
        attempts = [
            _slack_text(r.json())
            for r in webhooks.slack_requests()
            if "Recovery Attempt" in _slack_text(r.json())
        ]
        [refresh] = [a for a in attempts if "refreshed the OAuth token" in a]
        assert "1/3" in refresh and "invalid_auth" in refresh
        [circuit] = [a for a in attempts if "circuit opened" in a]
        assert "stripe" in circuit and "service unavailable" in circuit
        assert endpoint.refresh_count == 1
        _no_secret_anywhere(daemon, conn)
        logged = "".join(daemon.raw)
        assert "old-token" not in logged and endpoint.current_access_token not in logged
    assert daemon.terminate() == 0


def test_a_retired_teams_connector_url_fails_at_start_with_one_line(db_url: str) -> None:
    import os
    import subprocess
    import sys

    url = f"https://contoso.webhook.office.com/webhookb2/{TEAMS_SIGNATURE}/IncomingWebhook/x"
    done = subprocess.run(
        [sys.executable, "-m", "selfheal", "run"],
        env={**os.environ, "DATABASE_URL": db_url, "MICROSOFT_TEAMS_WEBHOOK_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "MICROSOFT_TEAMS_WEBHOOK_URL" in done.stderr and "Workflows" in done.stderr
    assert TEAMS_SIGNATURE not in done.stderr + done.stdout


def test_an_error_page_that_echoes_the_webhook_path_leaks_nothing(
    db_url: str, webhooks: Webhooks, daemons: list[DaemonProcess]
) -> None:
    webhooks.slack(Response(404, f"Cannot POST {SLACK_PATH}"))
    daemon = _daemon(db_url, daemons, **QUICK, **webhooks.env)
    with psycopg.connect(db_url, autocommit=True) as conn:
        _data_failure(conn)
        wait_until(conn, "SELECT status FROM selfheal_alerts WHERE channel = 'slack'", (), "dead")
        dead = daemon.wait_for("alert.dead")  # logged after the row is written
        assert dead["reason"] == "HTTP 404 Cannot POST [webhook]"
        assert len(daemon.events("alert.dead")) == 1
        _no_secret_anywhere(daemon, conn)
        assert SLACK_SECRET not in json.dumps(_status(db_url))
    assert daemon.terminate() == 0
