"""Admin alerts as the JSON bodies Slack and Teams webhooks take: what each kind says, written
once, then rendered within each channel's limits with every third-party text defused."""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from selfheal.core.sanitize import printable
from selfheal.models import LISTED_USER_IDS, Alert, AlertKind, Channel

__all__ = ["render", "slack_message", "teams_message"]

_ELLIPSIS = "…"

# How much of each third-party text a message shows, in characters. Chosen so that the worst
# input (every character 4 UTF-8 bytes, or 2 characters once in JSON) still keeps a Slack
# message under 13,000 characters and a Teams body under 20 KB; plain text stays far below.
_NAME_LIMIT = 200
_USER_ID_LIMIT = 64
_USERS_LIMIT = 800
_PROSE_LIMIT = 500
_OPINION_LIMIT = 1000
_ERROR_LIMIT = 2_500
_COMMANDS_LIMIT = 1_500
_SUMMARY_LIMIT = 300
_FOOTER_LIMIT = 200
# Work on a huge text is bounded: only this much beyond the limit is ever read.
_WINDOW_MARGIN = 64

# Slack Block Kit: a header holds 150 characters and a button URL 3,000; the texts above are
# budgeted to fit a section (3,000) and a field (2,000).
_SLACK_HEADER_LIMIT = 150
_URL_LIMIT = 3_000

_TEAMS_CARD_TYPE = "application/vnd.microsoft.card.adaptive"
_TEAMS_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
# Cards of version 1.5 fail to render when the Workflows flow posts them.
_TEAMS_CARD_VERSION = "1.4"
_TEAMS_TITLE_COLOR = {
    AlertKind.FAILURE: "Attention",
    AlertKind.DIGEST: "Warning",
    AlertKind.ATTEMPT: "Warning",
    AlertKind.RECOVERED: "Good",
    AlertKind.DISABLED: "Attention",
}
_DASHBOARD_BUTTON = "Open dashboard"


# --------------------------------------------------------------------------- what is said


@dataclass(frozen=True, slots=True)
class _Fact:
    """A label we wrote, and a value that holds third-party text (cleaned, not yet escaped)."""

    label: str
    value: str
    limit: int


@dataclass(frozen=True, slots=True)
class _Content:
    """One alert, channel-independent: the channels escape and cut every value."""

    title: str
    summary: str  # the gist after the title, one line
    facts: tuple[_Fact, ...]
    literals: tuple[_Fact, ...]  # shown as written, monospaced: errors, commands
    footer: str  # event id and time


_BLANK_LINES = re.compile(r"\n\s*\n")


def _untrusted(raw: str, limit: int, *, one_line: bool = True) -> str:
    """Third-party text made printable and bounded: at most a window past the limit is read,
    and what lies beyond it is marked with an ellipsis for the final cut."""
    text = str(raw)
    window = text[: 2 * limit + _WINDOW_MARGIN]
    cleaned = printable(window)
    cleaned = " ".join(cleaned.split()) if one_line else _BLANK_LINES.sub("\n", cleaned.strip())
    return cleaned + _ELLIPSIS if len(window) < len(text) else cleaned


def _fact(label: str, raw: str, limit: int = _NAME_LIMIT, *, one_line: bool = True) -> _Fact:
    return _Fact(label, _untrusted(raw, limit, one_line=one_line), limit)


def _present(*facts: _Fact) -> tuple[_Fact, ...]:
    return tuple(fact for fact in facts if fact.value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS


def _utc(moment: datetime) -> datetime:
    # A naive time is the daemon's own, which is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _timestamp(moment: datetime) -> str:
    return f"{_utc(moment):%Y-%m-%d %H:%M:%S} UTC"


def _footer(alert: Alert) -> str:
    event = f"Event {alert.event_id}" if alert.event_id else ""
    at = _timestamp(alert.at) if alert.at else ""
    return " · ".join(part for part in (event, at) if part)


def _summary(head: str, tail: str) -> str:
    """The gist after the title, one line: 'stripe (auth): 401 Unauthorized'."""
    return _untrusted(f"{head}: {tail}" if tail else head, _SUMMARY_LIMIT)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _two_units(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big} {big_unit} {small} {small_unit}" if small else f"{big} {big_unit}"


def _duration(seconds: float | None) -> str:
    """'42 s', '3 min 5 s', '2 h 1 min', '3 d 4 h'; empty when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return _two_units(minutes, "min", secs, "s")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return _two_units(hours, "h", minutes, "min")
    days, hours = divmod(hours, 24)
    return _two_units(days, "d", hours, "h")


def _count(number: int) -> str:
    return f"{number:,}" if number > 0 else ""


def _second_opinion(alert: Alert) -> _Fact:
    """The LLM's reading: its text is shaped by the third party's, so it is untrusted too."""
    return _fact("Second opinion (LLM)", alert.second_opinion, _OPINION_LIMIT)


def _failure(alert: Alert) -> _Content:
    title = "Integration Failing Again" if alert.regression else "Integration Failure Detected"
    return _Content(
        title=title,
        summary=_summary(f"{alert.service_name} ({alert.category})", alert.error),
        facts=_present(
            _fact("Service", alert.service_name),
            _fact("Category", alert.category),
            _fact("Recovery plan", alert.plan, _PROSE_LIMIT),
            _fact("Status", alert.status),
            _fact("Failures so far", _count(alert.failures) if alert.failures > 1 else ""),
            _second_opinion(alert),
        ),
        literals=_present(_fact("Error", alert.error, _ERROR_LIMIT, one_line=False)),
        footer=_footer(alert),
    )


def _digest(alert: Alert) -> _Content:
    since = f"{_utc(alert.since):%H:%M} UTC" if alert.since else "the last message"
    more = f"and {alert.new_failures:,} more since {since}"
    return _Content(
        title="Integration Still Failing",
        summary=_summary(alert.service_name, more),
        facts=_present(
            _fact("Service", alert.service_name),
            _fact("Category", alert.category),
            _fact("New failures", more),
            _fact("Failures in all", _count(alert.failures)),
            _second_opinion(alert),
        ),
        literals=_present(_fact("Error", alert.error, _ERROR_LIMIT, one_line=False)),
        footer=_footer(alert),
    )


def _attempt(alert: Alert) -> _Content:
    attempt = f"{alert.attempt}/{alert.max_attempts}"
    return _Content(
        title="Recovery Attempt",
        summary=_summary(alert.service_name, f"{alert.action} (attempt {attempt})".lstrip()),
        facts=_present(
            _fact("Service", alert.service_name),
            _fact("Action", alert.action),
            _fact("Attempt", attempt),
        ),
        literals=_present(_fact("Previous error", alert.error, _ERROR_LIMIT, one_line=False)),
        footer=_footer(alert),
    )


def _recovered(alert: Alert) -> _Content:
    after = _duration(alert.recovered_after)
    gist = f"recovered after {after}" if after else "recovered"
    return _Content(
        title="Integration Recovered",
        summary=_summary(f"{alert.service_name} {gist}", alert.action),
        facts=_present(
            _fact("Service", alert.service_name),
            _fact("Resolution", alert.action),
            _fact("Time to recover", after),
            _fact("Failures healed", _count(alert.failures)),
        ),
        literals=_present(_fact("Original error", alert.error, _ERROR_LIMIT, one_line=False)),
        footer=_footer(alert),
    )


def _disabled(alert: Alert) -> _Content:
    listed = alert.user_ids[:LISTED_USER_IDS]
    more = alert.more_user_ids + len(alert.user_ids) - len(listed)
    users = ", ".join(_cut(_untrusted(user, _USER_ID_LIMIT), _USER_ID_LIMIT) for user in listed)
    if users and more > 0:
        users += f", and {more:,} more"
    scope = f" ({_plural(len(listed) + more, 'user connection')})" if listed else ""
    return _Content(
        title="Integration Disabled",
        summary=_summary(f"{alert.service_name}{scope}", alert.reason),
        facts=_present(
            _fact("Service", alert.service_name),
            _fact("User connections", users, _USERS_LIMIT),
            _fact("Reason", alert.reason, _PROSE_LIMIT),
            _fact("Failures", _count(alert.failures)),
            _second_opinion(alert),
        ),
        literals=_present(
            _fact("Action required", _enable_commands(alert), _COMMANDS_LIMIT, one_line=False)
        ),
        footer=_footer(alert),
    )


def _enable_commands(alert: Alert) -> str:
    """The command(s) that re-enable, quoted for a shell: a name like 'x; rm -rf ~' pasted
    into a terminal must stay one argument."""
    if alert.action:
        return alert.action
    enable = f"selfheal enable {shlex.quote(alert.service_name)}"
    if not alert.user_ids:
        return enable
    return "\n".join(
        f"{enable} --user {shlex.quote(user)}" for user in alert.user_ids[:LISTED_USER_IDS]
    )


_CONTENT: dict[AlertKind, Callable[[Alert], _Content]] = {
    AlertKind.FAILURE: _failure,
    AlertKind.DIGEST: _digest,
    AlertKind.ATTEMPT: _attempt,
    AlertKind.RECOVERED: _recovered,
    AlertKind.DISABLED: _disabled,
}


def _dashboard(url: str | None) -> str | None:
    """The dashboard link if it can be a button: http(s) and at most 3,000 characters (Slack
    rejects the whole message over a longer one); otherwise the message goes without it."""
    url = (url or "").strip()
    if len(url) > _URL_LIMIT or not url.lower().startswith(("https://", "http://")):
        return None
    return url


# --------------------------------------------------------------------------- defusing

# Look-alikes for the characters that would format: they read the same and format nothing.
_LOOKALIKES = {
    "*": "\u2217",  # asterisk operator
    "`": "\u02cb",  # modifier letter grave accent
    "_": "\u02cd",  # modifier letter low macron
    "~": "\u223c",  # tilde operator
    "[": "\uff3b",  # fullwidth square brackets
    "]": "\uff3d",
    "<": "\u2039",  # single angle quotation marks
    ">": "\u203a",
    "&": "\uff06",  # fullwidth ampersand
    "#": "\uff03",  # fullwidth number sign
    "+": "\uff0b",  # fullwidth plus sign
    "=": "\uff1d",  # fullwidth equals sign
    "-": "\u2010",  # hyphen
    ".": "\u2024",  # one dot leader
    ")": "\uff09",  # fullwidth right parenthesis
}


def _swap_last(match: re.Match[str]) -> str:
    found = match.group()
    return found[:-1] + _LOOKALIKES[found[-1]]


def _swaps(chars: str) -> dict[int, str]:
    return str.maketrans({char: _LOOKALIKES[char] for char in chars})


def _at_word_edge(chars: str) -> re.Pattern[str]:
    """These characters where they could open or close emphasis: not between two letters or
    digits (Slack and CommonMark both leave snake_case alone, so identifiers keep theirs)."""
    return re.compile(rf"(?<![^\W_])[{chars}]|[{chars}](?![^\W_])")


# Slack: third-party text is escaped (& < >), so no mention (<!channel>, <@U123>) or link
# (<http://evil|click>) can be formed, and its bold/italic/strike/code markers are replaced by
# look-alikes; errors and commands go into code blocks, where a third-party backtick becomes
# a look-alike so it cannot close the block. Every mrkdwn object is verbatim: Slack does not
# auto-link channel names or parse mentions in plain text.
_SLACK_SWAPS = _swaps("*`")
_SLACK_EMPHASIS_EDGE = _at_word_edge("_~")


def _slack_escape(text: str, limit: int) -> str:
    """Escaped for mrkdwn, then cut to the limit without splitting an entity like '&amp;'."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if len(escaped) <= limit:
        return escaped
    kept = escaped[: limit - 1]
    entity = kept.rfind("&", max(0, len(kept) - len("&amp;") + 1))
    if entity >= 0 and ";" not in kept[entity:]:
        kept = kept[:entity]
    return kept + _ELLIPSIS


def _slack_text(text: str, limit: int) -> str:
    defused = _SLACK_EMPHASIS_EDGE.sub(_swap_last, text.translate(_SLACK_SWAPS))
    return _slack_escape(defused, limit)


def _slack_code(text: str, limit: int) -> str:
    return "```" + _slack_escape(text.replace("`", _LOOKALIKES["`"]), limit) + "```"


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _slack_field(fact: _Fact) -> dict[str, Any]:
    return _mrkdwn(f"*{fact.label}*\n{_slack_text(fact.value, fact.limit)}")


def _slack_literal(fact: _Fact) -> dict[str, Any]:
    return {
        "type": "section",
        "text": _mrkdwn(f"*{fact.label}*\n{_slack_code(fact.value, fact.limit)}"),
    }


# Teams: Adaptive Card TextBlocks and Fact values render a Markdown subset (bold, italic,
# lists, links), and backslash escapes are not honoured alike everywhere (Android and iOS have
# shown the backslash: MicrosoftDocs/msteams-docs#5793, microsoft/AdaptiveCards#5758). So
# markers become look-alikes instead: brackets always (no [text](url) or [text][ref] link, no
# image), angle brackets (no <url> autolink, no HTML where a renderer takes it), '*' and
# backticks, '_' at a word's edge, '&' opening a character reference, and '#', '+', '-', '=',
# '1.' and '1)' opening a line (no header, list or rule). '~' stays: strikethrough is not in
# the subset. A bare URL may still be linked, but then it shows itself.
_TEAMS_SWAPS = _swaps("*`[]<>")
_TEAMS_EMPHASIS_EDGE = _at_word_edge("_")
_CHARACTER_REFERENCE = re.compile(r"&(?=#?[0-9A-Za-z]{1,32};)")
_LINE_START = re.compile(r"^[ \t]*(?:[#+=-]|\d{1,9}[.)])", re.MULTILINE)


def _teams_text(text: str, limit: int) -> str:
    defused = _TEAMS_EMPHASIS_EDGE.sub(_swap_last, text.translate(_TEAMS_SWAPS))
    defused = _LINE_START.sub(_swap_last, _CHARACTER_REFERENCE.sub(_swap_last, defused))
    # A single newline is a line break only inside lists; two always are.
    return _cut(defused, limit).replace("\n", "\n\n")


def _text_block(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


# --------------------------------------------------------------------------- the channels


def slack_message(alert: Alert, dashboard_url: str | None = None) -> dict[str, Any]:
    """An incoming-webhook body: a one-line `text` for notifications, and Block Kit blocks."""
    content = _CONTENT[alert.kind](alert)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(content.title, _SLACK_HEADER_LIMIT)},
        }
    ]
    if content.facts:
        blocks.append({"type": "section", "fields": [_slack_field(f) for f in content.facts]})
    blocks += [_slack_literal(fact) for fact in content.literals]
    if content.footer:
        footer = _mrkdwn(_slack_text(content.footer, _FOOTER_LIMIT))
        blocks.append({"type": "context", "elements": [footer]})
    url = _dashboard(dashboard_url)
    if url:
        button = {"type": "button", "text": {"type": "plain_text", "text": _DASHBOARD_BUTTON}}
        blocks.append({"type": "actions", "elements": [{**button, "url": url}]})
    summary = _slack_text(f"{content.title}: {content.summary}", _SUMMARY_LIMIT)
    return {"text": summary, "blocks": blocks}


def teams_message(alert: Alert, dashboard_url: str | None = None) -> dict[str, Any]:
    """A body for the Workflows webhook: one Adaptive Card 1.4, the dashboard as its action."""
    content = _CONTENT[alert.kind](alert)
    title = _text_block(
        content.title, size="Large", weight="Bolder", color=_TEAMS_TITLE_COLOR[alert.kind]
    )
    body: list[dict[str, Any]] = [title]
    if content.facts:
        facts = [{"title": f.label, "value": _teams_text(f.value, f.limit)} for f in content.facts]
        body.append({"type": "FactSet", "facts": facts})
    for fact in content.literals:
        body += [
            _text_block(fact.label, weight="Bolder", spacing="Medium"),
            _text_block(_teams_text(fact.value, fact.limit), fontType="Monospace"),
        ]
    if content.footer:
        body.append(
            _text_block(_teams_text(content.footer, _FOOTER_LIMIT), isSubtle=True, size="Small")
        )
    url = _dashboard(dashboard_url)
    actions = [{"type": "Action.OpenUrl", "title": _DASHBOARD_BUTTON, "url": url}] if url else []
    card = {
        "$schema": _TEAMS_SCHEMA,
        "type": "AdaptiveCard",
        "version": _TEAMS_CARD_VERSION,
        "body": body,
        "actions": actions,
    }
    attachment = {"contentType": _TEAMS_CARD_TYPE, "contentUrl": None, "content": card}
    return {"type": "message", "attachments": [attachment]}


_MESSAGES: dict[Channel, Callable[[Alert, str | None], dict[str, Any]]] = {
    Channel.SLACK: slack_message,
    Channel.TEAMS: teams_message,
}


def render(channel: Channel, alert: Alert, dashboard_url: str | None = None) -> bytes:
    """The body to POST to the channel's webhook: compact JSON in UTF-8."""
    message = _MESSAGES[channel](alert, dashboard_url)
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
