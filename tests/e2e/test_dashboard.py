"""The Self-Healing Activity page over HTTP, against a real daemon and known records: the
tiles, what needs a human, filters, keyset pages, one record's detail, escaping, and the
Re-enable and Retry-now buttons behind the token's login and the CSRF check. Then the
same page in a real browser (headless Chromium), when one is installed."""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.support.daemon import DaemonProcess
from tests.support.events import wait_until
from tests.support.http import free_port

pytestmark = pytest.mark.e2e

TOKEN = "dashboard-Token-0123456789abcdef"
HOSTILE = "<script>alert('x')</script>"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

# 60 healed Slack failures a minute apart, one healed of a hostile name, three data
# failures pending, one network failure pending until tomorrow, and Stripe disabled with
# two records: 67 records in the last day, 61 of them resolved, each in 2 s.
SEED = """
INSERT INTO integrations_master (service_name, auto_recovery_enabled, disabled_reason,
                                 disabled_at, recovery_fail_count)
VALUES ('stripe', false, '5 consecutive unknown failures', now() - interval '90 minutes', 5),
       ('slack', true, NULL, NULL, 0), (%(hostile)s, true, NULL, NULL, 0);
INSERT INTO system_integrity_events (event_id, service_name, failure_category, action_taken,
                                     status, attempts, created_at, resolved_at, failure_reason,
                                     analyzer_signals)
SELECT gen_random_uuid(), 'slack', 'network', 'retried', 'resolved', 1,
       now() - make_interval(mins => g), now() - make_interval(mins => g) + interval '2 s',
       'HTTP 503: service unavailable', '{"http_status": 503}'
FROM generate_series(1, 60) AS g;
INSERT INTO system_integrity_events (event_id, service_name, failure_category, action_taken,
                                     status, attempts, created_at, resolved_at, failure_reason,
                                     analyzer_signals)
VALUES (gen_random_uuid(), %(hostile)s, 'unknown', 'retried', 'resolved', 1,
        now() - interval '30 s', now() - interval '28 s', %(hostile_reason)s,
        jsonb_build_object('note', %(hostile)s::text));
INSERT INTO system_integrity_events (event_id, service_name, failure_category, action_taken,
                                     status, created_at, failure_reason, next_retry_at)
SELECT gen_random_uuid(), 'billing', 'data', 'alert_admin', 'pending',
       now() - make_interval(mins => 100 + g), 'HTTP 422: amount is required', NULL
FROM generate_series(1, 3) AS g;
INSERT INTO system_integrity_events (event_id, service_name, failure_category, action_taken,
                                     status, attempts, created_at, failure_reason,
                                     next_retry_at, llm_reasoning, analyzer_signals)
VALUES (gen_random_uuid(), 'github', 'network', 'scheduled_retry', 'pending', 3,
        now() - interval '5 hours', 'ECONNRESET: connection reset', now() + interval '1 day',
        'The host resets connections: a deploy in progress.',
        '{"error_code": "ECONNRESET", "matched": ["ECONNRESET"]}');
INSERT INTO system_integrity_events (event_id, service_name, failure_category, action_taken,
                                     status, attempts, created_at, failure_reason)
SELECT gen_random_uuid(), 'stripe', 'unknown', 'disabled', 'disabled', 2,
       now() - make_interval(mins => 200 + g), 'HTTP 500: internal error'
FROM generate_series(1, 2) AS g;
"""


class Page:
    """A daemon with the page on a loopback port, and a browser-like client (cookies,
    redirects followed)."""

    def __init__(self, db_url: str, daemons: list[DaemonProcess], **env: str) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.daemon = DaemonProcess(
            db_url,
            SELFHEAL_POLL_INTERVAL_SECONDS="0.5",
            SELFHEAL_HTTP_ADDR=f"127.0.0.1:{port}",
            SELFHEAL_HTTP_TOKEN=TOKEN,
            **env,
        )
        daemons.append(self.daemon)
        self.daemon.started()
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def get(self, path: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.base + path))  # noqa: S310 - loopback

    def post(
        self, path: str, fields: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.base + path,
            data=urllib.parse.urlencode(fields).encode(),
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        )
        return self._open(request)

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self._opener.open(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def login(self) -> None:
        code, body = self.post("/login", {"token": TOKEN, "next": "/"})
        assert code == 200 and "Log out" in body, body[:500]


@pytest.fixture
def page(db_url: str, daemons: list[DaemonProcess]) -> Iterator[Page]:
    page = Page(db_url, daemons)
    values = {"hostile": HOSTILE, "hostile_reason": "<img src=x onerror=alert(1)> failed"}
    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in filter(str.strip, SEED.split(";\n")):
            conn.execute(statement, values if "%(" in statement else None)
    yield page
    assert page.daemon.terminate() == 0


def _tile(body: str, label: str) -> str:
    match = re.search(rf"data-kpi='{re.escape(label)}'><div class='value'>([^<]*)</div>", body)
    assert match, f"no tile {label!r}"
    return match.group(1)


def _tile_note(body: str, label: str) -> str:
    match = re.search(
        rf"data-kpi='{re.escape(label)}'>.*?<div class='note'>([^<]*)</div>", body, re.S
    )
    assert match, f"no tile {label!r}"
    return match.group(1)


def _recent_ids(body: str) -> list[str]:
    table = body.split("<table class='recent'>", 1)[1].split("</table>", 1)[0]
    return re.findall(r"href='/records/([0-9a-f-]{36})'", table)


def _older_link(body: str) -> str | None:
    match = re.search(r"<a rel='next' href='([^']*)'", body)
    return None if match is None else match.group(1).replace("&amp;", "&")


def _csrf(body: str) -> str:
    match = re.search(r"name='csrf' value='([^']*)'", body)
    assert match, "no CSRF field: not logged in?"
    return match.group(1)


def test_the_page_shows_the_tiles_and_what_needs_a_human(page: Page) -> None:
    code, body = page.get("/")
    assert code == 200
    assert "<meta http-equiv='refresh' content='10'>" in body
    assert _tile(body, "active failures") == "4"
    assert _tile(body, "disabled integrations") == "1"
    assert _tile(body, "recovery rate, 24 h") == "91.0%"  # 61 of 67
    assert _tile(body, "mean time to recover") == "2.0 s"
    assert _tile(body, "p90 time to recover") == "2.0 s"
    assert _tile(body, "oldest unhealed failure").endswith("h ago")  # github's, 5 hours
    assert _tile(body, "open circuits") == "0"
    assert _tile(body, "alert outbox") == "0"
    assert "<svg class='chart'" in body
    # The chart's hours are labelled every three hours, up to this one (UTC).
    hours = re.findall(r"class='hour'>(\d\d):00<", body)
    now = datetime.now(UTC)
    assert len(hours) == 8 and hours[-1] in (f"{now:%H}", f"{now - timedelta(hours=1):%H}")
    assert _tile_note(body, "mean time to recover").startswith("24 h to ")
    human = body.split("<h2>Needs a human</h2>", 1)[1].split("</section>", 1)[0]
    assert "stripe" in human and "5 consecutive unknown failures" in human
    assert "Data failures pending (3)" in human and "amount is required" in human
    # Without logging in there are no buttons, and the page says how to get them.
    assert "Re-enable" not in body and "href='/login'" in body
    # Nothing is fetched from elsewhere, and no script runs.
    assert "<script" not in body and not re.search(r"(src|href)=['\"]?(https?:)?//", body)
    code, css = page.get("/static/dashboard.css")
    assert code == 200 and ".tiles" in css


# A user connection disabled (its tokens in the row), a parked failure whose event carries a
# secret, a dead alert and a broken channel.
MORE_FOR_A_HUMAN = """
WITH m AS (INSERT INTO integrations_master (service_name) VALUES ('hubspot') RETURNING id)
INSERT INTO user_integrations (user_id, integration_id, access_token, refresh_token,
                               auto_recovery_enabled, disabled_reason, disabled_at)
SELECT %(user)s, m.id, 'access-SECRET-1', 'refresh-SECRET-2', false,
       '3 consecutive auth failures', now() - interval '1 hour'
FROM m;
WITH e AS (
    INSERT INTO integration_events (service_name, payload, user_id, status, error_message,
                                    http_status, endpoint)
    VALUES ('hubspot', '{"card": "PAYLOAD-SECRET-3"}', %(user)s, 'success',
            'boom', 500, 'https://api.hubapi.com/x?token=URL-SECRET-4')
    RETURNING id
)
INSERT INTO system_integrity_events (event_id, service_name, user_id, failure_category,
                                     action_taken, status, created_at, failure_reason)
SELECT e.id, 'hubspot', %(user)s, 'unknown', 'parked', 'pending', now() - interval '2 minutes',
       'processing crashed: ValueError'
FROM e;
INSERT INTO selfheal_alert_groups (fingerprint, service_name, category, error_code)
VALUES ('v1:hubspot:unknown:boom', 'hubspot', 'unknown', 'boom');
INSERT INTO selfheal_alerts (channel, alert_group, kind, alert, status, attempts, last_error)
VALUES ('teams', 'v1:hubspot:unknown:boom', 'failure', '{}', 'dead', 1, 'HTTP 400');
INSERT INTO selfheal_alert_channels (channel, failures, broken_at, broken_reason)
VALUES ('teams', 1, now() - interval '3 minutes', 'HTTP 400: invalid_payload')
"""


def test_a_disabled_connection_a_parked_failure_and_a_broken_channel_need_a_human(
    page: Page, db_url: str
) -> None:
    user = uuid.uuid4()
    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in MORE_FOR_A_HUMAN.split(";\n"):
            conn.execute(statement, {"user": user} if "%(" in statement else None)
        row = conn.execute("SELECT id FROM system_integrity_events WHERE action_taken = 'parked'")
        [parked_id] = row.fetchone() or [None]
    page.login()
    code, body = page.get("/")
    assert code == 200
    human = body.split("<h2>Needs a human</h2>", 1)[1].split("</section>", 1)[0]
    disabled = human.split("<h3>Disabled integrations</h3>", 1)[1].split("</table>", 1)[0]
    assert "hubspot" in disabled and str(user) in disabled
    assert "3 consecutive auth failures" in disabled
    assert f"name='user_id' value='{user}'" in disabled  # its own Re-enable button
    assert "Parked failures (1)" in human and f"/records/{parked_id}" in human
    assert "Dead alerts (teams: 1)" in human
    broken = human.split("<h3>Broken alert channels</h3>", 1)[1]
    assert "teams" in broken and "invalid_payload" in broken
    # The parked record's page: its reading, never the event's payload, endpoint or the
    # connection's tokens.
    code, detail = page.get(f"/records/{parked_id}")
    assert code == 200 and "processing crashed: ValueError" in detail
    for page_text in (body, detail):
        assert "SECRET" not in page_text
    # Re-enabling the connection re-enables that connection only.
    code, after = page.post(
        "/enable", {"service": "hubspot", "user_id": str(user), "csrf": _csrf(body)}
    )
    assert code == 200 and "Recovery re-enabled" in after
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT auto_recovery_enabled FROM user_integrations WHERE user_id = %s", (user,)
        ).fetchone() == (True,)
        assert conn.execute("SELECT user_id, result FROM selfheal_operator_actions").fetchall() == [
            (user, "enabled")
        ]


def test_off_loopback_reading_the_page_needs_the_login_too(
    db_url: str, daemons: list[DaemonProcess]
) -> None:
    port = free_port()
    daemon = DaemonProcess(db_url, SELFHEAL_HTTP_ADDR=f"0.0.0.0:{port}", SELFHEAL_HTTP_TOKEN=TOKEN)
    daemons.append(daemon)
    daemon.started()
    opener = urllib.request.build_opener(_NoRedirect)
    for path in ("/", "/records/" + str(uuid.uuid4())):
        try:
            opener.open(f"http://127.0.0.1:{port}{path}", timeout=30)
        except urllib.error.HTTPError as exc:
            assert exc.code == 303 and exc.headers["Location"].startswith("/login?next=")
        else:
            raise AssertionError(f"{path} was shown without a login")
    assert daemon.terminate() == 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_the_day_figures_follow_new_records_while_the_page_is_watched(
    page: Page, db_url: str
) -> None:
    """The last day's figures are read beside the page, not for each view: a view after
    new records shows the figures it has, then the next views the new ones."""
    assert _tile(page.get("/")[1], "recovery rate, 24 h") == "91.0%"  # 61 of 67
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO system_integrity_events (event_id, service_name, failure_category,"
            " action_taken, status, created_at) SELECT gen_random_uuid(), 'billing', 'data',"
            " 'alert_admin', 'pending', now() FROM generate_series(1, 33)"
        )
    # Active failures are read by every view; the rate is the last read's until the next.
    body = page.get("/")[1]
    assert _tile(body, "active failures") == "37"
    assert _tile(body, "recovery rate, 24 h") == "91.0%"
    deadline = time.monotonic() + 60
    while (rate := _tile(page.get("/")[1], "recovery rate, 24 h")) != "61.0%":  # 61 of 100
        assert rate == "91.0%" and time.monotonic() < deadline, rate
        time.sleep(0.2)  # the pace of the polling, not a guess at when it is done


def test_filters_narrow_the_recent_activity(page: Page) -> None:
    code, body = page.get("/?service=billing")
    assert code == 200 and len(_recent_ids(body)) == 3
    code, body = page.get("/?status=disabled")
    assert code == 200 and len(_recent_ids(body)) == 2
    assert "<option value='disabled' selected>" in body
    code, body = page.get("/?category=network&status=pending")
    assert code == 200 and len(_recent_ids(body)) == 1 and "github" in body
    code, body = page.get("/?category=nonsense")
    assert code == 400 and "category: one of" in body


def test_keyset_pages_hold_every_record_once_newest_first(page: Page, db_url: str) -> None:
    code, first = page.get("/")
    assert code == 200
    page_one = _recent_ids(first)
    assert len(page_one) == 50
    older = _older_link(first)
    assert older is not None and "before=" in older and "offset" not in older
    code, second = page.get(older)
    assert code == 200
    page_two = _recent_ids(second)
    assert len(page_two) == 17 and _older_link(second) is None
    assert not set(page_one) & set(page_two)
    with psycopg.connect(db_url, autocommit=True) as conn:
        newest_of_two, oldest_of_one = conn.execute(
            "SELECT max(created_at) FILTER (WHERE id = ANY (%s::uuid[])),"
            "       min(created_at) FILTER (WHERE id = ANY (%s::uuid[]))"
            "FROM system_integrity_events",
            (page_two, page_one),
        ).fetchone() or (None, None)
        assert newest_of_two < oldest_of_one  # page 2 holds the older records
        assert conn.execute("SELECT count(*) FROM system_integrity_events").fetchone() == (
            len(page_one) + len(page_two),
        )
    # The filter carries over to the next page.
    code, body = page.get("/?service=slack")
    older = _older_link(body)
    assert older is not None and "service=slack" in older
    code, body = page.get(older)
    assert code == 200 and len(_recent_ids(body)) == 10 and "github" not in body
    code, body = page.get("/?before=yesterday,nope")
    assert code == 400


def test_a_record_page_shows_its_reading_and_an_unknown_one_is_404(page: Page, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT id FROM system_integrity_events WHERE service_name = 'github'"
        ).fetchone()
    assert row is not None
    code, body = page.get(f"/records/{row[0]}")
    assert code == 200
    assert "ECONNRESET: connection reset" in body
    assert "a deploy in progress" in body
    assert "&quot;matched&quot;" in body  # the analyzer's signals, as escaped JSON
    assert page.get(f"/records/{uuid.uuid4()}")[0] == 404
    assert page.get("/records/not-a-uuid")[0] == 404


def test_a_hostile_service_name_is_shown_as_text(page: Page, db_url: str) -> None:
    code, body = page.get("/")
    assert code == 200
    assert HOSTILE not in body and "<script" not in body
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in body
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT id FROM system_integrity_events WHERE service_name = %s", (HOSTILE,)
        ).fetchone()
    assert row is not None
    code, body = page.get(f"/records/{row[0]}")
    assert code == 200 and "<script" not in body and "<img" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body
    code, body = page.get("/?service=" + urllib.parse.quote(HOSTILE))
    assert code == 200 and "<script" not in body and len(_recent_ids(body)) == 1


def test_re_enable_needs_the_login_and_the_form_and_enables_the_service(
    page: Page, db_url: str
) -> None:
    # Neither anonymous nor a wrong token nor a forged form may act.
    assert page.post("/enable", {"service": "stripe"})[0] == 401
    code, _ = page.post("/login", {"token": "wrong", "next": "/"})
    assert code == 401
    page.login()
    code, body = page.get("/")
    assert "Re-enable" in body
    assert page.post("/enable", {"service": "stripe", "csrf": "forged"})[0] == 403
    code, _ = page.post(
        "/enable",
        {"service": "stripe", "csrf": _csrf(body)},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert code == 403
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT auto_recovery_enabled FROM integrations_master WHERE service_name = 'stripe'"
        ).fetchone() == (False,)
        code, after = page.post("/enable", {"service": "stripe", "csrf": _csrf(body)})
        assert code == 200 and "Recovery re-enabled" in after
        assert conn.execute(
            "SELECT auto_recovery_enabled, recovery_fail_count, disabled_reason "
            "FROM integrations_master WHERE service_name = 'stripe'"
        ).fetchone() == (True, 0, None)
        # Its disabled records are due again, as `selfheal enable` makes them.
        assert conn.execute(
            "SELECT count(*) FROM system_integrity_events "
            "WHERE service_name = 'stripe' AND status = 'disabled'"
        ).fetchone() == (0,)
        # The action is on record, and the page shows it.
        assert conn.execute(
            "SELECT action, via, client, service_name, user_id, result "
            "FROM selfheal_operator_actions"
        ).fetchall() == [("enable", "dashboard", "127.0.0.1", "stripe", None, "enabled")]
    actions = after.split("<h2>Operator actions</h2>", 1)[1].split("</section>", 1)[0]
    assert "enable" in actions and "stripe" in actions and "enabled" in actions
    [enabled] = page.daemon.events("dashboard.enabled")
    assert enabled["service_name"] == "stripe" and enabled["found"] is True
    assert TOKEN not in "".join(page.daemon.raw)


def test_retry_now_makes_a_pending_record_due(page: Page, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT id FROM system_integrity_events WHERE service_name = 'github'"
        ).fetchone()
        assert row is not None
        record_id = row[0]
        # A script may use the token as a bearer instead of the login and the form.
        code, body = page.post(
            f"/records/{record_id}/retry", {}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert code == 200 and "The record is due now." in body
        page.daemon.wait_for("dashboard.retry")
        # It was due tomorrow; now it is due, or already taken by the healer (which leaves it
        # pending with nothing scheduled: its event is gone).
        wait_until(
            conn,
            "SELECT next_retry_at IS NULL OR next_retry_at < now() + interval '1 hour' "
            "FROM system_integrity_events WHERE id = %s",
            (record_id,),
            True,
        )
        # A resolved record is not retried, and a record that is not there is not found.
        row = conn.execute(
            "SELECT id FROM system_integrity_events"
            " WHERE service_name = 'slack' AND status = 'resolved' LIMIT 1"
        ).fetchone()
        assert row is not None
        resolved_id, missing = row[0], uuid.uuid4()
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        code, body = page.post(f"/records/{resolved_id}/retry", {}, headers=bearer)
        assert code == 200 and "Not retried" in body
        assert page.post(f"/records/{missing}/retry", {}, headers=bearer)[0] == 404
        assert conn.execute(
            "SELECT action, via, service_name, record_id, result FROM selfheal_operator_actions"
            " ORDER BY id"
        ).fetchall() == [
            ("retry", "dashboard", "github", record_id, "due"),
            ("retry", "dashboard", "slack", resolved_id, "not_retried"),
            ("retry", "dashboard", None, missing, "not_found"),
        ]
    retry = page.daemon.events("dashboard.retry")[0]
    assert retry["recovery_id"] == str(record_id) and retry["retried"] is True


# --- a real browser ----------------------------------------------------------------------------

CHROMIUM = os.environ.get("SELFHEAL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SELFHEAL_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'pg-selfheal[test]')"
    for binary in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(binary) is None:
            return f"{binary} not found: install Debian's chromium and chromium-driver"
    return None


def test_a_person_sees_the_page_in_chromium_and_re_enables_a_service(
    page: Page, db_url: str
) -> None:
    missing = _browser_missing()
    if missing is not None:
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # Each lookup waits (up to 20 s) for its element: a click's page load is not awaited.
    driver.implicitly_wait(20)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(page.base + "/")
        tiles = {
            tile.find_element(By.CLASS_NAME, "label").text: tile.find_element(
                By.CLASS_NAME, "value"
            ).text
            for tile in driver.find_elements(By.CLASS_NAME, "tile")
        }
        assert tiles["active failures"] == "4" and tiles["recovery rate, 24 h"] == "91.0%"
        assert driver.find_element(By.CSS_SELECTOR, "svg.chart").is_displayed()
        disabled = driver.find_element(By.CSS_SELECTOR, "table.disabled").text
        assert "stripe" in disabled and "5 consecutive unknown failures" in disabled
        driver.save_screenshot(str(SCREENSHOTS / "dashboard-activity.png"))

        # The filter, as a person uses it.
        field = driver.find_element(By.NAME, "service")
        field.send_keys("billing")
        field.submit()
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.recent tbody tr")) == 3
        driver.find_element(By.CSS_SELECTOR, "table.recent tbody a").click()
        assert "amount is required" in driver.find_element(By.TAG_NAME, "main").text
        driver.save_screenshot(str(SCREENSHOTS / "dashboard-record.png"))

        driver.get(page.base + "/login")
        driver.find_element(By.NAME, "token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        driver.find_element(By.XPATH, "//button[text()='Re-enable']").click()
        assert "Recovery re-enabled" in driver.find_element(By.CLASS_NAME, "notice").text
        driver.save_screenshot(str(SCREENSHOTS / "dashboard-re-enabled.png"))
    finally:
        driver.quit()
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT auto_recovery_enabled FROM integrations_master WHERE service_name = 'stripe'"
        ).fetchone() == (True,)
