"""Drain rate of a burst of failures committed in one statement (target: 10,000/s or more).

Usage: python -m bench.burst [--count 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from bench.common import DaemonProcess, bench_databases
from tests.support.events import assert_exactly_one_record_per_failure, insert_burst


def drain_seconds(url: str, count: int) -> float:
    """Commit `count` failures in one statement; time until the daemon has recorded them all."""
    with (
        psycopg.connect(url, autocommit=True) as listener,
        psycopg.connect(url, autocommit=True) as writer,
    ):
        listener.execute("LISTEN selfheal_recorded")
        insert_burst(writer, count)
        committed = time.perf_counter()
        recorded = 0
        for notify in listener.notifies(timeout=300):
            recorded += int(notify.payload)
            if recorded >= count:
                return time.perf_counter() - committed
    raise TimeoutError(f"only {recorded} of {count} recorded")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dbs = bench_databases()
    rates = []
    try:
        for _ in range(args.rounds):
            with dbs.fresh() as url:
                daemon = DaemonProcess(url)
                try:
                    daemon.started()
                    seconds = drain_seconds(url, args.count)
                    with psycopg.connect(url) as conn:
                        assert_exactly_one_record_per_failure(conn)
                finally:
                    daemon.terminate()
                    daemon.close()
            rates.append(args.count / seconds)
            print(f"{args.count} failures recorded in {seconds:.3f} s: {rates[-1]:,.0f}/s")
    finally:
        dbs.close()
    print(f"median drain rate: {statistics.median(rates):,.0f} failures/s (target: 10,000/s)")


if __name__ == "__main__":
    main()
