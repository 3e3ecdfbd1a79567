"""The Self-Healing Activity page on a big table (the target: under 200 ms per page with
1,000,000 records).

Fills `system_integrity_events` as `bench.status` does (`--records` rows over `--days` days:
by default a million in one day, the worst case for the last day's figures;
2% pending, 1% disabled, 50 services, every category; the pending ones due tomorrow, so the
daemon leaves them alone), starts `selfheal run` with the page on a loopback port, and times
each kind of page over HTTP, as a browser asks for it: the first page, a service, a category
and status, the next page by its cursor, and one record's detail, each view half a second
after the last (the last day's figures are read beside the page every 10 s, so some views
meet that read). The very first view, which waits for those figures, is timed apart.

Usage: python -m bench.dashboard [--records 1000000] [--days 1] [--samples 30] [--every 0.5]
"""

from __future__ import annotations

import argparse
import html
import re
import statistics
import time

import httpx
import psycopg

from bench.common import bench_databases, percentile, quiet_daemon
from bench.status import FILL
from tests.support.http import free_port


def _fill(url: str, records: int, days: float) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL, {"records": records, "spread": days * 86400 / records})
        conn.execute(
            "UPDATE system_integrity_events SET next_retry_at = now() + interval '1 day'"
            " WHERE status = 'pending'"
        )
        conn.execute(
            "INSERT INTO integrations_master (service_name, auto_recovery_enabled,"
            " disabled_reason, disabled_at)"
            " SELECT 'service-' || g, false, '5 consecutive unknown failures', now()"
            " FROM generate_series(1, 3) AS g"
        )
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def _time(client: httpx.Client, path: str, samples: int, every: float) -> list[float]:
    """Views `every` seconds apart, as a person (or the page's own refresh) makes them, so
    that some meet the day's figures being read again beside them."""
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
        time.sleep(max(0.0, every - (time.perf_counter() - started)))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--every", type=float, default=0.5)
    args = parser.parse_args()
    dbs = bench_databases()
    try:
        with dbs.fresh() as url:
            filled = _fill(url, args.records, args.days)
            day = min(args.records, round(args.records / args.days))
            print(
                f"{args.records:,} records over {args.days:g} days (about {day:,} in the last "
                f"24 h), filled in {filled:.1f} s"
            )
            port = free_port()
            with (
                quiet_daemon(url, SELFHEAL_HTTP_ADDR=f"127.0.0.1:{port}"),
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
            ):
                started = time.perf_counter()
                first = client.get("/").text
                print(
                    "the first view (it waits for the day's figures): "
                    f"{(time.perf_counter() - started) * 1000:.1f} ms"
                )
                older = re.search(r"href='(/\?[^']*before=[^']*)'", first)
                record = re.search(r"href='(/records/[0-9a-f-]{36})'", first)
                assert older and record, "the page has no Older link or no record link"
                pages = {
                    "/ (first page)": "/",
                    "/?service=service-7": "/?service=service-7",
                    "/?category=data&status=pending": "/?category=data&status=pending",
                    "the next page (keyset cursor)": html.unescape(older.group(1)),
                    "/records/{id}": record.group(1),
                }
                for what, path in pages.items():
                    timings = _time(client, path, args.samples, args.every)
                    print(
                        f"{what}: median {statistics.median(timings):.1f} ms, "
                        f"p90 {percentile(timings, 0.9):.1f} ms, max {max(timings):.1f} ms "
                        f"(n={len(timings)})"
                    )
    finally:
        dbs.close()


if __name__ == "__main__":
    main()
