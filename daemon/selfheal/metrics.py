"""What operators graph: the daemon's counters and histograms (incremented where things
happen) and the gauges a sampler reads from Postgres every few seconds, in one registry
that `/metrics` exposes in the Prometheus text format.

`service` and `category` are labels; error codes, event ids and user ids never are. A
service name comes from an untrusted column, so at most `MAX_SERVICES` distinct ones get a
series of their own; the rest count under `service="other"`."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from selfheal import __version__

__all__ = ["MAX_SERVICES", "REGISTRY", "count_by_service", "service_label"]

MAX_SERVICES = 200
_OTHER = "other"

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside every counter and histogram
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # memory, CPU, open files: process_*
PlatformCollector(registry=REGISTRY)

BUILD = Info("selfheal_build", "The running version.", registry=REGISTRY)
BUILD.info({"version": __version__})

FAILURES_RECORDED = Counter(
    "selfheal_failures_recorded",
    "Failures diagnosed and recorded, by service and category.",
    ["service", "category"],
    registry=REGISTRY,
)
RECOVERIES = Counter(
    "selfheal_recoveries",
    "Recovery visits that ended, by service and outcome (resolved, pending, disabled).",
    ["service", "outcome"],
    registry=REGISTRY,
)
TIME_TO_RECOVER = Histogram(
    "selfheal_time_to_recover_seconds",
    "From a failure to its successful recovery, by category.",
    ["category"],
    buckets=(1, 2, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400),
    registry=REGISTRY,
)
NOTIFICATION_LAG = Histogram(
    "selfheal_notification_lag_seconds",
    "From a failure's row to its record: the trigger, NOTIFY, claim and diagnosis.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
ALERT_DELIVERIES = Counter(
    "selfheal_alert_deliveries",
    "Admin alert delivery attempts, by channel and result (delivered, retry, dead).",
    ["channel", "result"],
    registry=REGISTRY,
)
LLM_CALLS = Counter(
    "selfheal_llm_calls",
    "Questions to the LLM, by result (answered, failed).",
    ["result"],
    registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "selfheal_llm_tokens",
    "Tokens the LLM reported, by kind (prompt, completion).",
    ["kind"],
    registry=REGISTRY,
)
LLM_LATENCY = Histogram(
    "selfheal_llm_latency_seconds",
    "How long a question to the LLM took, answered or not.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20),
    registry=REGISTRY,
)
LISTENER_CONNECTED = Gauge(
    "selfheal_listener_connected",
    "1 while the listener's LISTEN is in place (0 when polling or reconnecting).",
    registry=REGISTRY,
)

# Read from Postgres by the sampler (services/sampler.py), never per scrape.
PENDING = Gauge("selfheal_pending", "Records pending recovery.", registry=REGISTRY)
DISABLED = Gauge(
    "selfheal_disabled",
    "Integrations with recovery disabled, by scope (service, user_connection).",
    ["scope"],
    registry=REGISTRY,
)
OPEN_CIRCUITS = Gauge(
    "selfheal_open_circuits", "Circuits open: services and user connections.", registry=REGISTRY
)
INBOX_DEPTH = Gauge("selfheal_inbox_depth", "Failures waiting to be diagnosed.", registry=REGISTRY)
OLDEST_UNRECORDED = Gauge(
    "selfheal_oldest_unrecorded_failure_age_seconds",
    "Age of the oldest failure waiting to be diagnosed (0 when none waits).",
    registry=REGISTRY,
)
ALERT_OUTBOX = Gauge(
    "selfheal_alert_outbox_depth", "Admin alerts queued for delivery.", registry=REGISTRY
)
SAMPLED_AT = Gauge(
    "selfheal_gauges_sampled_timestamp_seconds",
    "When the gauges above were last read from Postgres (Unix time).",
    registry=REGISTRY,
)

_services: set[str] = set()


def service_label(name: str) -> str:
    """The `service` label of a service name: its own for the first MAX_SERVICES seen."""
    if name in _services:
        return name
    if len(_services) < MAX_SERVICES:
        _services.add(name)
        return name
    return _OTHER


def count_by_service(counter: Counter, pairs: Iterable[tuple[str, str]]) -> None:
    """Add one per (service, other label) pair, a batch at a time (the hot path)."""
    for (service, other), n in Tally(pairs).items():
        counter.labels(service_label(service), other).inc(n)
