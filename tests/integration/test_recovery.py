"""Recovery against real loopback servers: the OAuth token endpoint and integration APIs.

Waits are not slept: the recoverer's sleep is ours, so each test sees the exact schedule.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from selfheal.core.retry import idempotency_key, jitter
from selfheal.db.store import Store
from selfheal.logs import configure_logging
from selfheal.models import Outcome
from selfheal.services.base import Wakeup
from selfheal.services.claimer import Claimer
from selfheal.services.healer import Healer, open_healer
from selfheal.settings import Settings
from tests.support.events import insert_failure
from tests.support.http import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    HoldUntilInFlight,
    OAuthTokenEndpoint,
    Response,
    StubServer,
    bearer_protected_api,
)

pytestmark = pytest.mark.anyio

Conn = psycopg.Connection[tuple[object, ...]]
RAND = 0.5  # every jittered delay is then 75% of its base
SERVICE_CAP = 3
SECRET_TOKENS = ("rt-1", "rt-2", "at-1", "at-2", "old-token", DEFAULT_CLIENT_SECRET)


@dataclass
class Harness:
    conn: Conn
    store: Store
    healer: Healer
    api: StubServer
    sleeps: list[float] = field(default_factory=list)
    woke_at: list[datetime] = field(default_factory=list)
    logs: io.StringIO = field(default_factory=io.StringIO)

    def since_failure(self, event_id: uuid.UUID) -> list[float]:
        """Seconds from the original failure to each replay, on the harness clock."""
        row = self.conn.execute(
            "SELECT created_at FROM integration_events WHERE id = %s", (event_id,)
        ).fetchone()
        assert row is not None
        return [(woke - row[0]).total_seconds() for woke in self.woke_at]

    def waited_since_failure(self, event_id: uuid.UUID) -> float:
        return self.since_failure(event_id)[0]

    def failure(self, path: str = "/api/chat.postMessage", **fields: Any) -> uuid.UUID:
        fields.setdefault("endpoint", self.api.url + path)
        fields.setdefault("error_code", None)
        fields.setdefault("error_message", None)
        fields.setdefault("payload", {"channel": "C1", "text": "hello"})
        return insert_failure(self.conn, **fields)

    async def heal(self) -> list[Outcome]:
        """Record what the trigger queued, then recover every due record once."""
        await Claimer(self.store, Settings(database_url=None), Wakeup()).drain()
        due = self.conn.execute(
            "SELECT id FROM system_integrity_events WHERE status = 'pending' "
            "AND next_retry_at <= now() ORDER BY created_at"
        ).fetchall()
        return await self.healer.heal_now([uuid.UUID(str(r[0])) for r in due])

    def record(self, event_id: uuid.UUID) -> dict[str, Any]:
        with self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            row = cur.execute(
                "SELECT * FROM system_integrity_events WHERE event_id = %s", (event_id,)
            ).fetchone()
        assert row is not None
        return row

    def register(
        self,
        service: str = "slack",
        oauth: dict[str, Any] | None = None,
        allowed_hosts: list[str] | None = None,
    ) -> uuid.UUID:
        """A service whose users' tokens may go to the API stand-in (unless told otherwise)."""
        if allowed_hosts is None:
            allowed_hosts = [self.api.url.removeprefix("http://")]
        row = self.conn.execute(
            "INSERT INTO integrations_master (service_name, oauth_config, allowed_hosts) "
            "VALUES (%s, %s, %s) RETURNING id",
            (service, Jsonb(oauth) if oauth else None, allowed_hosts),
        ).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))

    def connect_user(
        self, service_id: uuid.UUID, access_token: str = "old-token", refresh_token: str = "rt-1"
    ) -> uuid.UUID:
        user_id = uuid.uuid4()
        self.conn.execute(
            "INSERT INTO user_integrations (user_id, integration_id, access_token, refresh_token) "
            "VALUES (%s, %s, %s, %s)",
            (user_id, service_id, access_token, refresh_token),
        )
        return user_id

    def assert_no_secret_leaked(self) -> None:
        stored = json.dumps(
            self.conn.execute(
                "SELECT failure_reason, action_taken, analyzer_signals FROM system_integrity_events"
            ).fetchall(),
            default=str,
        )
        for secret in SECRET_TOKENS:
            assert secret not in stored
            assert secret not in self.logs.getvalue()


@pytest.fixture
def api() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


@pytest.fixture
async def harness(
    db_url: str, api: StubServer, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    overrides = request.node.get_closest_marker("settings")
    settings = Settings(
        database_url=None,
        log_format="json",
        service_concurrency=SERVICE_CAP,
        http_timeout_seconds=1.0,
        **(overrides.kwargs if overrides else {}),
    )
    logs = io.StringIO()
    configure_logging(settings, logs)
    with psycopg.connect(db_url, autocommit=True) as conn:
        sleeps: list[float] = []
        woke_at: list[datetime] = []

        def clock() -> datetime:
            # Real time, moved on by every wait the recoverer asked for.
            return datetime.now(UTC) + timedelta(seconds=sum(sleeps))

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            woke_at.append(clock())

        async with (
            Store.open(db_url) as store,
            open_healer(
                store,
                settings,
                Wakeup(),
                "test-daemon",
                clock=clock,
                sleep=sleep,
                rand=lambda: RAND,
            ) as healer,
        ):
            yield Harness(conn, store, healer, api, sleeps, woke_at, logs)


# --- network --------------------------------------------------------------------------------


async def test_network_failure_heals_on_the_third_attempt(harness: Harness) -> None:
    harness.api.route(
        "POST",
        "/api/chat.postMessage",
        [Response(503), Response(503), Response(200, {"ok": True})],
    )
    event_id = harness.failure(http_status=None, error_code="ECONNRESET", error_message="reset")
    [outcome] = await harness.heal()

    assert outcome.status.value == "resolved"
    # Attempts go out at failure + 0.5 s, + 1.5 s, + 3.5 s (jittered), never earlier.
    due = [jitter(0.5, RAND), jitter(0.5, RAND) + jitter(1.0, RAND)]
    due.append(due[-1] + jitter(2.0, RAND))
    sent = harness.since_failure(event_id)
    assert all(d <= s < d + 0.5 for d, s in zip(due, sent, strict=True)), (due, sent)
    requests = harness.api.requests("/api/chat.postMessage")
    assert [r.method for r in requests] == ["POST"] * 3
    assert [r.headers["x-selfheal-attempt"] for r in requests] == ["1", "2", "3"]
    assert {r.headers["idempotency-key"] for r in requests} == {idempotency_key(str(event_id))}
    assert all(r.json() == {"channel": "C1", "text": "hello"} for r in requests)
    assert all(r.headers["content-type"] == "application/json" for r in requests)
    assert all("authorization" not in r.headers for r in requests)

    record = harness.record(event_id)
    assert (record["status"], record["attempts"]) == ("resolved", 3)
    assert record["resolved_at"] is not None and record["lease_owner"] is None
    event = harness.conn.execute(
        "SELECT status, retry_count FROM integration_events WHERE id = %s", (event_id,)
    ).fetchone()
    assert event == ("success", 3)
    # Replays never write integration_events rows.
    assert harness.conn.execute("SELECT count(*) FROM integration_events").fetchone() == (1,)


# One failure alone: its circuit would open on the 5th failed replay, in the second visit.
@pytest.mark.settings(circuit_open_after=100)
async def test_network_failure_that_persists_is_deferred_with_a_growing_delay(
    harness: Harness,
) -> None:
    harness.api.route("POST", "/api/chat.postMessage", Response(503))
    event_id = harness.failure(http_status=503, error_code=None, error_message="unavailable")
    before = datetime.now(UTC)
    await harness.heal()
    first = harness.record(event_id)
    assert first["status"] == "pending"
    assert first["next_retry_at"] >= before + timedelta(seconds=jitter(60, RAND))
    assert "retry scheduled" in first["action_taken"]
    assert first["failure_reason"].startswith("replay failed (network): HTTP 503")

    harness.conn.execute("UPDATE system_integrity_events SET next_retry_at = now()")
    before = datetime.now(UTC)
    await harness.heal()
    second = harness.record(event_id)
    assert second["attempts"] == 6 and second["deferrals"] == 2
    assert second["next_retry_at"] >= before + timedelta(seconds=jitter(120, RAND))
    assert len(harness.api.requests()) == 6


async def test_a_timeout_is_a_network_failure_not_a_crash(harness: Harness) -> None:
    harness.api.route("POST", "/slow", Response(200, delay=3.0))
    event_id = harness.failure("/slow", http_status=504, error_message="gateway timeout")
    [outcome] = await harness.heal()
    assert outcome.status.value == "pending"
    assert "ETIMEDOUT" in str(harness.record(event_id)["failure_reason"])


async def test_a_200_with_ok_false_is_not_a_success(harness: Harness) -> None:
    harness.api.route("POST", "/api/chat.postMessage", Response(200, {"ok": False, "error": "x"}))
    event_id = harness.failure(http_status=502)
    await harness.heal()
    assert harness.record(event_id)["status"] == "pending"


async def test_an_event_without_endpoint_is_never_resolved(harness: Harness) -> None:
    event_id = insert_failure(harness.conn, http_status=503, endpoint=None)
    [outcome] = await harness.heal()
    assert outcome.status.value == "pending"
    assert harness.record(event_id)["action_taken"] == "cannot replay: the event has no endpoint"
    assert harness.api.requests() == []


async def test_unknown_gets_one_retry_after_a_second(harness: Harness) -> None:
    harness.api.route("POST", "/api/chat.postMessage", Response(418))
    event_id = harness.failure(http_status=None, error_code=None, error_message="¯\\_(ツ)_/¯")
    await harness.heal()
    assert len(harness.sleeps) == 1
    assert harness.waited_since_failure(event_id) >= 1.0
    record = harness.record(event_id)
    assert record["failure_category"] == "unknown"
    assert (record["status"], record["next_retry_at"]) == ("pending", None)
    assert len(harness.api.requests()) == 1


# --- data -----------------------------------------------------------------------------------


async def test_data_failures_are_never_replayed_and_disable_after_five(harness: Harness) -> None:
    ids = [
        harness.failure(
            http_status=422,
            error_code="validation_error",
            error_message="channel is required",
            payload={"channel": None, "text": "the launch plan", "token": "xoxb-111-222-abc"},
        )
        for _ in range(6)
    ]
    await harness.heal()
    statuses = [harness.record(i)["status"] for i in ids]
    assert statuses == ["pending"] * 4 + ["disabled"] * 2
    assert harness.api.requests() == []
    signals = harness.record(ids[0])["analyzer_signals"]
    assert signals["payload_shape"]["channel"] == "null"
    assert "the launch plan" not in json.dumps(signals)
    master = harness.conn.execute(
        "SELECT auto_recovery_enabled, disabled_reason, disabled_at IS NOT NULL "
        "FROM integrations_master WHERE service_name = 'slack'"
    ).fetchone()
    assert master == (False, "5 consecutive data failures", True)


async def test_a_disabled_service_gets_no_request_until_enabled(harness: Harness) -> None:
    harness.api.route("POST", "/api/chat.postMessage", Response(200, {"ok": True}))
    harness.conn.execute(
        "INSERT INTO integrations_master (service_name, auto_recovery_enabled, "
        "recovery_fail_count) VALUES ('slack', false, 7)"
    )
    first = harness.failure(http_status=503)
    await harness.heal()
    assert harness.record(first)["status"] == "disabled"
    assert harness.api.requests() == []

    assert await harness.store.enable("slack", None, via="cli") == 1
    second = harness.failure(http_status=503)
    await harness.heal()
    assert harness.record(second)["status"] == "resolved"
    row = harness.conn.execute(
        "SELECT auto_recovery_enabled, recovery_fail_count, last_recovery_at IS NOT NULL "
        "FROM integrations_master"
    ).fetchone()
    assert row == (True, 0, True)


async def test_a_burst_for_a_dead_service_opens_its_circuit_instead_of_fanning_out(
    harness: Harness,
) -> None:
    harness.api.route("POST", "/api/chat.postMessage", Response(503))
    ids = [harness.failure(http_status=503) for _ in range(20)]
    await harness.heal()
    records = [harness.record(i) for i in ids]
    # Five failed replays open the circuit; the replays already in flight (at most the
    # service's cap) finish, and no recovery sends another. Nobody is disabled for it.
    assert len(harness.api.requests()) <= 5 + SERVICE_CAP
    assert {(r["status"], r["held_by_circuit"]) for r in records} == {("pending", True)}
    assert all("circuit" in r["action_taken"] for r in records)
    row = harness.conn.execute(
        "SELECT auto_recovery_enabled, circuit_opened_at IS NOT NULL, circuit_next_probe_at "
        "FROM integrations_master"
    ).fetchone()
    assert row is not None and row[:2] == (True, True) and row[2] is not None
    assert '"event":"circuit.opened"' in harness.logs.getvalue()


async def test_per_service_concurrency_is_capped(harness: Harness) -> None:
    # Each path holds its requests until the cap is in flight at once: more would show in
    # the peak, fewer would never open the gate.
    gates = {path: HoldUntilInFlight(SERVICE_CAP) for path in ("/slack", "/teams")}
    for path, gate in gates.items():
        harness.api.route("POST", path, gate)
    for _ in range(8):
        harness.failure("/slack", http_status=503)
        harness.failure("/teams", http_status=503, service_name="teams")
    outcomes = await harness.heal()
    assert [o.status.value for o in outcomes] == ["resolved"] * 16
    assert {path: gate.peak for path, gate in gates.items()} == {
        "/slack": SERVICE_CAP,
        "/teams": SERVICE_CAP,
    }
    assert harness.api.errors == []


# --- rate limits ----------------------------------------------------------------------------


def _http_date(seconds: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "least_wait"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"x-ratelimit-reset": "4"}, 4.0),  # seconds remaining
        ({"ratelimit": "limit=10, remaining=0, reset=2"}, 2.0),
        ({"ratelimit": '"default";r=0;t=5'}, 5.0),
        ({"retry-after": "-30"}, 0.0),  # negative clamps to 0
        ({"retry-after": "soon"}, 0.0),  # malformed: ignored
    ],
)
async def test_short_rate_limits_wait_at_least_as_long_then_back_off(
    harness: Harness, headers: dict[str, str], least_wait: float
) -> None:
    harness.api.route("POST", "/api/chat.postMessage", Response(200, {"ok": True}))
    event_id = harness.failure(http_status=429, error_code="ratelimited", response_headers=headers)
    await harness.heal()
    assert harness.record(event_id)["status"] == "resolved"
    assert harness.sleeps[0] <= least_wait + jitter(0.5, RAND)
    # Never before the server allows, counted from the failure it answered.
    assert harness.waited_since_failure(event_id) >= least_wait + jitter(0.5, RAND)


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "120"},
        {"retry-after": "__DATE__"},
        {"x-ratelimit-reset": "__EPOCH__", "x-ratelimit-remaining": "0"},
        {"ratelimit": '"default";r=0;t=120'},
    ],
)
async def test_long_rate_limits_schedule_the_retry_and_hold_the_service(
    harness: Harness, headers: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    headers = {
        k: v.replace("__DATE__", _http_date(120)).replace(
            "__EPOCH__", str(int(now.timestamp()) + 120)
        )
        for k, v in headers.items()
    }
    limited = harness.failure(http_status=429, response_headers=headers)
    await harness.heal()
    record = harness.record(limited)
    assert record["status"] == "pending"
    assert now + timedelta(seconds=115) <= record["next_retry_at"] <= now + timedelta(seconds=125)
    assert harness.api.requests() == []
    window = harness.conn.execute("SELECT rate_limited_until FROM integrations_master").fetchone()
    assert window is not None and window[0] == record["next_retry_at"]
    # Another failure of the same service waits for the window too.
    other = harness.failure(http_status=503)
    assert await harness.heal() == []
    assert harness.record(other)["status"] == "pending"
    assert harness.api.requests() == []


async def test_huge_retry_after_is_capped(harness: Harness) -> None:
    event_id = harness.failure(http_status=429, response_headers={"retry-after": "99999999"})
    await harness.heal()
    next_retry_at = harness.record(event_id)["next_retry_at"]
    assert next_retry_at <= datetime.now(UTC) + timedelta(seconds=3600)


async def test_rate_limits_never_disable(harness: Harness) -> None:
    harness.api.route("POST", "/api/chat.postMessage", Response(429))
    ids = [harness.failure(http_status=429) for _ in range(12)]
    await harness.heal()
    assert {harness.record(i)["status"] for i in ids} == {"pending"}


# --- auth -----------------------------------------------------------------------------------


@pytest.fixture
def oauth(api: StubServer) -> OAuthTokenEndpoint:
    endpoint = OAuthTokenEndpoint(refresh_token="rt-1")
    api.route("POST", "/oauth/token", endpoint)
    api.route(
        "POST", "/api/chat.postMessage", bearer_protected_api(lambda: endpoint.issued_access_tokens)
    )
    return endpoint


def _oauth_config(api: StubServer, **extra: Any) -> dict[str, Any]:
    return {
        "token_url": api.url + "/oauth/token",
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "scopes": ["chat:write"],
        **extra,
    }


async def test_auth_refreshes_rotates_and_replays_with_the_new_token(
    harness: Harness, oauth: OAuthTokenEndpoint
) -> None:
    service_id = harness.register(oauth=_oauth_config(harness.api))
    user_id = harness.connect_user(service_id)
    event_id = harness.failure(user_id=user_id, http_status=401, error_code="invalid_auth")
    [outcome] = await harness.heal()
    assert outcome.status.value == "resolved"
    assert harness.record(event_id)["action_taken"].startswith("refreshed the OAuth token")

    [grant] = harness.api.requests("/oauth/token")
    assert grant.form() == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-1",
        "scope": "chat:write",
    }
    assert grant.headers["authorization"].startswith("Basic ")
    [replayed] = harness.api.requests("/api/chat.postMessage")
    assert replayed.headers["authorization"] == "Bearer at-1"
    row = harness.conn.execute(
        "SELECT access_token, refresh_token, token_expires_at > now() + interval '59 minutes', "
        "consecutive_failures, last_error_at FROM user_integrations"
    ).fetchone()
    assert row == ("at-1", "rt-2", True, 0, None)
    harness.assert_no_secret_leaked()


async def test_form_client_authentication_when_configured(
    harness: Harness, oauth: OAuthTokenEndpoint
) -> None:
    service_id = harness.register(oauth=_oauth_config(harness.api, client_auth="form"))
    user_id = harness.connect_user(service_id)
    harness.failure(user_id=user_id, http_status=401)
    await harness.heal()
    [grant] = harness.api.requests("/oauth/token")
    assert "authorization" not in grant.headers
    assert grant.form()["client_id"] == DEFAULT_CLIENT_ID
    assert grant.form()["client_secret"] == DEFAULT_CLIENT_SECRET


async def test_concurrent_auth_failures_share_one_refresh(
    harness: Harness, oauth: OAuthTokenEndpoint
) -> None:
    service_id = harness.register(oauth=_oauth_config(harness.api))
    user_id = harness.connect_user(service_id)
    ids = [harness.failure(user_id=user_id, http_status=401) for _ in range(6)]
    outcomes = await harness.heal()
    assert [o.status.value for o in outcomes] == ["resolved"] * 6
    assert oauth.refresh_count == 1
    assert {harness.record(i)["status"] for i in ids} == {"resolved"}


async def test_invalid_grant_means_reauthorization_and_no_more_refreshes(
    harness: Harness, oauth: OAuthTokenEndpoint
) -> None:
    oauth.valid_refresh_token = "some-other-token"
    service_id = harness.register(oauth=_oauth_config(harness.api))
    user_id = harness.connect_user(service_id)
    first = harness.failure(user_id=user_id, http_status=401)
    await harness.heal()
    record = harness.record(first)
    assert record["status"] == "pending"
    assert "re-authorization needed" in record["action_taken"]
    assert harness.api.requests("/api/chat.postMessage") == []
    assert oauth.request_count == 1

    # The failure opened this user connection's circuit: its next failures wait for a
    # probe (no refresh, no replay); they count through the probes, not one by one.
    later = [harness.failure(user_id=user_id, http_status=401) for _ in range(2)]
    await harness.heal()
    assert oauth.request_count == 1  # the same dead refresh token is not tried again
    assert harness.api.requests("/api/chat.postMessage") == []
    assert {harness.record(i)["held_by_circuit"] for i in [first, *later]} == {True}
    row = harness.conn.execute(
        "SELECT auto_recovery_enabled, consecutive_failures, reauth_required_at IS NOT NULL, "
        "last_error_at IS NOT NULL, circuit_opened_at IS NOT NULL FROM user_integrations"
    ).fetchone()
    assert row == (True, 1, True, True, True)
    # Other users of the service are unaffected.
    master = harness.conn.execute("SELECT auto_recovery_enabled FROM integrations_master")
    assert master.fetchone() == (True,)
    harness.assert_no_secret_leaked()


@pytest.mark.parametrize(
    "down",
    [Response(500, b"oops"), Response(200, b"<html>not json</html>"), Response(200, delay=3.0)],
    ids=["500", "garbage", "slow"],
)
async def test_token_endpoint_down_leaves_it_pending_for_later(
    harness: Harness, oauth: OAuthTokenEndpoint, down: Response
) -> None:
    oauth.fail_with = down
    service_id = harness.register(oauth=_oauth_config(harness.api))
    user_id = harness.connect_user(service_id)
    event_id = harness.failure(user_id=user_id, http_status=401)
    await harness.heal()
    record = harness.record(event_id)
    assert record["status"] == "pending"
    assert record["next_retry_at"] > datetime.now(UTC)
    assert "token refresh failed" in record["action_taken"]
    assert '"event":"recovery.refresh_failed"' in harness.logs.getvalue()
    row = harness.conn.execute("SELECT access_token, refresh_token FROM user_integrations")
    assert row.fetchone() == ("old-token", "rt-1")


async def test_auth_without_connection_or_config_is_pending(harness: Harness) -> None:
    event_id = harness.failure(http_status=401)
    await harness.heal()
    record = harness.record(event_id)
    assert (record["status"], record["action_taken"]) == (
        "pending",
        "no user connection to refresh",
    )
    assert harness.api.requests() == []


# --- circuits, thresholds on unhealed failures, tokens only where they belong ---------------


async def test_user_a_revoked_token_never_holds_back_user_b(
    harness: Harness, oauth: OAuthTokenEndpoint
) -> None:
    service_id = harness.register(oauth=_oauth_config(harness.api))
    user_a = harness.connect_user(service_id, refresh_token="rt-revoked")
    user_b = harness.connect_user(service_id)  # rt-1, the one the token endpoint honours
    a_first = harness.failure(user_id=user_a, http_status=401)
    b_first = harness.failure(user_id=user_b, http_status=401)
    await harness.heal()
    assert harness.record(a_first)["held_by_circuit"] is True  # A's circuit opened
    assert harness.record(b_first)["status"] == "resolved"
    a_second = harness.failure(user_id=user_a, http_status=401)
    b_second = harness.failure(user_id=user_b, http_status=401)
    refreshes = oauth.request_count
    await harness.heal()
    assert harness.record(a_second)["held_by_circuit"] is True
    assert "waiting for this user connection" in harness.record(a_second)["action_taken"]
    assert harness.record(b_second)["status"] == "resolved"
    assert oauth.request_count == refreshes + 1  # B's own refresh; A waits for a probe
    circuits = harness.conn.execute(
        "SELECT user_id, circuit_opened_at IS NOT NULL FROM user_integrations ORDER BY user_id"
    ).fetchall()
    assert dict(circuits) == {user_a: True, user_b: False}


async def test_a_success_row_resets_consecutive_failures(harness: Harness) -> None:
    harness.register()
    for _ in range(4):
        harness.failure(http_status=422, error_code="validation_error")
    await harness.heal()
    # The integration's own next call succeeded: the run of data failures is broken.
    harness.conn.execute(
        "INSERT INTO integration_events (service_name, event_type, status) "
        "VALUES ('slack', 'message.send', 'success')"
    )
    fifth = harness.failure(http_status=422, error_code="validation_error")
    await harness.heal()
    assert harness.record(fifth)["status"] == "pending"
    row = harness.conn.execute(
        "SELECT auto_recovery_enabled, recovery_fail_count FROM integrations_master"
    ).fetchone()
    assert row == (True, 1)


async def test_without_a_success_the_fifth_data_failure_disables(harness: Harness) -> None:
    harness.register()
    ids = [harness.failure(http_status=422, error_code="validation_error") for _ in range(5)]
    await harness.heal()
    assert [harness.record(i)["status"] for i in ids] == ["pending"] * 4 + ["disabled"]
    row = harness.conn.execute(
        "SELECT auto_recovery_enabled, disabled_reason FROM integrations_master"
    ).fetchone()
    assert row == (False, "5 consecutive data failures")


async def test_a_token_never_reaches_a_host_outside_the_list(harness: Harness) -> None:
    service_id = harness.register()  # allowed_hosts: the API stand-in only
    user_id = harness.connect_user(service_id, access_token="at-secret-token")
    with StubServer() as elsewhere:
        elsewhere.route("POST", "/collect", Response(200, {"ok": True}))
        event_id = harness.failure(
            endpoint=elsewhere.url + "/collect", user_id=user_id, http_status=503
        )
        await harness.heal()
        assert elsewhere.requests() == []  # no request at all, so no Authorization either
        host = elsewhere.url.removeprefix("http://")
    record = harness.record(event_id)
    assert record["status"] == "pending"
    assert f"{host} is not one of them" in record["action_taken"]
    assert f"array_append(allowed_hosts, '{host}')" in record["action_taken"]
    assert "at-secret-token" not in str(record)


async def test_a_disable_by_another_daemon_stops_a_recovery_before_its_next_attempt(
    harness: Harness,
) -> None:
    harness.api.route("POST", "/api/chat.postMessage", Response(503))
    harness.register()
    event_id = harness.failure(http_status=None, error_code="ECONNRESET")
    original_sleep = harness.healer._executor._sleep  # the harness's virtual sleep

    async def sleep_while_another_daemon_disables(seconds: float) -> None:
        await original_sleep(seconds)
        if len(harness.api.requests()) == 1:  # after the first replay, before the second
            harness.conn.execute("UPDATE integrations_master SET auto_recovery_enabled = false")
            await harness.healer.refresh_targets()

    harness.healer._executor._sleep = sleep_while_another_daemon_disables
    [outcome] = await harness.heal()
    assert len(harness.api.requests()) == 1
    assert outcome.status.value == "disabled"
    assert harness.record(event_id)["action_taken"] == (
        "recovery disabled for slack while it ran; no further request"
    )


async def test_a_row_pointing_at_the_metadata_address_sends_nothing_and_opens_no_circuit(
    harness: Harness,
) -> None:
    harness.register()
    ids = [
        harness.failure(endpoint="http://169.254.169.254/latest/meta-data/", http_status=503)
        for _ in range(6)
    ]
    await harness.heal()
    for event_id in ids:
        record = harness.record(event_id)
        assert record["status"] == "pending" and record["attempts"] == 0
        assert record["action_taken"].startswith("not sent: ")
        assert "metadata" in record["action_taken"]
    row = harness.conn.execute(
        "SELECT circuit_opened_at, recovery_fail_count FROM integrations_master"
    ).fetchone()
    assert row == (None, 0)


async def test_a_disabled_user_connection_gets_no_request_with_its_token(
    harness: Harness,
) -> None:
    harness.api.route("POST", "/api/chat.postMessage", Response(200, {"ok": True}))
    service_id = harness.register()
    user_id = harness.connect_user(service_id, access_token="at-disabled-user")
    harness.conn.execute("UPDATE user_integrations SET auto_recovery_enabled = false")
    event_id = harness.failure(user_id=user_id, http_status=503)
    await harness.heal()
    assert harness.api.requests() == []
    assert harness.record(event_id)["status"] == "disabled"


async def test_a_circuit_another_daemon_closed_lets_this_daemons_failures_go(
    harness: Harness,
) -> None:
    harness.api.route("POST", "/api/chat.postMessage", Response(503))
    harness.register()
    ids = [harness.failure(http_status=503) for _ in range(10)]
    await harness.heal()  # this daemon opens the circuit; the failures wait
    # Another daemon's probe succeeded: it closed the circuit and released the failures.
    harness.conn.execute(
        "UPDATE integrations_master SET circuit_opened_at = NULL, circuit_next_probe_at = NULL"
    )
    harness.conn.execute(
        "UPDATE system_integrity_events SET held_by_circuit = false, next_retry_at = now()"
    )
    harness.api.route("POST", "/api/chat.postMessage", Response(200, {"ok": True}))
    await harness.heal()
    assert {harness.record(i)["status"] for i in ids} == {"resolved"}


async def test_failures_held_by_a_circuit_that_is_gone_are_released(harness: Harness) -> None:
    harness.api.route("POST", "/api/chat.postMessage", Response(200, {"ok": True}))
    harness.register()
    event_id = harness.failure(http_status=503)
    await harness.store.claim(10, 60)  # recorded below by hand, as a stranded waiter
    harness.conn.execute(
        "INSERT INTO system_integrity_events (event_id, service_name, failure_category, "
        "status, held_by_circuit, next_retry_at) "
        "VALUES (%s, 'slack', 'network', 'pending', true, now() + interval '1 day')",
        (event_id,),
    )
    await harness.healer.heal_now([])  # tidies: the circuit is closed, the failure is due
    record = harness.record(event_id)
    assert record["held_by_circuit"] is False and record["next_retry_at"] <= datetime.now(UTC)
