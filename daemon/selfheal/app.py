"""The composition root: opens the store and the HTTP clients, builds the services, and
holds what the CLI (and the coming HTTP intake) share: heal one event, scan a window."""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from pathlib import Path
from typing import Any

from selfheal.db import embedded
from selfheal.db.connections import ConnectionPolicy, behind_pooler
from selfheal.db.migrate import apply_migrations
from selfheal.db.outbox import Outbox
from selfheal.db.questions import Questions
from selfheal.db.store import Database, RecordSummary, Store
from selfheal.logs import get_logger
from selfheal.models import Status
from selfheal.services.base import Wakeup
from selfheal.services.claimer import Claimer
from selfheal.services.healer import open_healer
from selfheal.settings import Settings

__all__ = [
    "Database",
    "EmbeddedMissing",
    "database",
    "heal_event",
    "listen_conninfo",
    "migrate",
    "owner_name",
    "scan",
    "status_report",
    "webhook_response",
]

log = get_logger()


class EmbeddedMissing(Exception):
    """No DATABASE_URL, and the embedded Postgres is not installed."""


def owner_name() -> str:
    """Who holds a lease: readable in the tables, unique per process."""
    # The suffix: two containers can share a hostname and both be pid 1.
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def database(settings: Settings) -> Database:
    """DATABASE_URL (or the embedded Postgres), and whether a pooler answers for it."""
    url = conninfo(settings)
    return Database(url, await connection_policy(settings, url))


async def connection_policy(settings: Settings, url: str) -> ConnectionPolicy:
    deadline = settings.db_timeout_seconds
    if settings.database_pooler == "auto":
        pooled = await behind_pooler(url, deadline)
        if pooled:
            log.info("database.pooler_detected", setting="SELFHEAL_DATABASE_POOLER")
    else:
        pooled = settings.database_pooler == "pgbouncer"
    return ConnectionPolicy(deadline=deadline, pooled=pooled)


async def listen_conninfo(settings: Settings, db: Database) -> str | None:
    """The session connection for LISTEN, or None: through a transaction pooler LISTEN
    receives nothing, so the daemon says so once and polls."""
    given = settings.listen_database_url
    url = given.get_secret_value() if given else db.conninfo
    pooled = (
        db.policy.pooled
        if given is None
        else (settings.database_pooler != "none" and await behind_pooler(url, db.policy.deadline))
    )
    if not pooled:
        return url
    log.warning(
        "listener.pooled",
        message=(
            "LISTEN through a transaction pooler (PgBouncer) receives nothing: set "
            "SELFHEAL_LISTEN_DATABASE_URL to a direct connection to Postgres. Until then "
            f"failures are found by polling every {settings.poll_interval_seconds:g} s."
        ),
    )
    return None


async def migrate(db: Database) -> tuple[str, ...]:
    result = await apply_migrations(db.conninfo, db.policy)
    log.info("migrate.done", applied=list(result.applied))
    return result.applied


def conninfo(settings: Settings) -> str:
    """DATABASE_URL, or the embedded Postgres started in the data directory."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    if not embedded.available():
        raise EmbeddedMissing(
            "DATABASE_URL is not set and the embedded Postgres is not installed: "
            f"set DATABASE_URL, or install it with {embedded.INSTALL_HINT}"
        )
    data_dir = Path(settings.data_dir) if settings.data_dir else embedded.default_data_dir()
    url = embedded.start_embedded(data_dir)
    log.info("embedded_postgres.started", data_dir=str(data_dir))
    return url


async def heal_event(settings: Settings, db: Database, event_id: uuid.UUID) -> dict[str, Any]:
    """Diagnose and recover one failure now: the specification's webhook response."""
    async with (
        db.store(max_size=2) as store,
        open_healer(store, settings, Wakeup(), owner_name()) as healer,
    ):
        if not await store.event_exists(event_id):
            return {"success": False, "error": f"event {event_id} not found"}
        await Claimer(store, settings, Wakeup()).process_events([event_id])
        record = await store.record_for_event(event_id)
        if record is not None:
            await healer.heal_now([record.recovery_id])
            record = await store.record_for_event(event_id)
    return webhook_response(event_id, record)


def webhook_response(event_id: uuid.UUID, record: RecordSummary | None) -> dict[str, Any]:
    """The specification's webhook response for an event's record as it stands."""
    if record is None:
        return {"success": False, "error": f"event {event_id} is not a failure"}
    response: dict[str, Any] = {
        "success": True,
        "recovery_id": str(record.recovery_id),
        "category": record.category,
        "action_taken": record.action_taken,
        "status": record.status,
    }
    if record.status == Status.PENDING and record.next_retry_at is not None:
        response["retry_scheduled"] = True
        response["next_retry_at"] = record.next_retry_at.isoformat()
    return response


async def scan(
    settings: Settings, db: Database, window_minutes: float, limit: int
) -> dict[str, Any]:
    """One sweep over the window's unrecorded failures: the specification's scan response."""
    async with (
        db.store(max_size=4) as store,
        open_healer(store, settings, Wakeup(), owner_name()) as healer,
    ):
        event_ids = await store.unrecorded_failures(window_minutes, max(0, limit))
        recorded = []
        if event_ids:
            recorded = await Claimer(store, settings, Wakeup()).process_events(event_ids)
        outcomes = await healer.heal_now([r.recovery_id for r in recorded])
    status_of = {o.job.record_id: o.status.value for o in outcomes}
    action_of = {o.job.record_id: o.action for o in outcomes}
    statuses = [status_of.get(r.recovery_id, Status.PENDING.value) for r in recorded]
    return {
        "success": True,
        "processed_count": len(recorded),
        "resolved_count": statuses.count(Status.RESOLVED.value),
        "pending_count": statuses.count(Status.PENDING.value),
        "disabled_count": statuses.count(Status.DISABLED.value),
        "events": [
            {
                "event_id": str(r.diagnosis.event_id),
                "service_name": r.diagnosis.service_name,
                "category": r.diagnosis.analysis.category.value,
                "action_taken": action_of.get(r.recovery_id, r.diagnosis.action),
                "status": status,
            }
            for r, status in zip(recorded, statuses, strict=True)
        ],
    }


async def status_report(store: Store, settings: Settings) -> dict[str, Any]:
    """`selfheal status --json`: the KPIs, the alerts' state and the LLM's usage."""
    off = settings.llm_off_reason()
    return {
        **await store.status(),
        "alert_groups": await Outbox(store).status(),
        "llm": {
            "enabled": off is None,
            "off_reason": off,
            "model": settings.llm_model,
            "max_calls_per_hour": settings.llm_max_calls_per_hour,
            **await Questions(store).status(),
        },
    }
