"""`selfheal demo` as a newcomer runs it: from any directory, without DATABASE_URL (the
embedded Postgres) or with one; every kind of failure healed or parked as it should be, the
admins' messages printed, the closing table, and nothing left behind."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from selfheal.db import embedded
from tests.support.postgres import remove, scratch_dir

pytestmark = pytest.mark.e2e

TIMEOUT_SECONDS = 90


def _demo(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    for name in ("SELFHEAL_TEST_DATABASE_URL", "SELFHEAL_ALLOW_LOOPBACK", "NO_PROXY"):
        full_env.pop(name, None)  # the demo needs none of what the tests set up for daemons
    if "DATABASE_URL" not in env:
        full_env.pop("DATABASE_URL", None)
    # The user's own webhook is never posted to: the demo's stand-ins are.
    full_env["SLACK_WEBHOOK_URL"] = "http://127.0.0.1:9/users-own-slack"
    return subprocess.run(
        [sys.executable, "-m", "selfheal", "demo"],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )


def _lines(out: str, who: str, pattern: str) -> list[str]:
    """The event lines about `who` whose text matches `pattern`."""
    return re.findall(rf"^ *\d+\.\d\ds  {re.escape(who)} +{pattern}.*$", out, re.MULTILINE)


def _outcome(out: str, service: str) -> list[tuple[str, str]]:
    """(kind, status) of each row of the closing per-failure table for `service`."""
    return re.findall(
        rf"^  {re.escape(service)} +(\w+) +(resolved|pending|disabled) +\d+  ", out, re.MULTILINE
    )


def _assert_healed_as_a_newcomer_should_see(out: str) -> None:
    # auth: the expired token is refreshed at the token endpoint, and the replay succeeds.
    assert _lines(out, "crm", "POST /crm/v1/contacts -> 401 invalid_token")
    assert _lines(out, "crm", "OAuth token refreshed, refresh token rotated")
    assert _lines(out, "crm", "RESOLVED: refreshed the OAuth token and replayed")
    assert _outcome(out, "crm") == [("auth", "resolved")]
    # rate_limit: replayed once the Retry-After window passed.
    assert _lines(out, "mailer", r"POST /mailer/v3/send -> 429 rate_limited, Retry-After: 1")
    assert _lines(out, "mailer", "RESOLVED: replayed after the rate-limit window")
    assert _outcome(out, "mailer") == [("rate_limit", "resolved")]
    # network: a 503 that clears on the third try: one failed replay, then success.
    assert _lines(out, "billing", "replay 1 failed: HTTP 503")
    assert _lines(out, "billing", r"RESOLVED: replayed after backoff \(2 attempts\)")
    assert _outcome(out, "billing") == [("network", "resolved")]
    # data: never replayed, pending for an admin, who is told in both channels.
    assert _lines(out, "warehouse", "PENDING: no automatic retry; admin review")
    assert not _lines(out, "warehouse", "replay")
    assert _outcome(out, "warehouse") == [("data", "pending")]
    # unknown: one retry, which works.
    assert _outcome(out, "analytics") == [("unknown", "resolved")]
    # The outage: the circuit opens, probes while payments is down, closes when it is back.
    opened = _lines(out, "payments", "CIRCUIT OPEN")
    probes = _lines(out, "payments", r"probe: still down \(HTTP 503\)")
    closed = _lines(out, "payments", r"CIRCUIT CLOSED: \d+ waiting failures released")
    assert opened and probes and closed
    assert out.index(opened[0]) < out.index(probes[0]) < out.index(closed[0])
    assert _outcome(out, "payments") == [("network", "resolved")] * 4
    assert "8 of 9 failures healed with nobody's help; 1 (data) waits for an admin." in out
    # What admins read, as they read it (no JSON), in Slack and in Teams.
    for channel in ("slack", "teams"):
        assert _lines(out, channel, r">> Integration Failure Detected: warehouse \(data\)")
        assert _lines(out, channel, r">> Integration Failure Detected: payments \(network\)")
        assert _lines(out, channel, r">> Recovery Attempt: payments")
        assert _lines(out, channel, r">> Integration Recovered: payments")
    assert "Error: HTTP 400 validation_error: sku is required" in out
    assert '"blocks"' not in out and '"attachments"' not in out
    # The daemon stops as systemd stops it, then the KPIs of `selfheal status`.
    assert _lines(out, "daemon", "stopping on SIGTERM")
    assert _lines(out, "daemon", "stopped")
    kpis = out.split("`selfheal status` at the end:\n", 1)[1]
    assert "slack" in kpis and "teams" in kpis and "warehouse" in kpis
    done = re.search(r"^Done in (\d+\.\d) s\.$", out, re.MULTILINE)
    assert done is not None and float(done.group(1)) < 30


def test_the_demo_heals_every_kind_on_a_fresh_embedded_postgres(tmp_path: Path) -> None:
    # Found, not imported: importing pgserver here would warn (XDG_RUNTIME_DIR), an error.
    if importlib.util.find_spec("pgserver") is None:
        pytest.skip(f"the embedded Postgres (pgserver) is not installed: {embedded.INSTALL_HINT}")
    # A data directory of its own, never the developer's; outside pytest's private temp
    # root, which the server's own user cannot enter.
    data_root = scratch_dir()
    try:
        data_dir = data_root / "pgdata"
        result = _demo(tmp_path, SELFHEAL_DATA_DIR=str(data_dir))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "on the embedded Postgres (dropped at the end)" in result.stdout
        _assert_healed_as_a_newcomer_should_see(result.stdout)
        # Nothing left behind: no file where it ran, the server stopped, and only the three
        # databases initdb makes (template0, template1, postgres: one folder each in base/).
        assert list(tmp_path.iterdir()) == []
        assert not (data_dir / "postmaster.pid").exists()
        assert len(list((data_dir / "base").iterdir())) == 3
    finally:
        remove(data_root)


def test_the_demo_with_database_url_works_in_a_scratch_database_and_drops_it(
    db_url: str, tmp_path: Path
) -> None:
    result = _demo(tmp_path, DATABASE_URL=db_url)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "on DATABASE_URL's server (dropped at the end)" in result.stdout
    _assert_healed_as_a_newcomer_should_see(result.stdout)
    with psycopg.connect(db_url, autocommit=True) as conn:
        # The database it was given is untouched...
        for table in ("integration_events", "system_integrity_events", "integrations_master"):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row == (0,), table
        # ...and the scratch database is gone.
        row = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'selfheal\\_demo\\_%'"
        ).fetchone()
        assert row == (0,)
