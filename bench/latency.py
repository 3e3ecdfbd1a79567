"""Commit-to-decision latency, single failures 10 ms apart, against the bare insert-and-notify path.

Baseline: a listener's wake-up after the writer's commit (the trigger's NOTIFY), no daemon.
Daemon: the writer's commit to the daemon's committed record (its `selfheal_recorded` NOTIFY).
Both measured on one clock in one process. Usage: python -m bench.latency [--samples 1000]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import psycopg

from bench.common import bench_databases, percentile, quiet_daemon, summary
from tests.support.events import insert_failure


def measure(url: str, channel: str, samples: int) -> list[float]:
    latencies: list[float] = []
    received = threading.Semaphore(0)
    arrivals: list[float] = []

    def listen() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"LISTEN {channel}")
            ready.set()
            for _ in conn.notifies(stop_after=samples):
                arrivals.append(time.perf_counter())
                received.release()

    ready = threading.Event()
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait()
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(samples):
            insert_failure(conn)
            committed = time.perf_counter()
            if not received.acquire(timeout=10):
                raise TimeoutError("no notification within 10 s")
            latencies.append((arrivals[-1] - committed) * 1000)
            time.sleep(0.010)
    thread.join(5)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    dbs = bench_databases()
    try:
        with dbs.fresh() as url:
            measure(url, "selfheal_failures", 50)  # warm-up
            baseline = measure(url, "selfheal_failures", args.samples)
        with dbs.fresh() as url:
            with quiet_daemon(url):
                measure(url, "selfheal_recorded", 50)  # warm-up
                with_daemon = measure(url, "selfheal_recorded", args.samples)
    finally:
        dbs.close()
    print(f"baseline (insert + NOTIFY, no daemon): {summary(baseline)}")
    print(f"with daemon (commit -> recorded):      {summary(with_daemon)}")
    added_median = statistics.median(with_daemon) - statistics.median(baseline)
    added_p99 = percentile(with_daemon, 0.99) - percentile(baseline, 0.99)
    print(
        f"daemon adds: median {added_median:.3f} ms  p99 {added_p99:.3f} ms  (targets: 1 ms, 8 ms)"
    )


if __name__ == "__main__":
    main()
