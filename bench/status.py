"""`selfheal status` on a big table (the target: under 300 ms with 1,000,000 records).

Fills `system_integrity_events` with `--records` rows spread over `--days` days (2% of them
pending, 1% disabled, 50 services, every category), lets autovacuum's work be done
(VACUUM ANALYZE), then times the KPIs' queries (`app.status_report`, what `status --json`
prints) and the whole command, process start included.

Usage: python -m bench.status [--records 1000000] [--days 30] [--samples 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import anyio
import psycopg

from bench.common import bench_databases, percentile
from selfheal import app
from selfheal.db.connections import ConnectionPolicy
from selfheal.settings import load_settings

FILL = """
INSERT INTO system_integrity_events (event_id, service_name, failure_category, status,
                                     action_taken, created_at, resolved_at, next_retry_at,
                                     updated_at)
SELECT gen_random_uuid(), 'service-' || (g %% 50),
       (ARRAY['auth', 'rate_limit', 'network', 'data', 'unknown'])[1 + g %% 5],
       CASE WHEN g %% 50 = 0 THEN 'pending' WHEN g %% 100 = 1 THEN 'disabled'
            ELSE 'resolved' END,
       'bench', t, CASE WHEN g %% 50 > 1 THEN t + make_interval(secs => g %% 600) END,
       CASE WHEN g %% 50 = 0 THEN t + interval '1 hour' END, t
FROM generate_series(1, %(records)s) AS g,
     LATERAL (SELECT now() - make_interval(secs => (g * %(spread)s)::float8)) AS c(t)
"""


async def _time_queries(url: str, samples: int) -> list[float]:
    settings = load_settings(database_url=url)
    db = app.Database(url, ConnectionPolicy(pooled=False, deadline=60.0))
    timings = []
    async with db.store(max_size=1) as store:
        await app.status_report(store, settings)  # warm the connection and the cache
        for _ in range(samples):
            started = time.perf_counter()
            await app.status_report(store, settings)
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def _time_command(url: str, samples: int) -> list[float]:
    env = {**os.environ, "DATABASE_URL": url}
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "selfheal", "status", "--json"],
            env=env,
            check=True,
            capture_output=True,
        )
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def _line(what: str, timings: list[float]) -> str:
    return (
        f"{what}: median {statistics.median(timings):.1f} ms, "
        f"p90 {percentile(timings, 0.9):.1f} ms (n={len(timings)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    dbs = bench_databases()
    try:
        with dbs.fresh() as url:
            with psycopg.connect(url, autocommit=True) as conn:
                started = time.perf_counter()
                spread = args.days * 86400 / args.records
                conn.execute(FILL, {"records": args.records, "spread": spread})
                conn.execute("VACUUM ANALYZE system_integrity_events")
                filled = time.perf_counter() - started
            day = min(args.records, round(args.records / args.days))
            print(
                f"{args.records:,} records over {args.days:g} days (about {day:,} in the last "
                f"24 h), filled in {filled:.1f} s"
            )
            print(_line("status_report (the queries)", anyio.run(_time_queries, url, args.samples)))
            print(_line("selfheal status --json (the command)", _time_command(url, 5)))
    finally:
        dbs.close()


if __name__ == "__main__":
    main()
