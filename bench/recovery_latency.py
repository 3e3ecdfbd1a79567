"""Time to recover a network failure whose endpoint answers on the third attempt, beyond
the backoff schedule the daemon drew (the `backoff` log field): the overhead (target: at
most 5 ms). Measured on the database clock, from the failure row's created_at to the
record's resolved_at. The endpoint is a fast server in its own process.

Usage: python -m bench.recovery_latency [--samples 10]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from bench.common import DaemonProcess, bench_databases, percentile
from tests.support.events import insert_failure


@contextmanager
def fast_endpoint() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "bench.fast_endpoint", str(port)])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    dbs = bench_databases()
    overheads: list[float] = []
    totals: list[float] = []
    try:
        with dbs.fresh() as url, fast_endpoint() as endpoint:
            daemon = DaemonProcess(url)
            try:
                daemon.started()
                with (
                    psycopg.connect(url, autocommit=True) as listener,
                    psycopg.connect(url, autocommit=True) as writer,
                ):
                    listener.execute("LISTEN selfheal_outcomes")
                    for n in range(args.samples):
                        event_id = str(
                            insert_failure(
                                writer,
                                service_name=f"svc-{n}",
                                http_status=None,
                                error_code="ECONNRESET",
                                error_message="socket hang up",
                                endpoint=f"{endpoint}/flaky/{n}",
                            )
                        )
                        for _ in listener.notifies(timeout=30, stop_after=1):
                            break
                        row = writer.execute(
                            "SELECT extract(epoch FROM s.resolved_at - e.created_at)::float8 "
                            "FROM system_integrity_events s JOIN integration_events e "
                            "ON e.id = s.event_id WHERE s.event_id = %s",
                            (event_id,),
                        ).fetchone()
                        assert row is not None and row[0] is not None
                        total = float(row[0])
                        resolved = daemon.wait_for(
                            lambda e, i=event_id: (
                                e.get("event") == "recovery.resolved" and e.get("event_id") == i
                            )
                        )
                        assert resolved["attempts"] == 3, resolved
                        schedule = resolved["backoff"]
                        totals.append(total)
                        overheads.append((total - schedule) * 1000)
            finally:
                daemon.terminate()
                daemon.close()
    finally:
        dbs.close()
    print(
        f"failure written -> recovered (3rd attempt succeeds): "
        f"median {statistics.median(totals):.3f} s"
    )
    print(
        f"beyond the backoff schedule: median {statistics.median(overheads):.2f} ms"
        f"  p90 {percentile(overheads, 0.9):.2f} ms  max {max(overheads):.2f} ms"
        f"  (n={len(overheads)}; target: at most 5 ms)"
    )


if __name__ == "__main__":
    main()
