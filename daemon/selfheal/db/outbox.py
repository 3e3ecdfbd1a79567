"""The alert tables' statements (groups, outbox, channels), through the store's
connections (and its error translation): the notifier's look at the groups, and the
senders' claims and results."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, LiteralString

import orjson
from psycopg.rows import class_row, dict_row, kwargs_row, tuple_row

from selfheal.core.alerts import Advanced, Attempted
from selfheal.db import queries
from selfheal.db.store import Store
from selfheal.models import AlertGroup, Channel, ClaimedAlert, QueuedAlert

__all__ = ["Outbox", "url_digest"]

# What the look writes back of a group (`failures` is the records' to count).
_LOOKED_FIELDS = (
    "fingerprint", "opened_at", "episode_base", "sample_event_id", "sample_error",
    "sample_plan", "sample_at", "alerted_at", "reported_failures", "reported_at",
    "closed_at", "regression", "resolution", "notices", "noticed", "next_check_at",
)  # fmt: skip


def url_digest(url: str) -> str:
    """Tells one configured URL from another without holding it (see 0008_alerts.sql)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class Outbox:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def advance_groups(
        self,
        decide: Callable[[AlertGroup, datetime], Advanced],
        channels: Sequence[Channel],
        limit: int = 200,
    ) -> tuple[int, list[QueuedAlert]]:
        """Look at the groups that are due, in one transaction: lock them, decide each
        (pure), write them back with their messages. How many were looked at, and the
        messages queued. The decisions go by the database's clock, as the times they
        compare were written by it."""
        async with self._store._transaction() as conn:
            async with conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(queries.LOCK_DUE_ALERT_GROUPS, {"limit": limit})
                locked = [fingerprint for (fingerprint,) in await cur.fetchall()]
            if not locked:
                return 0, []
            async with conn.cursor(row_factory=kwargs_row(_due)) as cur:
                await cur.execute(queries.LOCKED_ALERT_GROUPS, {"fingerprints": locked})
                groups = await cur.fetchall()
            looked = [decide(group, now) for now, group in groups]
            alerts = [(a, adv.group.fingerprint) for adv in looked for a in adv.alerts]
            params = {
                "groups": orjson.dumps(
                    [{f: getattr(adv.group, f) for f in _LOOKED_FIELDS} for adv in looked]
                ).decode(),
                "alert_groups": [fingerprint for _, fingerprint in alerts],
                "alert_kinds": [a.kind.value for a, _ in alerts],
                "alerts": [orjson.dumps(a).decode() for a, _ in alerts],
                "channels": [c.value for c in channels],
            }
            async with conn.cursor(row_factory=class_row(QueuedAlert)) as cur:
                await cur.execute(queries.ADVANCE_ALERT_GROUPS, params)
                return len(groups), await cur.fetchall()

    async def seconds_until_check(self) -> float | None:
        return await self._seconds(queries.SECONDS_UNTIL_ALERT_CHECK, {})

    async def register_channel(self, channel: Channel, url: str) -> str | None:
        """The channel's row, as a sender starts; why it is broken, if it is."""
        [(reason, _)] = await self._store._fetchall(
            queries.REGISTER_ALERT_CHANNEL,
            {"channel": channel.value, "url_digest": url_digest(url)},
            tuple_row,
        )
        return reason if reason is None else str(reason)

    async def claim(
        self, channel: Channel, owner: str, lease_seconds: float, spacing: float
    ) -> ClaimedAlert | None:
        rows = await self._store._fetchall(
            queries.CLAIM_ALERT,
            {
                "channel": channel.value,
                "owner": owner,
                "lease_seconds": lease_seconds,
                "spacing": spacing,
            },
            class_row(ClaimedAlert),
        )
        return rows[0] if rows else None

    async def attempted(
        self, claimed: ClaimedAlert, channel: Channel, owner: str, result: Attempted
    ) -> None:
        """Write what the attempt decided (the message's part only while this sender still
        holds its lease)."""
        await self._store._execute(
            queries.ALERT_ATTEMPTED,
            {
                "id": claimed.id,
                "owner": owner,
                "channel": channel.value,
                "status": result.status,
                "error": result.error,
                "failures": result.failures,
                "hold": result.hold,
                "broken": result.broken,
            },
        )

    async def seconds_until_sendable(self, channel: Channel) -> float | None:
        return await self._seconds(queries.SECONDS_UNTIL_SENDABLE, {"channel": channel.value})

    async def prune(self) -> None:
        await self._store._execute(queries.PRUNE_ALERTS, {})

    async def status(self) -> dict[str, Any]:
        groups = await self._store._fetchall(queries.OPEN_ALERT_GROUPS, {}, dict_row)
        channels = await self._store._fetchall(queries.ALERT_CHANNELS, {}, dict_row)
        return {
            "open_groups": groups[0].pop("open_groups") if groups else 0,
            "groups": [{k: v for k, v in g.items() if k != "open_groups"} for g in groups],
            "outbox": sum(int(c["queued"]) for c in channels),
            "channels": channels,
        }

    async def _seconds(self, query: LiteralString, params: dict[str, Any]) -> float | None:
        rows = await self._store._fetchall(query, params, tuple_row)
        return None if not rows or rows[0][0] is None else float(rows[0][0])


def _due(looked_at: datetime, **columns: Any) -> tuple[datetime, AlertGroup]:
    return looked_at, AlertGroup(**columns)
