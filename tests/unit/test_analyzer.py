"""Unit tests for the failure analyzer: a corpus of real provider errors, ordering, safety."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfheal.core.analyzer import MAX_SIGNAL_LENGTH, MAX_SIGNALS, analyze
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
