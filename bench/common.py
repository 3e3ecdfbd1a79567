"""Shared by the benchmarks (run from the repository root: `python -m bench.NAME`)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from tests.support.daemon import DaemonProcess
from tests.support.postgres import Databases, find_server, scratch_dir

__all__ = [
    "DaemonProcess",
    "bench_databases",
    "percentile",
    "quiet_daemon",
    "summary",
]


def bench_databases() -> Databases:
    return Databases(find_server(scratch_dir()))


@contextmanager
def quiet_daemon(url: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`selfheal run` with its log lines discarded, so that reading them costs the
    benchmark's own clock nothing; ready once it LISTENs."""
    daemon = subprocess.Popen(
        [sys.executable, "-m", "selfheal", "run"],
        env={
            **os.environ,
            "DATABASE_URL": url,
            "SELFHEAL_LOG_FORMAT": "json",
            "NO_PROXY": "127.0.0.1",
            "SELFHEAL_ALLOW_LOOPBACK": "true",  # the benchmark's endpoints are on loopback
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(1200):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                ).fetchone()
                if row and row[0]:
                    break
                time.sleep(0.05)
            else:
                raise TimeoutError("the daemon did not start")
        yield daemon
    finally:
        daemon.terminate()
        daemon.wait(30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values_ms: list[float]) -> str:
    return (
        f"median {statistics.median(values_ms):.3f} ms  p99 {percentile(values_ms, 0.99):.3f} ms"
        f"  (n={len(values_ms)})"
    )
