"""`selfheal run`: one anyio task group owning the listener, claimer, healer, scanner,
notifier, alert senders, (with an LLM) the advisor, the sampler of the gauges, systemd's
watchdog and the HTTP server."""

from __future__ import annotations

import signal
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import anyio
from anyio import CancelScope
from anyio.abc import TaskGroup, TaskStatus

from selfheal.app import owner_name
from selfheal.db.outbox import Outbox
from selfheal.db.questions import Questions
from selfheal.db.store import Database, Store
from selfheal.http.llm import LlmClient
from selfheal.http.webhooks import Webhooks
from selfheal.logs import get_logger
from selfheal.services.advisor import Advisor
from selfheal.services.base import Gate, Service, Wakeup
from selfheal.services.claimer import Claimer
from selfheal.services.healer import open_healer
from selfheal.services.listener import Listener
from selfheal.services.notifier import Notifier, Sender
from selfheal.services.sampler import Sampler
from selfheal.services.scanner import Scanner
from selfheal.services.watchdog import Health, Systemd, Watchdog
from selfheal.settings import ConfigError, Settings, is_loopback
from selfheal.web.app import create_app
from selfheal.web.dashboard import Dashboard
from selfheal.web.intake import Intake
from selfheal.web.server import bind, serve_http

__all__ = ["run_daemon"]

log = get_logger()

_SAMPLE_EVERY = 5.0  # seconds between two readings of the gauges (and STATUS= updates)
_AFTER_GRACE = 5.0  # releasing leases and closing connections after the grace


class Stoppable(Protocol):
    def stop(self) -> None: ...


async def run_daemon(settings: Settings, db: Database, listen_conninfo: str | None) -> None:
    """The daemon until SIGTERM; without a listen connection (a pooler) it polls."""
    owner = owner_name()
    http_socket = _bind_http(settings)
    systemd = Systemd()
    claim_wakeup, scan_wakeup, heal_wakeup = Wakeup(), Wakeup(), Wakeup()
    backlog = Gate()  # diagnosing a backlog goes before recovering it
    alerts_wakeup, advice_wakeup = Wakeup(), Wakeup()
    async with (
        db.store(settings.db_pool_size) as store,
        open_healer(
            store, settings, heal_wakeup, owner, backlog, on_alerts=alerts_wakeup.set
        ) as healer,
        Webhooks(settings.http_timeout_seconds) as webhooks,
        AsyncExitStack() as stack,
    ):
        stack.callback(systemd.close)
        if http_socket is not None:
            stack.callback(http_socket.close)
        advisor = await _advising(settings, store, stack, advice_wakeup, owner)

        def recorded(_: object) -> None:
            # New records are due at once: the healer hears of them as they are written,
            # the notifier of the alert groups they joined, the advisor of their questions.
            heal_wakeup.set()
            alerts_wakeup.set()
            advice_wakeup.set()

        claimer = Claimer(store, settings, claim_wakeup, on_recorded=recorded, backlog=backlog)
        scanner = Scanner(store, settings, scan_wakeup, claim_wakeup)
        notifier, senders = _alerting(settings, Outbox(store), webhooks, alerts_wakeup, owner)
        sampler = Sampler(store, every=_SAMPLE_EVERY, reconnect_cap=settings.reconnect_max_seconds)

        def catch_up() -> None:
            # Notifications sent while the listener was away are lost: sweep the tables.
            claim_wakeup.set()
            scan_wakeup.set()

        listener = None
        if listen_conninfo is not None:
            listener = Listener(
                listen_conninfo,
                on_notify=claim_wakeup.set,
                on_connect=catch_up,
                check_interval=settings.listen_check_seconds,
                reconnect_cap=settings.reconnect_max_seconds,
                deadline=settings.db_timeout_seconds,
            )
        loops = [claimer, healer] if listener is None else [listener, claimer, healer]
        health = Health(loops, listener, sampler, settings.watchdog_stall_seconds)
        services: tuple[Service, ...] = (claimer, healer, scanner, notifier, *senders)
        if advisor is not None:
            services += (advisor,)
        workers = anyio.create_task_group()
        async with anyio.create_task_group() as tg:
            # Heard from the start: a SIGTERM while Postgres is still away ends it too.
            stopping = _Stopping(settings, systemd, health, tg.cancel_scope, workers)
            await tg.start(_stop_on_signal, stopping, services)
            tg.start_soon(sampler.run)
            if systemd.enabled:
                tg.start_soon(Watchdog(systemd, health, status_every=_SAMPLE_EVERY).run)
            http_shutdown = anyio.Event()
            async with anyio.create_task_group() as web:
                if http_socket is not None:  # answering (503) while the first LISTEN waits
                    intake = None
                    if settings.internal_webhook_token is not None:
                        intake = Intake(settings, db, store, web)
                    token = settings.http_token
                    address = settings.http_address()
                    dashboard = Dashboard(
                        store,
                        settings,
                        tasks=web,
                        token=token.get_secret_value() if token else None,
                        private=address is not None and not is_loopback(address[0]),
                        on_due=heal_wakeup.set,
                    )
                    app = create_app(health, intake, dashboard)
                    await web.start(serve_http, app, http_socket, http_shutdown)
                if listener is None:
                    catch_up()
                else:
                    # Listen before claiming: nothing committed after start-up goes unnoticed.
                    await tg.start(listener.run)
                async with workers:
                    for service in services:
                        workers.start_soon(service.run)
                    log.info(
                        "daemon.started",
                        owner=owner,
                        batch_size=settings.batch_size,
                        scan_interval_seconds=settings.scan_interval_seconds,
                        alert_channels=[sender.channel.value for sender in senders],
                    )
                    stopping.running.set()
                    systemd.notify(READY="1", STATUS=health.summary())
                # The workers finished their in-flight batches (or the grace period ran out).
                http_shutdown.set()
            tg.cancel_scope.cancel()
    log.info("daemon.stopped", owner=owner)


def _bind_http(settings: Settings) -> socket.socket | None:
    address = settings.http_address()
    if address is None:
        return None
    try:
        return bind(address)
    except OSError as exc:
        raise ConfigError(
            f"invalid configuration: SELFHEAL_HTTP_ADDR: cannot listen on {settings.http_addr}: "
            f"{exc.strerror or exc}"
        ) from None


async def _advising(
    settings: Settings, store: Store, stack: AsyncExitStack, wakeup: Wakeup, owner: str
) -> Advisor | None:
    """The advisor, when the LLM is to be asked; either way, one line says so."""
    policy, key = settings.advice_policy(), settings.openai_api_key
    if policy is None or key is None:
        log.info("llm.off", reason=settings.llm_off_reason())
        return None
    server = urlsplit(settings.openai_base_url)
    log.info(
        "llm.on",
        server=f"{server.scheme}://{server.netloc.rpartition('@')[2]}{server.path}",
        model=settings.llm_model,
        min_confidence=settings.llm_min_confidence,
        max_calls_per_hour=settings.llm_max_calls_per_hour,
        concurrency=settings.llm_concurrency,
    )
    llm = await stack.enter_async_context(
        LlmClient(
            settings.openai_base_url,
            key,
            settings.llm_model,
            settings.llm_timeout_seconds,
        )
    )
    return Advisor(
        Questions(store),
        llm,
        policy,
        wakeup,
        owner,
        per_hour=settings.llm_max_calls_per_hour,
        concurrency=settings.llm_concurrency,
        # Longer than any record statement that began before an answer can run, and than
        # the advisor's longest wait between two looks.
        copy_window=60 + 2 * (settings.db_timeout_seconds + settings.poll_interval_seconds),
        period=settings.poll_interval_seconds,
        reconnect_cap=settings.reconnect_max_seconds,
    )


def _alerting(
    settings: Settings, outbox: Outbox, webhooks: Webhooks, wakeup: Wakeup, owner: str
) -> tuple[Notifier, list[Sender]]:
    """The notifier, and a sender for each configured webhook (woken by what it queues)."""
    senders = [
        Sender(
            outbox,
            webhooks,
            channel,
            url,
            settings.delivery_policy(),
            Wakeup(),
            owner,
            # A killed sender's message goes again when its lease runs out: never sooner
            # than a post can take.
            lease_seconds=max(settings.lease_seconds, 2 * settings.http_timeout_seconds),
            dashboard_url=settings.dashboard_link(),
            period=settings.poll_interval_seconds,
            reconnect_cap=settings.reconnect_max_seconds,
        )
        for channel, url in settings.alert_channels().items()
    ]

    def queued() -> None:
        for sender in senders:
            sender.wakeup.set()

    notifier = Notifier(
        outbox,
        settings.alert_policy(),
        [sender.channel for sender in senders],
        wakeup,
        queued,
        period=settings.poll_interval_seconds,
        reconnect_cap=settings.reconnect_max_seconds,
    )
    return notifier, senders


@dataclass(frozen=True, slots=True)
class _Stopping:
    """What a shutdown touches: systemd and /healthz hear of it, the workers stop within
    the grace period, then the daemon's scope ends."""

    settings: Settings
    systemd: Systemd
    health: Health
    daemon_scope: CancelScope
    workers: TaskGroup
    running: anyio.Event = field(default_factory=anyio.Event)  # the workers started


async def _stop_on_signal(
    stopping: _Stopping,
    workers: tuple[Stoppable, ...],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    grace = stopping.settings.shutdown_grace_seconds
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("daemon.stopping", signal=signal.Signals(signum).name, grace_seconds=grace)
            stopping.health.stopping = True
            stopping.systemd.notify(STOPPING="1", STATUS="stopping: finishing work in flight")
            # The grace, and the time to release leases after it: not a hang to kill.
            stopping.systemd.extend_timeout(grace + _AFTER_GRACE)
            for worker in workers:
                worker.stop()
            break
    if not stopping.running.is_set():  # nothing in flight yet: no grace to wait for
        stopping.daemon_scope.cancel()
        return
    # An unfinished transaction rolls back when cancelled: its failures return to the inbox.
    await anyio.sleep(grace)
    log.warning("daemon.grace_expired")
    stopping.workers.cancel_scope.cancel()
    stopping.daemon_scope.cancel()
