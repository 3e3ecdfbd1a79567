"""The `selfheal status` table (also the demo's closing one): the KPIs first, then what
needs a human."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TextIO

from selfheal.models import utcnow

__all__ = ["duration", "print_status"]


def print_status(status: dict[str, Any], out: TextIO) -> None:
    """`selfheal status` on a terminal: the KPIs first, then what needs a human."""
    rate = status["recovery_rate_24h"]
    rows = [
        ("active failures (pending)", f"{status['pending']:,}", _age(status["oldest_pending"])),
        ("disabled integrations", f"{status['disabled']:,}", ""),
        ("failures, last 24 h", f"{status['failures_24h']:,}", f"{status['last_hour']:,} in 1 h"),
        ("recovery rate, 24 h", "-" if rate is None else f"{rate:.1%}",
         f"{status['resolved_24h']:,} resolved"),
        ("time to recover, 24 h", duration(status["mttr_seconds"]),
         f"p90 {duration(status['ttr_p90_seconds'])}"),
        ("inbox (to diagnose)", f"{status['inbox']:,}", _age(status["oldest_inbox"])),
        ("due now", f"{status['due']:,}", ""),
        ("open circuits", f"{len(status['circuits']):,}", ""),
        ("alert groups open", f"{status['alert_groups']['open_groups']:,}",
         f"outbox {status['alert_groups']['outbox']:,}"),
    ]  # fmt: skip
    for label, value, note in rows:
        out.write(f"{label:<26} {value:>10}  {note}\n".rstrip() + "\n")
    categories = sorted(set(status["by_category"]) | set(status["pending_by_category"]))
    if categories:
        out.write("\nby category, 24 h           resolved    pending   disabled   pending (all)\n")
    for category in categories:
        counts = status["by_category"].get(category, {})
        resolved, pending, disabled = (counts.get(k, 0) for k in _STATUSES)
        every = status["pending_by_category"].get(category, 0)
        out.write(f"  {category:<24} {resolved:>10,} {pending:>10,} {disabled:>10,} {every:>15,}\n")
    if status["top_failing_services"]:
        out.write("\ntop failing services, 24 h  failures   resolved    pending\n")
    for service in status["top_failing_services"]:
        off = "" if service["enabled"] else "  (disabled)"
        out.write(
            f"  {service['service_name']:<24} {service['failures_24h']:>9,} "
            f"{service['resolved_24h']:>10,} {service['pending_24h']:>10,}{off}\n"
        )
    needs_a_human = status["disabled_integrations"] or status["circuits"]
    if needs_a_human:
        out.write("\n")
    for target in status["disabled_integrations"]:
        who = f" user {target['user_id']}" if target["user_id"] else ""
        out.write(f"disabled  {target['service_name']}{who}: {target['reason'] or '-'}\n")
    for circuit in status["circuits"]:
        who = f" user {circuit['user_id']}" if circuit["user_id"] else ""
        out.write(
            f"circuit   {circuit['service_name']}{who} open since {circuit['opened_at']}: "
            f"{circuit['failures_waiting']} failures waiting, {circuit['failed_probes']} "
            f"failed probes, next probe {circuit['next_probe_at'] or '-'}\n"
        )
    alerts = status["alert_groups"]
    for group in alerts["groups"]:
        said = "announced" if group["alerted_at"] else "waiting"
        again = ", failing again" if group["regression"] else ""
        out.write(
            f"group     {group['service_name']} {group['category']} {group['error_code']}: "
            f"{group['failures']} failures since {group['opened_at']} ({said}{again})\n"
        )
    for channel in alerts["channels"]:
        health = (
            f"BROKEN since {channel['broken_at']}: {channel['broken_reason']}"
            if channel["broken_at"]
            else f"ok (last delivery {channel['delivered_at'] or '-'})"
        )
        out.write(
            f"channel   {channel['channel']}: {health}; {channel['queued']} queued, "
            f"{channel['dead']} dead\n"
        )
    llm = status["llm"]
    state = f"on ({llm['model']})" if llm["enabled"] else f"off: {llm['off_reason']}"
    out.write(
        f"llm       {state}; {llm['calls']} questions in 24 h: {llm['answered']} answered, "
        f"{llm['failed']} failed, {llm['waiting']} waiting; last hour "
        f"{llm['last_hour']}/{llm['max_calls_per_hour']}; latency mean "
        f"{llm['mean_latency_ms'] or '-'} ms, p90 {llm['p90_latency_ms'] or '-'} ms; tokens "
        f"{llm['prompt_tokens']} in, {llm['completion_tokens']} out; retries stopped in "
        f"{llm['groups_retry_stopped']} groups\n"
    )
    for reason, calls in llm["failures"].items():
        out.write(f"  failed  {reason}: {calls}\n")


_STATUSES = ("resolved", "pending", "disabled")


def duration(value: float | None) -> str:
    """Seconds as a person reads them at a glance: 4.2 s, 3.5 min, 2.0 h (- for none)."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 3600 else f"{value / 3600:.1f} h"


def _age(moment: datetime | None) -> str:
    return "" if moment is None else f"oldest {duration((utcnow() - moment).total_seconds())} ago"
