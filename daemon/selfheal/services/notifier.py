"""Admin alerts: the notifier looks at alert groups as they come due and queues their
messages (core/alerts.advance, in the outbox); one sender per configured channel
delivers them, at the channel's pace, through outages, each message once."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import partial

from pydantic import SecretStr

from selfheal import metrics
from selfheal.core.alerts import (
    AlertPolicy,
    Attempted,
    DeliveryPolicy,
    advance,
    after_delivery,
)
from selfheal.core.messages import render
from selfheal.db.outbox import Outbox
from selfheal.errors import PermanentError
from selfheal.http.webhooks import Webhooks
from selfheal.logs import error_fields, get_logger
from selfheal.models import Channel, ClaimedAlert, alert_from_row
from selfheal.services.base import Every, Paced, Service, Wakeup, retry_until_done

__all__ = ["Notifier", "Sender"]

log = get_logger()

_GROUPS_PER_LOOK = 200
# Looks at most this often: the claimer wakes the notifier with every batch it records.
_LOOK_SPACING = 0.02


class Notifier(Service):
    name = "notifier"

    def __init__(
        self,
        outbox: Outbox,
        policy: AlertPolicy,
        channels: Sequence[Channel],
        wakeup: Wakeup,
        on_queued: Callable[[], None],
        *,
        period: float,
        reconnect_cap: float,
    ) -> None:
        super().__init__(wakeup, period=period, reconnect_cap=reconnect_cap)
        self._outbox = outbox
        self._policy = policy
        self.channels = tuple(channels)
        self._on_queued = on_queued
        self._pruning = Every(600.0)
        self._pace = Paced(_LOOK_SPACING)

    async def step(self) -> float | None:
        try:
            return await self._look()
        except PermanentError as exc:  # never the daemon's end: healing goes on without it
            log.error("notifier.failed", **error_fields(exc))
            return None

    async def _look(self) -> float | None:
        await self._pace.wait()
        if self._pruning.due():
            await self._outbox.prune()
        looked, queued = await self._outbox.advance_groups(
            lambda group, now: advance(group, self._policy, now), self.channels, _GROUPS_PER_LOOK
        )
        for alert in queued:
            log.info(
                "alert.queued",
                alert_id=alert.id,
                group=alert.alert_group,
                channel=alert.channel,
                kind=alert.kind,
            )
        if queued:
            self._on_queued()
        if looked == _GROUPS_PER_LOOK:
            return 0.0
        return await self._outbox.seconds_until_check()


class Sender(Service):
    """Delivers one channel's messages in order, one at a time, as the channel's shared
    pace allows (core/alerts.after_delivery: holds, retries, dead messages, broken
    channels). Healing never waits for it: it has its own HTTP client and loop."""

    name = "sender"

    def __init__(
        self,
        outbox: Outbox,
        webhooks: Webhooks,
        channel: Channel,
        url: SecretStr,
        policy: DeliveryPolicy,
        wakeup: Wakeup,
        owner: str,
        *,
        lease_seconds: float,
        dashboard_url: str | None,
        period: float,
        reconnect_cap: float,
    ) -> None:
        super().__init__(wakeup, period=period, reconnect_cap=reconnect_cap)
        self._outbox = outbox
        self._webhooks = webhooks
        self.channel = channel
        self._url = url
        self._policy = policy
        self._owner = owner
        self._lease = lease_seconds
        self._dashboard_url = dashboard_url
        self._reconnect_cap = reconnect_cap
        self._registered = False

    async def step(self) -> float | None:
        try:
            return await self._send_next()
        except PermanentError as exc:  # never the daemon's end: healing goes on without it
            log.error("sender.failed", channel=self.channel.value, **error_fields(exc))
            return None

    async def _send_next(self) -> float | None:
        if not self._registered:
            await self._register()
        claimed = await self._outbox.claim(
            self.channel, self._owner, self._lease, self._policy.spacing
        )
        if claimed is None:
            due = await self._outbox.seconds_until_sendable(self.channel)
            # Another sender may hold the channel's row for a moment: do not spin on it.
            return None if due is None else max(due, 0.05)
        result = await self._deliver(claimed)
        await retry_until_done(
            "sender",
            partial(self._outbox.attempted, claimed, self.channel, self._owner, result),
            self._reconnect_cap,
        )
        self._log(claimed, result)
        return 0.0

    async def _register(self) -> None:
        broken = await self._outbox.register_channel(self.channel, self._url.get_secret_value())
        self._registered = True
        if broken is not None:
            log.warning("alert.channel_broken", channel=self.channel.value, reason=broken)

    async def _deliver(self, claimed: ClaimedAlert) -> Attempted:
        try:
            body = render(self.channel, alert_from_row(claimed.alert), self._dashboard_url)
        except (KeyError, TypeError, ValueError) as exc:  # a row no daemon wrote
            reason = f"unreadable alert row ({type(exc).__name__})"
            return Attempted("dead", reason, claimed.failures, 0.0, claimed.broken)
        answer = await self._webhooks.post(self._url.get_secret_value(), body)
        return after_delivery(
            self.channel,
            answer,
            failures=claimed.failures,
            broken=claimed.broken,
            policy=self._policy,
            rand=random.random(),  # noqa: S311 - jitter, not a secret
        )

    def _log(self, claimed: ClaimedAlert, result: Attempted) -> None:
        outcome = (
            "delivered" if result.delivered else "dead" if result.status == "dead" else "retry"
        )
        metrics.ALERT_DELIVERIES.labels(self.channel.value, outcome).inc()
        fields = {
            "alert_id": claimed.id,
            "group": claimed.alert_group,
            "channel": self.channel.value,
            "kind": claimed.kind,
            "attempts": claimed.attempts,
        }
        if result.delivered:
            log.info("alert.delivered", **fields)
            if claimed.broken is not None:
                log.info("alert.channel_recovered", channel=self.channel.value)
        elif result.status == "dead":
            log.error("alert.dead", **fields, reason=result.error)
            if claimed.broken is None and result.broken is not None:
                log.warning(
                    "alert.channel_broken", channel=self.channel.value, reason=result.broken
                )
        else:
            log.warning("alert.retry", **fields, error=result.error, retry_in=round(result.hold, 3))
