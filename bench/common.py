"""Shared by the benchmarks: a fresh migrated database and a daemon process."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.daemon import DaemonProcess  # noqa: E402
from tests.support.postgres import Databases, find_server, scratch_dir  # noqa: E402

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
