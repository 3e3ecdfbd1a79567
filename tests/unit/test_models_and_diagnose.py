"""Coercion of untrusted failure fields and the pure diagnosis record."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import orjson
from hypothesis import given
from hypothesis import strategies as st

from selfheal.core.diagnose import diagnose, failure_reason
from selfheal.core.retry import reconnect_delay
from selfheal.core.sanitize import MAX_JSON_BYTES, Unreadable, read_json
from selfheal.models import Category, ClaimedFailure, Failure

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def claimed(**fields: object) -> ClaimedFailure:
    """A claimed row; its JSON columns arrive as text, as the claim query reads them."""
    base: dict[str, object] = {
        "event_id": uuid.uuid4(),
        "service_name": "slack",
        "http_status": 401,
        "error_code": "invalid_auth",
        "error_message": "token expired",
        "response_headers": {},
        "payload": {"channel": "C1", "text": "hi"},
        "user_id": None,
        "endpoint": None,
        "attempts": 1,
    }
    base.update(fields)
    for column in ("response_headers", "payload"):
        if not isinstance(base[column], str):
            base[column] = json.dumps(base[column])
    return ClaimedFailure(**base)  # type: ignore[arg-type]


def test_odd_statuses_become_none() -> None:
    for raw in (-1, 0, 99, 600, 10**20, True, "abc", "²", "٤٢٩", 3.5, None, [401]):
        assert Failure.coerce(http_status=raw).http_status is None
    assert Failure.coerce(http_status="429").http_status == 429
    assert Failure.coerce(http_status=503.0).http_status == 503


def test_headers_are_lowercased_and_non_objects_dropped() -> None:
    failure = Failure.coerce(response_headers={"Retry-After": 5, "X-A": ["1", "2"]})
    assert failure.response_headers == {"retry-after": "5", "x-a": "1, 2"}
    assert Failure.coerce(response_headers=["retry-after", "5"]).response_headers == {}
    assert Failure.coerce(response_headers="retry-after: 5").response_headers == {}


def test_text_loses_nul_and_lone_surrogates_and_is_bounded() -> None:
    failure = Failure.coerce(error_message="a\x00b\ud800c" + "x" * 200_000)
    assert failure.error_message is not None
    assert "\x00" not in failure.error_message
    failure.error_message.encode("utf-8")
    assert len(failure.error_message) <= 64 * 1024


@given(status=json_values, code=json_values, message=json_values, headers=json_values)
def test_coerce_and_diagnose_never_raise(
    status: object, code: object, message: object, headers: object
) -> None:
    record = diagnose(
        claimed(
            http_status=status,
            error_code=code,
            error_message=message,
            response_headers=headers,
            payload=headers,
        ),
        NOW,
    )
    signals = orjson.loads(record.signals_json)
    assert 0.0 <= signals["confidence"] <= 1.0
    record.reason.encode("utf-8")


def test_record_is_sanitized_and_plans_an_action() -> None:
    record = diagnose(
        claimed(error_message="Bearer xoxb-1234567890-abcdefghijklmnop rejected"), NOW
    )
    assert record.analysis.category is Category.AUTH
    assert "xoxb-1234567890" not in record.reason
    assert record.reason.startswith("HTTP 401 invalid_auth: ")
    assert record.action
    assert record.next_retry_at == NOW


def test_data_failures_keep_the_payload_shape_not_its_values() -> None:
    record = diagnose(
        claimed(
            http_status=422,
            error_code="validation_error",
            error_message="channel is required",
            payload={"channel": None, "text": "secret plan", "api_key": "sk_live_abcdefgh12345678"},
        ),
        NOW,
    )
    assert record.analysis.category is Category.DATA
    assert "secret plan" not in record.signals_json
    assert "sk_live_" not in record.signals_json
    assert "payload_shape" in orjson.loads(record.signals_json)


def test_failure_reason_without_status_or_message() -> None:
    assert failure_reason(Failure.coerce(error_code="ECONNRESET")) == ("no HTTP status ECONNRESET")


def test_reconnect_delay_grows_and_is_capped() -> None:
    delays = [reconnect_delay(n, cap=5.0, rand=1.0) for n in range(12)]
    assert delays == sorted(delays)
    assert delays[0] == 0.1
    assert max(delays) == 5.0
    assert reconnect_delay(3, cap=5.0, rand=0.0) == 0.4


def test_json_columns_are_read_within_bounds() -> None:
    deep = "[" * 5_000 + "]" * 5_000
    assert isinstance(read_json(deep), Unreadable)  # deeper than the parser goes
    assert isinstance(read_json("x" * (MAX_JSON_BYTES + 1)), Unreadable)
    assert isinstance(read_json("{not json"), Unreadable)
    assert read_json(None) is None
    assert read_json('{"a": [1, 2]}') == {"a": [1, 2]}


def test_a_deep_payload_is_recorded_with_its_shape_cut() -> None:
    for depth in (900, 5_000):  # one the parser reads, one it refuses
        record = diagnose(
            claimed(
                http_status=422,
                error_code="validation_error",
                payload="[" * depth + "]" * depth,
            ),
            NOW,
        )
        shaped = orjson.loads(record.signals_json)["payload_shape"]
        assert len(orjson.dumps(shaped)) < 1_000


def test_headers_keep_only_text_and_numbers() -> None:
    nested: object = "deep"
    for _ in range(2_000):
        nested = {"x": nested}
    headers = orjson.dumps(
        {"Retry-After": "30", "X-Deep": {"a": 1}, "X-List": [1, {"b": 2}, "c"]}
    ).decode()
    assert Failure.coerce(response_headers=headers).response_headers == {
        "retry-after": "30",
        "x-list": "1, c",
    }
    # Nested past any stack: dropped, never printed.
    assert Failure.coerce(response_headers={"x-deep": nested}).response_headers == {}
    many = {f"h{i}": "v" for i in range(10_000)}
    assert len(Failure.coerce(response_headers=many).response_headers) == 200
