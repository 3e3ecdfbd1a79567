"""Peak memory of the daemon while it drains a backlog of 1,000,000 failures (target: < 150 MB).

The backlog is committed before the daemon starts, as after an outage. Peak RSS is the
kernel's high-water mark (VmHWM) of the daemon process. Usage:
python -m bench.backlog_memory [--count 1000000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import psycopg

from bench.common import bench_databases, quiet_daemon
from tests.support.events import assert_exactly_one_record_per_failure, insert_burst


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args()
    dbs = bench_databases()
    try:
        with dbs.fresh() as url:
            with psycopg.connect(url, autocommit=True) as conn:
                started = time.perf_counter()
                for _ in range(args.count // 100_000):
                    insert_burst(conn, 100_000)
                insert_burst(conn, args.count % 100_000)
                print(f"backlog of {args.count:,} written in {time.perf_counter() - started:.1f} s")
            with psycopg.connect(url, autocommit=True) as listener:
                listener.execute("LISTEN selfheal_recorded")
                recorded = 0
                with quiet_daemon(url) as daemon:
                    started = time.perf_counter()  # from the daemon's start-up on
                    for notify in listener.notifies(timeout=1800):
                        recorded += int(notify.payload)
                        if recorded >= args.count:
                            break
                    elapsed = time.perf_counter() - started
                    peak = peak_rss_mb(daemon.pid)
            with psycopg.connect(url) as conn:
                assert_exactly_one_record_per_failure(conn)
    finally:
        dbs.close()
    print(f"drained {recorded:,} in {elapsed:.1f} s ({recorded / elapsed:,.0f}/s)")
    print(f"daemon peak RSS: {peak:.1f} MB (target: < 150 MB)")


if __name__ == "__main__":
    main()
