"""Recoveries per second from one daemon replaying against a fast local endpoint, with the
per-service cap respected (target: 2,000/s or more).

20,000 rate-limited failures (429, no Retry-After: short backoff, then replay) over 200
services are committed at once; the rate counts resolved records per second between the
first and the last outcome. The endpoint (its own process) reports per service the peak of
requests in flight. Usage: python -m bench.recovery_throughput [--count 20000]
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
SELECT 'svc-' || (g %% %(services)s), 'message.send', jsonb_build_object('n', g), 'error',
       'rate_limited', 'Too Many Requests', 429,
       %(endpoint)s || '/svc/' || (g %% %(services)s)
FROM generate_series(1, %(count)s) AS g
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--services", type=int, default=200)
    args = parser.parse_args()
    cap = 8
    dbs = bench_databases()
    try:
        with (
            dbs.fresh() as url,
            fast_endpoint() as endpoint,
            quiet_daemon(url, SELFHEAL_SERVICE_CONCURRENCY=str(cap)),
        ):
            with (
                psycopg.connect(url, autocommit=True) as listener,
                psycopg.connect(url, autocommit=True) as writer,
            ):
                listener.execute("LISTEN selfheal_outcomes")
                writer.execute(
                    INSERT,
                    {"services": args.services, "endpoint": endpoint, "count": args.count},
                )
                committed = time.perf_counter()
                first = last = 0.0
                done = 0
                for notify in listener.notifies(timeout=300):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    done += int(notify.payload)
                    if done >= args.count:
                        break
                resolved = writer.execute(
                    "SELECT count(*) FROM system_integrity_events WHERE status = 'resolved'"
                ).fetchone()
            with urllib.request.urlopen(endpoint + "/stats", timeout=5) as response:  # noqa: S310
                stats = json.load(response)
    finally:
        dbs.close()
    peak = max(stats["peak"].values())
    print(
        f"{done:,} recoveries ({resolved[0] if resolved else 0:,} resolved) over "
        f"{args.services} services"
    )
    print(
        f"commit -> last outcome: {last - committed:.2f} s; first -> last outcome: "
        f"{last - first:.2f} s"
    )
    print(f"recoveries per second: {done / (last - first):,.0f} (target: 2,000/s)")
    print(f"peak requests in flight to one service: {peak} (cap {cap})")


if __name__ == "__main__":
    main()
