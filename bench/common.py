"""Shared by the benchmarks (run from the repository root: `python -m bench.NAME`)."""

from __future__ import annotations

import statistics

from tests.support.daemon import DaemonProcess
from tests.support.postgres import Databases, find_server, scratch_dir

__all__ = ["DaemonProcess", "bench_databases", "percentile", "summary"]


def bench_databases() -> Databases:
    return Databases(find_server(scratch_dir()))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values_ms: list[float]) -> str:
    return (
        f"median {statistics.median(values_ms):.3f} ms  p99 {percentile(values_ms, 0.99):.3f} ms"
        f"  (n={len(values_ms)})"
    )
