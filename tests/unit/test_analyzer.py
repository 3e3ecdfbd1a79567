"""Unit tests for the failure analyzer: a corpus of real provider errors, ordering, safety."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfheal.core import rules
from selfheal.core.analyzer import MAX_SIGNAL_LENGTH, MAX_SIGNALS, analyze
from selfheal.core.rules import RuleError
from selfheal.models import Analysis, Category, Failure

CASES_PATH = Path(__file__).with_name("analyzer_cases.jsonl")


def _load_cases() -> list[dict[str, Any]]:
    with CASES_PATH.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


CASES = _load_cases()


def _analyze(
    service_name: str = "",
    http_status: int | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    response_headers: dict[str, str] | None = None,
) -> Analysis:
    return analyze(
        Failure.coerce(service_name, http_status, error_code, error_message, response_headers)
    )


def _case_id(case: dict[str, Any]) -> str:
    return f"{case['service_name']}-{case['http_status']}-{case['error_code'] or ''}"


def test_corpus_is_broad() -> None:
    services = {case["service_name"] for case in CASES}
    assert len(CASES) >= 150
    assert {"slack", "stripe", "github", "google", "twilio", "discord"} <= services
    assert {case["expected"] for case in CASES} == {category.value for category in Category}


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_real_provider_errors_are_classified(case: dict[str, Any]) -> None:
    result = _analyze(
        case["service_name"],
        case["http_status"],
        case["error_code"],
        case["error_message"],
        case["response_headers"],
    )

    assert result.category.value == case["expected"], (case.get("note"), result)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_every_analysis_is_well_formed(case: dict[str, Any]) -> None:
    result = _analyze(
        case["service_name"],
        case["http_status"],
        case["error_code"],
        case["error_message"],
        case["response_headers"],
    )

    assert 0.0 <= result.confidence <= 1.0
    assert result.advice
    assert len(result.signals) <= MAX_SIGNALS
    assert all(0 < len(signal) <= MAX_SIGNAL_LENGTH for signal in result.signals)
    if result.category is not Category.UNKNOWN:
        assert result.signals


def test_agreeing_signals_raise_confidence() -> None:
    status_only = _analyze("api", 429)
    status_and_header = _analyze("api", 429, response_headers={"retry-after": "30"})
    everything = _analyze(
        "slack",
        429,
        "ratelimited",
        '{"ok":false,"error":"ratelimited"}',
        {"retry-after": "30"},
    )

    assert status_only.category is Category.RATE_LIMIT
    assert status_only.confidence < status_and_header.confidence < everything.confidence
    assert everything.confidence >= 0.9


def test_nothing_to_go_on_is_unknown_with_low_confidence() -> None:
    result = _analyze()

    assert result.category is Category.UNKNOWN
    assert result.confidence <= 0.2


def test_status_alone_is_moderate() -> None:
    for status in (401, 404, 429, 502):
        assert 0.4 <= _analyze("api", status).confidence <= 0.75


def test_permission_errors_are_auth_with_lower_confidence_than_invalid_tokens() -> None:
    permission = _analyze(
        "google",
        403,
        "PERMISSION_DENIED",
        "Request had insufficient authentication scopes.",
    )
    expired = _analyze(
        "graph", 401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid."
    )

    assert permission.category is expired.category is Category.AUTH
    assert permission.confidence < expired.confidence
    assert "scope" in permission.advice


def test_conflicting_evidence_lowers_confidence() -> None:
    clean = _analyze("github", 403, None, '{"message":"Resource not accessible by integration"}')
    contradicted = _analyze(
        "github",
        403,
        None,
        '{"message":"Resource not accessible by integration"}',
        {"retry-after": "60"},
    )

    assert clean.category is Category.AUTH
    assert contradicted.confidence < clean.confidence


def test_github_403_with_exhausted_quota_is_a_rate_limit_not_a_permission_problem() -> None:
    result = _analyze(
        "github",
        403,
        None,
        '{"message":"API rate limit exceeded for user ID 1."}',
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1714650000"},
    )

    assert result.category is Category.RATE_LIMIT
    assert "header:x-ratelimit-remaining:0" in result.signals


def test_oauth_invalid_grant_on_400_is_auth_and_asks_for_reauthorization() -> None:
    result = _analyze(
        "google_oauth",
        400,
        None,
        '{"error":"invalid_grant","error_description":"Token has been expired or revoked."}',
    )

    assert result.category is Category.AUTH
    assert "body_code:invalid_grant" in result.signals
    assert "re-authorize" in result.advice


def test_slack_ok_false_inside_a_200_is_reported_as_a_provider_signal() -> None:
    result = _analyze("slack", 200, None, '{"ok":false,"error":"invalid_auth"}')

    assert result.category is Category.AUTH
    assert "provider:slack:ok_false" in result.signals


def test_a_traceback_is_read_at_its_end_too() -> None:
    frames = '  File "/srv/app.py", line 12, in send\n    do_it()\n' * 600  # about 30 KiB
    result = _analyze(
        "webhook", None, None, f"Traceback (most recent call last):\n{frames}ConnectionResetError"
    )

    assert result.category is Category.NETWORK


@pytest.mark.parametrize(
    "headers",
    [
        {"ratelimit": "limit=100, remaining=0, reset=30"},
        {"ratelimit": '"default";r=50;t=5, "daily";r=0;t=3600'},
        {"x-ratelimit-remaining": '"0"'},
    ],
)
def test_a_header_saying_no_quota_is_left_makes_a_403_a_rate_limit(
    headers: dict[str, str],
) -> None:
    result = _analyze("api", 403, None, None, headers)

    assert result.category is Category.RATE_LIMIT


def test_a_message_that_mentions_a_provider_does_not_switch_its_numeric_table() -> None:
    # 20001 is a Twilio validation error and a Discord permission error.
    body = '{"code": 20001, "more_info": "https://discord.com/developers/docs/topics/opcodes"}'

    relayed = _analyze("webhook", None, None, body)
    from_discord = _analyze("discord", None, None, body)
    from_twilio = _analyze("twilio_sms", None, None, body)

    assert relayed.category is Category.UNKNOWN
    assert "body_code:20001" not in relayed.signals
    assert from_discord.category is Category.AUTH
    assert from_twilio.category is Category.DATA


def test_a_message_that_mentions_slack_is_not_reported_as_a_slack_answer() -> None:
    body = "Forwarding to Slack failed: {'ok': False, 'error': 'invalid_auth'}"

    assert "body:ok_false" in _analyze("webhook", None, None, body).signals
    assert "provider:slack:ok_false" in _analyze("slack", None, None, body).signals


SECRETS = [
    "sk_live_51HcQeZ2eZvKYlo2C8eN3qT0kPp",
    "xoxb-2048-1234567890-AbCdEfGhIjKlMnOpQrStUvWx",
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "ya29.a0AfH6SMBx3yK-veryLongGoogleAccessToken",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_signals_never_carry_tokens_from_the_failure(secret: str) -> None:
    result = _analyze(
        "stripe",
        401,
        secret,
        f'{{"error":{{"type":"invalid_request_error",'
        f'"message":"Invalid API Key provided: {secret}","code":"{secret}"}}}} '
        f"Authorization: Bearer {secret}",
        {"www-authenticate": f'Bearer error="invalid_token", token="{secret}"', "x-token": secret},
    )

    assert result.category is Category.AUTH
    fragments = {secret[i : i + 12].lower() for i in range(len(secret) - 11)}
    for signal in result.signals:
        assert not any(fragment in signal.lower() for fragment in fragments), signal
    assert secret not in result.advice


def test_signals_are_short_machine_readable_names() -> None:
    result = _analyze(
        "google",
        403,
        "rateLimitExceeded",
        '{"error":{"code":403,"message":"Rate Limit Exceeded","status":"PERMISSION_DENIED",'
        '"errors":[{"reason":"rateLimitExceeded"}]}}',
        {"retry-after": "10", "x-ratelimit-remaining": "0"},
    )

    pattern = re.compile(r"^[a-z_]+:[\w.:*\- ]+$", re.ASCII)
    assert result.signals
    assert all(pattern.match(signal) for signal in result.signals), result.signals


def test_huge_message_is_classified_from_its_head_and_tail() -> None:
    # Failure.coerce keeps 64 KiB; the clue sits at the end of what it kept.
    result = _analyze("api", None, None, "x" * 60_000 + " read ECONNRESET")

    assert result.category is Category.NETWORK


def test_analysis_is_deterministic() -> None:
    case = CASES[0]
    args = (
        case["service_name"],
        case["http_status"],
        case["error_code"],
        case["error_message"],
        case["response_headers"],
    )

    assert _analyze(*args) == _analyze(*args)


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(),
    st.binary(max_size=200),
)
texts = st.one_of(
    st.none(),
    st.text(),
    st.sampled_from(
        [
            '{"ok":false,"error":"invalid_auth"}',
            '{"code": 20003, "status": 401}',
            "error=invalid_grant&x=1",
            "Request failed with status code 999",
            "status code 429",
            '"retry_after": 1',
            "x" * 70_000,
            "\ud800\x00\u202e" * 100,
        ]
    ),
    anything,
)
header_maps = st.one_of(
    anything,
    st.dictionaries(
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(
                [
                    "retry-after",
                    "x-ratelimit-remaining",
                    "ratelimit",
                    "www-authenticate",
                    "x-shopify-shop-api-call-limit",
                    "x-seraph-loginreason",
                ]
            ),
        ),
        st.one_of(st.text(max_size=60), st.integers(), st.lists(st.text(max_size=10))),
        max_size=6,
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    service_name=anything,
    http_status=st.one_of(anything, st.integers(min_value=100, max_value=599)),
    error_code=texts,
    error_message=texts,
    response_headers=header_maps,
)
def test_analyze_never_raises_and_stays_in_bounds(
    service_name: Any,
    http_status: Any,
    error_code: Any,
    error_message: Any,
    response_headers: Any,
) -> None:
    failure = Failure.coerce(service_name, http_status, error_code, error_message, response_headers)

    result = analyze(failure)

    assert isinstance(result.category, Category)
    assert 0.0 <= result.confidence <= 1.0
    assert result.advice
    assert len(result.signals) <= MAX_SIGNALS
    assert all(len(signal) <= MAX_SIGNAL_LENGTH for signal in result.signals)


# --- rules tables -------------------------------------------------------------------------------

RULE_FILES = ("codes.toml", "keywords.toml", "numeric.toml", "advice.toml")


def _shipped_rules_in(directory: Path) -> Path:
    shipped = files("selfheal.core") / "rules"
    for name in RULE_FILES:
        (directory / name).write_text((shipped / name).read_text(encoding="utf-8"), "utf-8")
    return directory


def test_the_shipped_rules_load_the_same_from_any_directory(tmp_path: Path) -> None:
    assert rules.load(_shipped_rules_in(tmp_path)) == rules.load()


def test_a_broken_rules_file_is_named_when_the_rules_are_loaded(tmp_path: Path) -> None:
    directory = _shipped_rules_in(tmp_path)
    (directory / "numeric.toml").write_text(
        '[[twilio]]\ncategory = "auth"\nsituation = "refresh"\ncodes = [20003]\n'
        '[[twilio]]\ncategory = "data"\nsituation = "validation"\ncodes = [20003]\n',
        "utf-8",
    )

    with pytest.raises(RuleError, match=r"^numeric\.toml: duplicate twilio code 20003$"):
        rules.load(directory)


def _codes(*names: str, category: str = "auth", situation: str = "refresh") -> str:
    return (
        f'[[codes]]\ncategory = "{category}"\nsituation = "{situation}"\nweight = 3.0\n'
        f"names = {json.dumps(list(names))}\n"
    )


_Parser = Callable[[Mapping[str, Any], str], object]
SOURCES: dict[_Parser, str] = {
    rules.parse_codes: "codes.toml",
    rules.parse_keywords: "keywords.toml",
    rules.parse_numeric: "numeric.toml",
    rules.parse_advice: "advice.toml",
}

MALFORMED: list[tuple[str, _Parser, str, str]] = [
    (
        "unknown category",
        rules.parse_codes,
        _codes("invalid_auth", category="authz"),
        "codes.toml: [[codes]] #1: category: unknown category 'authz' "
        "(expected one of auth, rate_limit, network, data)",
    ),
    (
        "unknown situation",
        rules.parse_codes,
        _codes("invalid_auth", situation="expired"),
        "codes.toml: [[codes]] #1: unknown situation 'expired' for auth",
    ),
    (
        "code listed twice",
        rules.parse_codes,
        _codes("invalid_auth") + _codes("invalid_auth", situation="reauth"),
        "codes.toml: duplicate code 'invalid_auth'",
    ),
    (
        "another spelling of a listed code",
        rules.parse_codes,
        _codes("network_error", category="network", situation="server")
        + _codes("NetworkError", category="network", situation="timeout"),
        "codes.toml: duplicate code 'NetworkError': the same code as 'network_error'",
    ),
    (
        "a number among the codes",
        rules.parse_codes,
        _codes("20003"),
        "codes.toml: [[codes]] #1: code '20003' is a number; list it in numeric.toml",
    ),
    (
        "unknown key in a group",
        rules.parse_codes,
        _codes("invalid_auth") + "weigth = 2.0\n",
        "codes.toml: [[codes]] #1: unknown key 'weigth'",
    ),
    (
        "a weight that is not a positive number",
        rules.parse_codes,
        _codes("invalid_auth").replace("3.0", "-1.0"),
        "codes.toml: [[codes]] #1: weight -1.0 is not a positive number",
    ),
    (
        "keyword in both tables",
        rules.parse_keywords,
        '[[keywords]]\ncategory = "data"\nweight = 1.5\nwords = ["conflict"]\n'
        '[[reason_phrases]]\ncategory = "data"\nweight = 1.0\nwords = ["conflict"]\n',
        "keywords.toml: duplicate keyword 'conflict' (in [[keywords]] and [[reason_phrases]])",
    ),
    (
        "keyword that can never match",
        rules.parse_keywords,
        '[[keywords]]\ncategory = "rate_limit"\nweight = 2.0\nwords = ["Rate limit"]\n',
        "keywords.toml: [[keywords]] #1: keyword 'Rate limit' must be lower case",
    ),
    (
        "provider that is not a plain name",
        rules.parse_numeric,
        '[[Twilio]]\ncategory = "auth"\ncodes = [20003]\n',
        "numeric.toml: provider 'Twilio' must be lower-case letters and digits",
    ),
    (
        "numeric code that is not a number",
        rules.parse_numeric,
        '[[twilio]]\ncategory = "auth"\ncodes = ["20003"]\n',
        "numeric.toml: [[twilio]] #1: code '20003' is not an integer from 0 to 9999999",
    ),
    (
        "advice for an unknown category",
        rules.parse_advice,
        '[authz]\ngeneral = "Refresh the token."\n',
        "advice.toml: [authz]: unknown category 'authz'",
    ),
    (
        "the same advice written twice",
        rules.parse_advice,
        '[auth]\nrefresh = "Refresh the token."\ngeneral = "Refresh the token."\n',
        "advice.toml: [auth] general: duplicate advice, the same text as refresh; "
        'write { same_as = "refresh" }',
    ),
    (
        "same_as naming no advice",
        rules.parse_advice,
        '[auth]\ngeneral = { same_as = "reauth" }\n',
        "advice.toml: [auth] general: same_as 'reauth' names no advice text in [auth]",
    ),
    (
        "a category without general advice",
        rules.parse_advice,
        '[auth]\nrefresh = "Refresh the token."\n',
        "advice.toml: [auth] needs general advice",
    ),
    (
        "a key given twice in one table",
        rules.parse_advice,
        '[unknown]\ngeneral = "Retry once."\ngeneral = "Retry twice."\n',
        "advice.toml: Cannot overwrite a value",
    ),
]


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_a_malformed_rules_table_is_rejected_naming_its_file_and_key(
    parse: _Parser, text: str, message: str
) -> None:
    source = SOURCES[parse]

    with pytest.raises(RuleError) as raised:
        parse(rules.parse_toml(text, source), source)

    assert str(raised.value).startswith(message), str(raised.value)


@pytest.mark.parametrize("status", [418, 299, 599, 222, 470])
def test_a_status_with_no_documented_meaning_is_unknown_and_unsure(status: int) -> None:
    analysis = analyze(Failure.coerce("acme", status))
    assert analysis.category is Category.UNKNOWN
    assert analysis.confidence <= 0.5


@pytest.mark.parametrize("status", [400, 402, 404, 405, 409, 410, 413, 415, 422])
def test_documented_client_errors_stay_data(status: int) -> None:
    assert analyze(Failure.coerce("acme", status)).category is Category.DATA
