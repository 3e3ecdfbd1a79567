"""An outage: 10,000 network failures for one service that is down for 60 s, then back.

Reports the requests the service received while down (target: at most 50), the time from
its return to the last failure resolved (target: under 20 s at the default concurrency),
failures lost or recorded twice (0), and whether the service was disabled (it must not be).
The service is a fast local endpoint in its own process. Usage:
python -m bench.outage [--count 10000] [--down-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request

import psycopg

from bench.common import bench_databases, quiet_daemon
from bench.recovery_latency import fast_endpoint

INSERT = """
INSERT INTO integration_events (service_name, event_type, payload, status, error_code,
                                error_message, http_status, endpoint)
SELECT 'stripe', 'charge.create', jsonb_build_object('n', g), 'error', 'ECONNRESET',
       'socket hang up', NULL, %(endpoint)s
FROM generate_series(1, %(count)s) AS g
"""
PROGRESS = """
SELECT count(*) FILTER (WHERE status = 'resolved'), count(*), count(DISTINCT event_id),
       (SELECT bool_or(NOT auto_recovery_enabled) FROM integrations_master)
FROM system_integrity_events
"""


def _post(url: str) -> dict[str, object]:
    request = urllib.request.Request(url, method="POST", data=b"")  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        return dict(json.loads(response.read() or b"{}"))


def _stats(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url + "/stats", timeout=5) as response:  # noqa: S310
        return dict(json.loads(response.read()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--down-seconds", type=float, default=60.0)
    parser.add_argument("--give-up-seconds", type=float, default=180.0)
    args = parser.parse_args()
    dbs = bench_databases()
    try:
        with (
            dbs.fresh() as url,
            fast_endpoint() as endpoint,
            quiet_daemon(url),
            psycopg.connect(url, autocommit=True) as conn,
        ):
            conn.execute(INSERT, {"endpoint": endpoint + "/outage/charges", "count": args.count})
            time.sleep(args.down_seconds)  # the outage itself: the scenario, not a wait for work
            while_down = int(_stats(endpoint)["while_down"])  # type: ignore[call-overload]
            _post(endpoint + "/control/up")
            back = time.monotonic()
            deadline = back + args.give_up_seconds
            resolved = records = distinct = 0
            disabled = False
            while time.monotonic() < deadline:
                row = conn.execute(PROGRESS).fetchone()
                assert row is not None
                resolved, records, distinct, disabled = row[0], row[1], row[2], bool(row[3])
                if resolved == args.count or disabled:
                    break
                time.sleep(0.05)
            healed_in = time.monotonic() - back
            lost = args.count - records
            doubled = records - distinct
    finally:
        dbs.close()
    print(f"{args.count:,} network failures, service down for {args.down_seconds:g} s")
    print(f"requests the service received while down: {while_down} (target: at most 50)")
    if resolved == args.count:
        print(f"from its return to the last failure resolved: {healed_in:.2f} s (target: < 20 s)")
    else:
        print(f"resolved {resolved:,} of {args.count:,} within {healed_in:.1f} s of its return")
    print(f"failures lost: {lost}, recorded twice: {doubled} (target: 0)")
    print(f"service disabled: {'yes' if disabled else 'no'} (target: no)")


if __name__ == "__main__":
    main()
