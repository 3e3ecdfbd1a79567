"""Admin alerts, measured against a loopback Slack webhook.

Latency: a failure's commit to its alert arriving at the webhook, with the group wait at 0
(and no pacing between posts), one new group at a time. Burst: 20,000 failures over 50
groups committed in one statement: the drain rate of diagnoses with alerts off and on (the
target: on is within 10% of off), and the webhook posts the burst makes.

Usage: python -m bench.alerts [--samples 200] [--count 20000] [--groups 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from bench.common import bench_databases, quiet_daemon, summary
from tests.support.events import assert_exactly_one_record_per_failure, insert_failure
from tests.support.http import Response, StubServer

HOOK = "/services/T0BENCH/B0BENCH/benchsecret"

# Data failures of `groups` services: never replayed, so the burst measures the claimer,
# and each service's fifth disables it (a Disabled alert and a warning per group).
BURST = """
INSERT INTO integration_events (service_name, event_type, payload, status, error_code,
                                error_message, http_status)
SELECT 'service-' || (g %% %(groups)s), 'bench.burst', '{}', 'error', 'validation_error',
       'amount is required (row ' || g || ')', 422
FROM generate_series(1, %(count)s) AS g
"""


def latency(url: str, samples: int) -> list[float]:
    with StubServer() as slack:
        slack.route("POST", HOOK, Response(200, b"ok"))
        env = {
            "SLACK_WEBHOOK_URL": slack.url + HOOK,
            "SELFHEAL_ALERT_GROUP_WAIT_SECONDS": "0",
            "SELFHEAL_ALERT_SEND_INTERVAL_SECONDS": "0",
        }
        with quiet_daemon(url, **env), psycopg.connect(url, autocommit=True) as conn:
            latencies = []
            for n in range(samples):
                insert_failure(
                    conn,
                    service_name=f"latency-{n}",
                    http_status=422,
                    error_code="validation_error",
                    error_message="amount is required",
                )
                committed = time.monotonic()
                arrived = slack.wait_for_requests(n + 1, HOOK, timeout=30)[-1].received_at
                latencies.append((arrived - committed) * 1000)
            return latencies


def drain(url: str, count: int, groups: int, alerts: bool) -> tuple[float, int]:
    """Seconds from the burst's commit to its last record; the alerts it queued."""
    with StubServer() as slack:
        slack.route("POST", HOOK, Response(200, b"ok"))
        env = {"SLACK_WEBHOOK_URL": slack.url + HOOK} if alerts else {}
        with (
            quiet_daemon(url, **env),
            psycopg.connect(url, autocommit=True) as listener,
            psycopg.connect(url, autocommit=True) as writer,
        ):
            listener.execute("LISTEN selfheal_recorded")
            writer.execute(BURST, {"count": count, "groups": groups})
            committed = time.perf_counter()
            recorded = 0
            for notify in listener.notifies(timeout=300):
                recorded += int(notify.payload)
                if recorded >= count:
                    break
            seconds = time.perf_counter() - committed
            assert_exactly_one_record_per_failure(writer)
            queued = _settled_alerts(writer) if alerts else 0
    return seconds, queued


def _settled_alerts(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The messages queued once the notifier has nothing more due (the group wait over)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE next_check_at <= now() + interval '31 seconds'),"
            " (SELECT count(*) FROM selfheal_alerts) FROM selfheal_alert_groups"
        ).fetchone()
        assert row is not None
        if row[0] == 0:
            return int(str(row[1]))
        time.sleep(0.5)
    raise TimeoutError("the notifier did not settle")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dbs = bench_databases()
    try:
        with dbs.fresh() as url:
            print(f"commit to alert at the webhook: {summary(latency(url, args.samples))}")
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for alerts in (False, True):
                with dbs.fresh() as url:
                    seconds, queued = drain(url, args.count, args.groups, alerts)
                rates[alerts].append(args.count / seconds)
                what = f"alerts on, {queued} webhook posts queued" if alerts else "alerts off"
                print(f"{args.count} failures recorded in {seconds:.3f} s ({what})")
    finally:
        dbs.close()
    off, on = (statistics.median(rates[a]) for a in (False, True))
    print(
        f"median drain rate: {off:,.0f}/s alerts off, {on:,.0f}/s alerts on "
        f"({(on - off) / off:+.1%}; the target: no more than -10%)"
    )


if __name__ == "__main__":
    main()
