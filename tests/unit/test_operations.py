"""The pure parts of running it: the HTTP address, systemd's environment, how health is
judged from the loops' progress, and the cap on the `service` label."""

from __future__ import annotations

import os
import time

import pytest

from selfheal import metrics
from selfheal.models import Gauges
from selfheal.services.base import Service, Wakeup
from selfheal.services.sampler import Sampler
from selfheal.services.watchdog import Health, Systemd
from selfheal.settings import ConfigError, load_settings, parse_address


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        (":9464", ("0.0.0.0", 9464)),  # noqa: S104 - what it means
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_an_http_address_is_host_and_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_address(value) == expected


@pytest.mark.parametrize("value", ["9464", "::1:9464", "[::1:9464", "h:65536", "h:", "h:x1"])
def test_an_http_address_that_cannot_be_bound_fails_at_start(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(http_addr=value)
    assert str(caught.value).startswith("invalid configuration: SELFHEAL_HTTP_ADDR: must be")


def test_no_http_address_is_no_server() -> None:
    assert load_settings(http_addr="  ").http_address() is None


def test_systemd_is_heard_only_with_a_socket_and_a_watchdog_only_for_this_process() -> None:
    assert not Systemd({}).enabled
    assert Systemd({}).watchdog_seconds is None
    mine = Systemd({"NOTIFY_SOCKET": "@sock", "WATCHDOG_USEC": "30000000"})
    assert mine.enabled and mine.watchdog_seconds == 30.0
    other = Systemd({"NOTIFY_SOCKET": "@s", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_seconds is None
    ours = Systemd(
        {"NOTIFY_SOCKET": "@s", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert ours.watchdog_seconds == 2.0
    for usec in ("0", "", "soon", "-5"):
        odd = Systemd({"NOTIFY_SOCKET": "@s", "WATCHDOG_USEC": usec})
        assert odd.watchdog_seconds is None
        odd.close()
    for systemd in (mine, other, ours):
        systemd.notify(READY="1")  # nobody listens on these: best effort, no error
        systemd.close()


class Loop(Service):
    name = "claimer"

    def __init__(self) -> None:
        super().__init__(Wakeup(), period=1.0, reconnect_cap=1.0)


def _sampler(gauges: Gauges | None = None, unavailable: str | None = None) -> Sampler:
    sampler = Sampler.__new__(Sampler)  # no store: only what Health reads
    sampler.latest, sampler.unavailable = gauges, unavailable
    return sampler


def test_a_loop_is_stalled_only_while_it_works_without_progress() -> None:
    loop = Loop()
    health = Health([loop], None, _sampler(), stall_limit=5.0)
    assert loop.resting and health.stalled() == []  # not started: resting
    loop.resting = False
    loop.beat_at = time.monotonic() - 10
    [stalled] = health.stalled()
    assert stalled.startswith("claimer made no progress for 1")
    assert health.problems() == [stalled]
    loop.beat()
    assert health.stalled() == []
    loop.beat_at = time.monotonic() - 10
    with loop.rest():  # waiting for work, a gate or Postgres is no stall
        assert health.stalled() == []
    assert health.stalled() == []  # and the rest's end is progress
    loop.beat_at = time.monotonic() - 10
    health.stopping = True  # the grace is bounded on its own
    assert health.stalled() == [] and health.problems() == ["stopping"]
    assert health.summary() == "stopping: finishing work in flight"


def test_health_names_postgres_and_the_listener_and_summarizes_the_gauges() -> None:
    gauges = Gauges(
        pending=3,
        disabled_services=1,
        disabled_user_connections=0,
        open_circuits=1,
        inbox=7,
        oldest_inbox_seconds=2.5,
        outbox=2,
    )
    health = Health([], None, _sampler(gauges), stall_limit=5.0)
    assert health.problems() == []
    assert health.summary() == "polling; inbox 7; pending 3; open circuits 1; alerts queued 2"
    down = Health([], None, _sampler(None, "connection refused"), stall_limit=5.0)
    assert down.problems() == ["postgres unavailable: connection refused"]
    assert down.summary() == "polling; waiting for the first reading of Postgres"


def test_a_service_label_is_kept_for_the_first_two_hundred_names_only() -> None:
    names = [f"label-test-{n}" for n in range(metrics.MAX_SERVICES + 5)]
    labels = {metrics.service_label(name) for name in names}
    assert "other" in labels
    assert len(labels) <= metrics.MAX_SERVICES + 1
    assert metrics.service_label(names[0]) in (names[0], "other")  # stable once given


def test_off_loopback_the_server_needs_a_token_and_alerts_link_to_the_page() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(http_addr="0.0.0.0:9464")
    assert str(caught.value) == (
        "invalid configuration: SELFHEAL_HTTP_TOKEN: required when SELFHEAL_HTTP_ADDR is not "
        "a loopback address"
    )
    open_to_all = load_settings(http_addr=":9464", http_token="s3cret")
    assert open_to_all.dashboard_link() is None  # every interface: no one address to link
    assert load_settings(http_addr="[::1]:9464").dashboard_link() == "http://[::1]:9464/"
    local = load_settings(http_addr="localhost:9464")
    assert local.dashboard_link() == "http://localhost:9464/"
    chosen = load_settings(http_addr="127.0.0.1:9464", dashboard_url="https://ops.example/heal")
    assert chosen.dashboard_link() == "https://ops.example/heal"
    assert load_settings().dashboard_link() is None
