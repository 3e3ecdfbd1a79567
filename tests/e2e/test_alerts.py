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
from tests.support.http import Request, Response, StubServer

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
    return conn.execute(
        "SELECT channel, kind, status FROM selfheal_alerts ORDER BY id"
    ).fetchall()


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
        wait_until(
            conn, "SELECT count(*) FROM selfheal_alerts WHERE status = 'delivered'", (), 2
        )
        assert _alert_rows(conn) == [
            ("slack", "failure", "delivered"),
            ("teams", "failure", "delivered"),
        ]
        [queued, queued_too] = daemon.events("alert.queued")
        assert {queued["channel"], queued_too["channel"]} == {"slack", "teams"}
        assert len(daemon.events("alert.delivered")) == 2
        _no_secret_anywhere(daemon, conn)
    assert daemon.terminate() == 0
