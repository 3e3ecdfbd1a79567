"""Planning: what to do with a leased record, and the outcomes a recovery can end in.

Pure: a Job, the thresholds and the clock's reading in; frozen values out. The executor
(services/execute.py) runs the HTTP of a recipe and calls back here to word the outcome.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlsplit

from selfheal.core.retry import schedule_retry
from selfheal.models import Category, Job, Outcome, Plan, Recipe, Status

__all__ = [
    "auth_failed",
    "circuit_opened",
    "crashed",
    "endpoint_host",
    "held",
    "host_allowed",
    "later",
    "plan",
    "planned_action",
    "probe_failed",
    "rate_limit_window",
    "resolved",
    "token_refused",
]

_PLANNED_ACTIONS = {
    Category.AUTH: "refresh OAuth token and replay (max 3 attempts)",
    Category.RATE_LIMIT: "retry after the rate-limit window",
    Category.NETWORK: "replay with exponential backoff (max 3 attempts)",
    Category.DATA: "no automatic retry; admin review of the payload",
    Category.UNKNOWN: "one retry after 1 s, then admin review",
}

_RECIPES = {
    Category.AUTH: Recipe.REFRESH_AND_REPLAY,
    Category.RATE_LIMIT: Recipe.AFTER_RATE_LIMIT,
    Category.NETWORK: Recipe.BACKOFF,
    Category.UNKNOWN: Recipe.BACKOFF,
}

_DEFAULT_PORTS = {"https": 443, "http": 80}

#: A recovery that crashed is tried again after this long.
CRASH_RETRY = timedelta(minutes=5)


def planned_action(category: Category) -> str:
    """What the daemon will do, recorded as ``action_taken`` before recovery runs."""
    return _PLANNED_ACTIONS[category]


def plan(job: Job, replay_problem: str | None) -> Plan:
    """Decide a job: disabled, never replayed (data, or an unknown failure whose retry the
    LLM's second opinion stopped), held by an open circuit, or a recipe.

    ``replay_problem`` says why the event cannot be replayed (no endpoint, a bad URL or
    method), None when it can; it is checked only for jobs that would replay. Thresholds
    are not decided here: a failure counts when its healing ends (see core/effects.py).
    """
    if job.event_deleted:
        return _decided(job, Status.PENDING, "the event was deleted; nothing to replay")
    if not job.service_enabled:
        return _decided(job, Status.DISABLED, f"recovery disabled for {job.service_name}")
    if job.user_connection_id is not None and not job.user_connection_enabled:
        # A disabled user connection gets no request at all, whatever the category.
        return _decided(job, Status.DISABLED, "recovery disabled for this user connection")
    if job.retry_stopped is not None and job.category is Category.UNKNOWN:
        # The LLM's confident reading that no retry can fix it: advice that only holds
        # back. Not counted towards disabling: the advice must never make recovery bolder.
        return _decided(job, Status.PENDING, job.retry_stopped)
    recipe = _RECIPES.get(job.category)
    if recipe is None:  # data: the same payload cannot succeed; it counts at once
        return Plan(job, outcome=_unhealed(job, planned_action(job.category)))
    if replay_problem is not None:
        return Plan(job, outcome=_unhealed(job, f"cannot replay: {replay_problem}"))
    refused = token_refused(job)
    if refused is not None:
        return _decided(job, Status.PENDING, refused)
    if job.circuit_open and not job.probe:
        return Plan(job, outcome=held(job, job.circuit_next_probe_at))
    return Plan(job, recipe=recipe)


def _unhealed(job: Job, action: str) -> Outcome:
    return Outcome(job, Status.PENDING, action, unhealed=True)


def token_refused(job: Job) -> str | None:
    """Why a replay that would carry the user's token must not be sent to its endpoint:
    a token goes only to the hosts its service lists in allowed_hosts."""
    carries = job.access_token or (
        job.category is Category.AUTH and job.user_connection_id is not None
    )
    if not carries:
        return None
    host = endpoint_host(job.endpoint or "")
    if host is not None and host_allowed(host, job.allowed_hosts):
        return None
    shown = _host_port(host)
    return (
        f"not sent: a user's token goes only to the allowed_hosts of {job.service_name} and "
        f"{shown} is not one of them; to allow it: UPDATE integrations_master SET "
        f"allowed_hosts = array_append(allowed_hosts, '{shown}') "
        f"WHERE service_name = '{job.service_name}'"
    )


def endpoint_host(url: str) -> tuple[str, int | None] | None:
    """(host, port) of a URL: the port as given, or the scheme's default (443 for https)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port or _DEFAULT_PORTS.get(parts.scheme.lower())


def host_allowed(host: tuple[str, int | None], allowed: tuple[str, ...] | None) -> bool:
    """Whether `allowed` lists the host: `name` allows it over https (port 443), and
    `name:port` that port; a token never goes over plain http unless a port says so."""
    name, port = host
    for entry in allowed or ():
        try:
            listed = urlsplit("//" + entry.strip())
            listed_port = listed.port
        except ValueError:  # an entry that is no host[:port]: it allows nothing
            continue
        if (listed.hostname or "").lower() == name and (listed_port or 443) == port:
            return True
    return False


def _host_port(host: tuple[str, int | None] | None) -> str:
    if host is None:
        return "(no host)"
    name, port = host
    shown = f"[{name}]" if ":" in name else name
    return shown if port is None else f"{shown}:{port}"


def held(job: Job, until: datetime | None) -> Outcome:
    """Waiting behind an open circuit: no request; a probe tells when the service is back."""
    whose = (
        job.service_name
        if job.service_circuit_open or job.category is not Category.AUTH
        else "this user connection"
    )
    return Outcome(
        job,
        Status.PENDING,
        f"waiting for {whose} to recover (circuit open); retried when a probe succeeds",
        next_retry_at=until,
        held=True,
    )


def _decided(job: Job, status: Status, action: str) -> Plan:
    return Plan(job, outcome=Outcome(job, status, action))


def resolved(job: Job, attempts: int, how: str, backoff: float) -> Outcome:
    plural = "s" if attempts != 1 else ""
    return Outcome(
        job,
        Status.RESOLVED,
        f"{how} ({attempts} attempt{plural})",
        attempts=attempts,
        backoff=backoff,
    )


def later(
    job: Job,
    category: Category,
    what: str,
    attempts: int,
    reason: str | None,
    *,
    now: datetime,
    rand: float,
    max_wait: float,
    unhealed: bool = True,
) -> Outcome:
    """Pending, with the category's next out-of-process retry when it has one. Its
    synchronous attempts are spent: unhealed (unless the fault was not the service's)."""
    next_retry_at = schedule_retry(
        category, now=now, deferrals=job.deferrals, rand=rand, cap=max_wait
    )
    scheduled = next_retry_at is not None
    return Outcome(
        job,
        Status.PENDING,
        f"{what}; {'retry scheduled' if scheduled else 'admin review'}",
        attempts=attempts,
        next_retry_at=next_retry_at,
        deferrals=job.deferrals + scheduled,
        reason=reason,
        unhealed=unhealed,
    )


def rate_limit_window(
    job: Job, wait: float, attempts: int, reason: str | None, *, now: datetime
) -> Outcome:
    """Pending until the window ends; the whole service waits for it."""
    until = now + timedelta(seconds=wait)
    return Outcome(
        job,
        Status.PENDING,
        f"rate limited; retry after {round(wait)} s",
        attempts=attempts,
        next_retry_at=until,
        deferrals=job.deferrals + 1,
        reason=reason,
        rate_limited_until=until,
    )


def auth_failed(job: Job, action: str, attempts: int, reason: str | None) -> Outcome:
    """An auth recovery that did not heal: it counts against the user connection (the
    thresholds' verdict is settle()'s, in core/effects.py) and opens its circuit: its other
    auth failures wait for a probe."""
    if job.user_connection_id is None:
        return Outcome(job, Status.PENDING, action, attempts=attempts, reason=reason, unhealed=True)
    return Outcome(
        job,
        Status.PENDING,
        action,
        attempts=attempts,
        reason=reason,
        user_connection_failed=True,
        unhealed=True,
        held=True,
        probe_failed=job.probe,
        opens_user_circuit=not job.probe,
    )


def probe_failed(
    job: Job, attempts: int, reason: str | None, next_probe_at: datetime, *, counts: bool
) -> Outcome:
    """A circuit's probe found the service still failing: the job waits again, the next
    probe is further off, and the failed probe counts towards the thresholds when
    `counts` (see core/circuit.py's probe_counts)."""
    return Outcome(
        job,
        Status.PENDING,
        f"probe failed; waiting for {job.service_name} to recover (circuit open)",
        attempts=attempts,
        next_retry_at=next_probe_at,
        reason=reason,
        held=True,
        probe_failed=True,
        probe_counted=counts,
    )


def circuit_opened(job: Job, attempts: int, reason: str | None, next_probe_at: datetime) -> Outcome:
    """Its replays found the service down often enough to open the circuit: it waits with
    the others for the probes."""
    return Outcome(
        job,
        Status.PENDING,
        f"{job.service_name} is down: circuit opened; waiting for it to recover",
        attempts=attempts,
        next_retry_at=next_probe_at,
        reason=reason,
        held=True,
        opens_circuit=True,
    )


def crashed(job: Job, error_type: str, *, now: datetime) -> Outcome:
    """A recovery that raised: the record stays pending and is tried again later."""
    return Outcome(
        job,
        Status.PENDING,
        f"recovery crashed ({error_type}); retry scheduled",
        next_retry_at=now + CRASH_RETRY,
        deferrals=job.deferrals + 1,
    )
