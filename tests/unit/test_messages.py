"""Admin messages: what each alert says in Slack and Teams, within limits, with third-party
text defused."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfheal.core.messages import _slack_escape, render, slack_message, teams_message
from selfheal.models import Alert, AlertKind, Channel

AT = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
SINCE = datetime(2026, 12, 3, 9, 12, tzinfo=UTC)
EVENT = uuid.UUID("0b9f8e2a-47c1-4d55-9a8e-1f2b3c4d5e6f")
USER = "5a1c9e0f-3b7d-4e2a-8c6f-9d0e1f2a3b4c"
DASHBOARD = "https://selfheal.example.com/events/0b9f8e2a"
EVIL = "<!channel> <http://evil.example|click> & <@U123>"
FORGED_LINK = "[click](http://evil.example)"
BROKEN_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\s*[(\[]")


def alert(kind: AlertKind, **fields: Any) -> Alert:
    values: dict[str, Any] = {
        "service_name": "stripe",
        "category": "auth",
        "error": "401 Unauthorized: token expired",
        "at": AT,
        "event_id": EVENT,
    }
    values.update(fields)
    return Alert(kind=kind, **values)


FAILURE = alert(
    AlertKind.FAILURE, plan="refresh the token, then replay", status="pending", failures=3
)
DIGEST = alert(AlertKind.DIGEST, new_failures=431, since=SINCE, failures=512)
ATTEMPT = alert(AlertKind.ATTEMPT, action="refresh token", attempt=2, max_attempts=3)
RECOVERED = alert(
    AlertKind.RECOVERED, action="refreshed the token", recovered_after=185, failures=7
)
DISABLED = alert(
    AlertKind.DISABLED, reason="5 auth failures in 10 minutes", failures=5, user_ids=(USER,)
)
EVERY_KIND = [FAILURE, DIGEST, ATTEMPT, RECOVERED, DISABLED]


def body(channel: Channel, message: Alert, dashboard_url: str | None = None) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(render(channel, message, dashboard_url))
    return parsed


def strings(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every string in a JSON value, with the keys and indexes that lead to it."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from strings(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from strings(child, (*path, index))


def readable(channel: Channel, message: Alert, dashboard_url: str | None = None) -> str:
    """All the text a reader sees (Slack texts; Teams TextBlocks and facts), one string."""
    shown = {"text", "title", "value"}
    parsed = body(channel, message, dashboard_url)
    return "\n".join(text for path, text in strings(parsed) if path[-1] in shown)


def slack_texts(message: dict[str, Any]) -> list[str]:
    return [text for path, text in strings(message) if path[-1] == "text"]


def card(message: dict[str, Any]) -> dict[str, Any]:
    content: dict[str, Any] = message["attachments"][0]["content"]
    return content


def huge(kind: AlertKind, char: str = "a") -> Alert:
    return Alert(
        kind=kind,
        service_name=char * 10_000,
        category=char * 1_000,
        error=char * 100_000,
        at=AT,
        since=SINCE,
        event_id=EVENT,
        failures=10**9,
        new_failures=431,
        plan=char * 10_000,
        status=char * 10_000,
        action="" if kind is AlertKind.DISABLED else char * 10_000,
        attempt=2,
        recovered_after=1e9,
        reason=char * 10_000,
        user_ids=tuple(f"{char * 200}{number}" for number in range(5_000)),
        more_user_ids=10**6,
    )


# --- what each message says ---------------------------------------------------------------


@pytest.mark.parametrize("channel", list(Channel))
def test_a_failure_tells_what_failed_how_it_will_heal_and_where_it_stands(
    channel: Channel,
) -> None:
    text = readable(channel, FAILURE)
    for expected in (
        "Integration Failure Detected",
        "stripe",
        "auth",
        "401 Unauthorized: token expired",
        "refresh the token, then replay",
        "pending",
        str(EVENT),
        "2026-12-03 10:00:00 UTC",
        "Failures so far",
    ):
        assert expected in text
    assert "Failures so far" not in readable(channel, replace(FAILURE, failures=1))


@pytest.mark.parametrize("channel", list(Channel))
def test_a_group_that_had_healed_is_said_to_fail_again(channel: Channel) -> None:
    text = readable(channel, replace(FAILURE, regression=True))
    assert "Integration Failing Again" in text
    assert "Integration Failure Detected" not in text


@pytest.mark.parametrize("channel", list(Channel))
def test_a_digest_counts_the_failures_since_the_last_message(channel: Channel) -> None:
    text = readable(channel, DIGEST)
    assert "Integration Still Failing" in text
    assert "and 431 more since 09:12 UTC" in text
    assert "512" in text


@pytest.mark.parametrize("channel", list(Channel))
def test_an_attempt_shows_the_action_its_number_and_the_previous_error(
    channel: Channel,
) -> None:
    text = readable(channel, ATTEMPT)
    for expected in ("Recovery Attempt", "stripe", "refresh token", "2/3", "token expired"):
        assert expected in text


@pytest.mark.parametrize("channel", list(Channel))
def test_a_recovery_shows_the_resolution_the_time_it_took_and_what_healed(
    channel: Channel,
) -> None:
    text = readable(channel, RECOVERED)
    for expected in ("Integration Recovered", "stripe", "refreshed the token", "3 min 5 s"):
        assert expected in text
    assert "401 Unauthorized: token expired" in text
    assert "Failures healed" in text


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(42, "42 s"), (42.4, "42 s"), (180, "3 min"), (185, "3 min 5 s"), (7_260, "2 h 1 min")],
)
def test_the_time_to_recover_is_written_for_people(seconds: float, shown: str) -> None:
    text = readable(Channel.SLACK, replace(RECOVERED, recovered_after=seconds))
    assert f"*Time to recover*\n{shown}\n" in text


@pytest.mark.parametrize("channel", list(Channel))
def test_a_disabled_connection_comes_with_the_command_that_enables_it_again(
    channel: Channel,
) -> None:
    text = readable(channel, replace(DISABLED, more_user_ids=3))
    for expected in ("Integration Disabled", "stripe", "5 auth failures in 10 minutes", USER):
        assert expected in text
    assert f"selfheal enable stripe --user {USER}" in text
    assert "and 3 more" in text


@pytest.mark.parametrize("channel", list(Channel))
def test_a_disabled_service_is_enabled_with_the_service_alone(channel: Channel) -> None:
    text = readable(channel, replace(DISABLED, user_ids=()))
    assert "selfheal enable stripe" in text
    assert "--user" not in text


@pytest.mark.parametrize("channel", list(Channel))
def test_the_command_the_alert_gives_is_the_one_shown(channel: Channel) -> None:
    given_command = "selfheal enable stripe --user 42"
    text = readable(channel, replace(DISABLED, action=given_command))
    assert given_command in text
    assert f"--user {USER}" not in text


@pytest.mark.parametrize("channel", list(Channel))
def test_a_service_name_cannot_inject_into_the_enable_command(channel: Channel) -> None:
    text = readable(channel, replace(DISABLED, service_name="x; rm -rf ~", user_ids=()))
    assert "selfheal enable 'x; rm -rf ~'" in text


# --- the dashboard ------------------------------------------------------------------------


def dashboard_links(channel: Channel, message: dict[str, Any]) -> list[str]:
    if channel is Channel.SLACK:
        actions = [block for block in message["blocks"] if block["type"] == "actions"]
        return [button["url"] for block in actions for button in block["elements"]]
    return [action["url"] for action in card(message)["actions"]]


@pytest.mark.parametrize("channel", list(Channel))
@pytest.mark.parametrize("message", EVERY_KIND, ids=lambda message: message.kind.value)
def test_the_dashboard_button_is_there_only_when_there_is_a_dashboard(
    channel: Channel, message: Alert
) -> None:
    assert dashboard_links(channel, body(channel, message, DASHBOARD)) == [DASHBOARD]
    assert dashboard_links(channel, body(channel, message)) == []
    assert "selfheal.example.com" not in render(channel, message).decode()


@pytest.mark.parametrize("channel", list(Channel))
@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://x.example/" + "a" * 3_000])
def test_a_dashboard_url_that_cannot_be_a_button_is_left_out(channel: Channel, url: str) -> None:
    assert dashboard_links(channel, body(channel, FAILURE, url)) == []


# --- Slack --------------------------------------------------------------------------------


@pytest.mark.parametrize("message", EVERY_KIND, ids=lambda message: message.kind.value)
def test_slack_gets_a_one_line_fallback_for_notifications(message: Alert) -> None:
    fallback = body(Channel.SLACK, message)["text"]
    assert "\n" not in fallback
    assert fallback.startswith(("Integration", "Recovery"))
    assert "stripe" in fallback


@pytest.mark.parametrize("char", ["a", "&", '"', "😀"])
@pytest.mark.parametrize("kind", list(AlertKind))
def test_slack_limits_hold_for_huge_inputs(kind: AlertKind, char: str) -> None:
    serialized = render(Channel.SLACK, huge(kind, char), DASHBOARD).decode()
    message = json.loads(serialized)
    blocks = message["blocks"]
    assert len(blocks) <= 50
    assert len(serialized) < 13_000
    header = [block for block in blocks if block["type"] == "header"]
    assert all(len(block["text"]["text"]) <= 150 for block in header)
    for block in blocks:
        if block["type"] != "section":
            continue
        assert len(block.get("text", {}).get("text", "")) <= 3_000
        assert len(block.get("fields", [])) <= 10
        assert all(len(field["text"]) <= 2_000 for field in block.get("fields", []))
    assert all(len(url) <= 3_000 for url in dashboard_links(Channel.SLACK, message))
    assert message["text"].endswith("…")
    service_field = blocks[1]["fields"][0]["text"]
    assert service_field.startswith("*Service*")
    assert service_field.endswith("…")


@pytest.mark.parametrize("kind", list(AlertKind))
def test_a_slack_message_of_huge_plain_text_stays_under_8000_characters(
    kind: AlertKind,
) -> None:
    assert len(render(Channel.SLACK, huge(kind), DASHBOARD).decode()) < 8_000


@pytest.mark.parametrize("message", EVERY_KIND, ids=lambda message: message.kind.value)
def test_a_third_party_text_cannot_mention_the_channel_or_forge_a_link_in_slack(
    message: Alert,
) -> None:
    hostile = replace(message, service_name=EVIL, error=EVIL, action=EVIL, reason=EVIL)
    texts = slack_texts(slack_message(hostile, DASHBOARD))
    # We never write '<' ourselves: no mention, no special command, no link of any kind.
    assert not any("<" in text or ">" in text for text in texts)
    assert not any(BROKEN_ENTITY.search(text) for text in texts)
    mentioning = [text for text in texts if "channel" in text]
    assert mentioning
    assert all("&lt;!channel&gt;" in text and "&amp;" in text for text in mentioning)


def test_a_third_party_error_cannot_close_its_code_block() -> None:
    error = "```\n*bold* `tick` ``` <!here>"
    [section] = [
        block["text"]["text"]
        for block in slack_message(replace(FAILURE, error=error))["blocks"]
        if block["type"] == "section" and "text" in block
    ]
    assert section.count("```") == 2
    assert section.endswith("```")


def test_third_party_emphasis_is_defused_but_identifiers_keep_their_underscores() -> None:
    hostile = replace(FAILURE, service_name="google_drive", plan="*bold* _italic_ ~strike~")
    texts = "\n".join(slack_texts(slack_message(hostile)))
    assert "google_drive" in texts
    for marked in ("*bold*", "_italic_", "~strike~"):
        assert marked not in texts


def test_mrkdwn_with_third_party_text_is_not_auto_parsed() -> None:
    mrkdwn = list(mrkdwn_objects(slack_message(FAILURE)))
    assert mrkdwn
    assert all(node["verbatim"] is True for node in mrkdwn)


def mrkdwn_objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn":
            yield node
        for child in node.values():
            yield from mrkdwn_objects(child)
    elif isinstance(node, list):
        for child in node:
            yield from mrkdwn_objects(child)


@settings(max_examples=400)
@given(text=st.text(alphabet=st.sampled_from("&<>a;é")), limit=st.integers(1, 60))
def test_a_cut_never_leaves_a_broken_entity(text: str, limit: int) -> None:
    cut = _slack_escape(text, limit)
    assert len(cut) <= limit
    assert not BROKEN_ENTITY.search(cut)
    shown = cut.removesuffix("…").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert text.startswith(shown)


@settings(max_examples=100)
@given(service=st.text(max_size=400), error=st.text(max_size=4_000))
def test_no_third_party_text_breaks_the_slack_message(service: str, error: str) -> None:
    hostile = replace(FAILURE, service_name=service, error=error)
    message = json.loads(render(Channel.SLACK, hostile))
    for text in slack_texts(message):
        assert not BROKEN_ENTITY.search(text)
        assert "<" not in text


# --- Teams --------------------------------------------------------------------------------


@pytest.mark.parametrize("message", EVERY_KIND, ids=lambda message: message.kind.value)
def test_teams_gets_an_adaptive_card_1_4_the_workflow_can_post(message: Alert) -> None:
    parsed = body(Channel.TEAMS, message, DASHBOARD)
    assert parsed["type"] == "message"
    [attachment] = parsed["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    content = attachment["content"]
    assert content["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert (content["type"], content["version"]) == ("AdaptiveCard", "1.4")
    assert content["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open dashboard", "url": DASHBOARD}
    ]


@pytest.mark.parametrize("char", ["a", '"', "[", "😀"])
@pytest.mark.parametrize("kind", list(AlertKind))
def test_a_teams_body_stays_under_20_kb_for_huge_inputs(kind: AlertKind, char: str) -> None:
    serialized = render(Channel.TEAMS, huge(kind, char), DASHBOARD)
    assert len(serialized) < 16_000 if char == "a" else len(serialized) < 20_000
    assert "…" in serialized.decode()


def test_third_party_text_reaches_teams_only_as_text_blocks_and_fact_values() -> None:
    marker = "MARKER"
    hostile = replace(
        DISABLED, service_name=marker, error=marker, reason=marker, user_ids=(marker,)
    )
    content = card(teams_message(hostile, DASHBOARD))
    places = set()
    for path, text in strings(content):
        if marker in text:
            holder = content
            for step in path[:-1]:
                holder = holder[step]
            is_fact = len(path) > 2 and path[-3] == "facts"
            places.add("fact value" if is_fact else f"{holder.get('type')}.{path[-1]}")
    assert places == {"TextBlock.text", "fact value"}


@pytest.mark.parametrize("message", EVERY_KIND, ids=lambda message: message.kind.value)
def test_a_forged_markdown_link_does_not_survive_in_teams(message: Alert) -> None:
    forged = f"{FORGED_LINK} <a href='http://evil.example'>click</a> [x][1]\n[1]: http://evil"
    hostile = replace(message, service_name=FORGED_LINK, error=forged, action=forged)
    for _, text in strings(card(teams_message(hostile))["body"]):
        assert not MARKDOWN_LINK.search(text)
        assert "<a" not in text


def test_third_party_markdown_cannot_format_a_teams_card() -> None:
    error = "**bold** _italic_ `code`\n# Header\n- item\n1. first\n> quote"
    [error_block] = [
        block["text"]
        for block in card(teams_message(replace(FAILURE, error=error)))["body"]
        if block.get("fontType") == "Monospace"
    ]
    for marked in ("**", "_italic_", "`", "\n# ", "\n- ", "\n1. ", "\n> "):
        assert marked not in "\n" + error_block
    assert "bold" in error_block
    assert "Header" in error_block


# --- the body on the wire -----------------------------------------------------------------


@pytest.mark.parametrize("channel", list(Channel))
def test_the_body_is_compact_utf8_json(channel: Channel) -> None:
    message = replace(FAILURE, service_name="café")
    built = slack_message(message) if channel is Channel.SLACK else teams_message(message)
    expected = json.dumps(built, ensure_ascii=False, separators=(",", ":")).encode()
    assert render(channel, message) == expected
    assert "café".encode() in expected


@pytest.mark.parametrize("channel", list(Channel))
def test_control_characters_and_lone_surrogates_never_reach_the_wire(channel: Channel) -> None:
    message = replace(FAILURE, error="a\x00b\x1b[31mc\u202ed\ud800e")
    sent = render(channel, message).decode()
    for unwanted in ("\\u0000", "\\u001b", "\u202e", "\\ud800"):
        assert unwanted not in sent
    assert "\ufffd" in sent
