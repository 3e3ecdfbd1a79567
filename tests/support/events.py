"""Write failures the way an integration would, and wait for the daemon's records."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

INSERT_FAILURE = """
INSERT INTO integration_events (
    service_name, event_type, payload, user_id, status, error_code, error_message,
    http_status, endpoint, http_method, response_headers, selfheal_attempt
) VALUES (%s, %s, %s, %s, 'error', %s, %s, %s, %s, %s, %s, %s)
RETURNING id
"""

# One statement, many failures: what a bulk import or a batch job does.
INSERT_BURST = """
INSERT INTO integration_events (service_name, event_type, payload, status, error_code,
                                error_message, http_status)
SELECT 'svc-' || (g %% 7), 'message.send', jsonb_build_object('n', g), 'error',
       (ARRAY['invalid_auth', 'ratelimited', 'ECONNRESET', 'validation_error', NULL])[1 + g %% 5],
       'failure number ' || g,
       (ARRAY[401, 429, NULL, 422, 500])[1 + g %% 5]
FROM generate_series(1, %(count)s) AS g
"""


def insert_failure(
    conn: psycopg.Connection[Any],
    *,
    service_name: str = "slack",
    event_type: str = "message.send",
    payload: Any = None,
    user_id: uuid.UUID | None = None,
    error_code: str | None = "invalid_auth",
    error_message: str | None = "token expired",
    http_status: int | None = 401,
    endpoint: str | None = None,
    http_method: str = "POST",
    response_headers: Any = None,
    selfheal_attempt: int | None = None,
) -> uuid.UUID:
    row = conn.execute(
        INSERT_FAILURE,
        (
            service_name,
            event_type,
            Jsonb(payload if payload is not None else {"text": "hello"}),
            user_id,
            error_code,
            error_message,
            http_status,
            endpoint,
            http_method,
            Jsonb(response_headers) if response_headers is not None else None,
            selfheal_attempt,
        ),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def insert_burst(conn: psycopg.Connection[Any], count: int) -> None:
    conn.execute(INSERT_BURST, {"count": count})


def count_records(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM system_integrity_events").fetchone()
    assert row is not None
    return int(row[0])


def assert_exactly_one_record_per_failure(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        """
        SELECT count(*) FILTER (WHERE s.n IS NULL), count(*) FILTER (WHERE s.n > 1), count(*)
        FROM integration_events e
        LEFT JOIN (SELECT event_id, count(*) AS n FROM system_integrity_events GROUP BY 1) s
               ON s.event_id = e.id
        WHERE e.status = 'error' AND e.selfheal_attempt IS NULL
        """
    ).fetchone()
    assert row is not None
    missing, duplicated, total = row
    assert (missing, duplicated) == (0, 0), f"{missing} unrecorded, {duplicated} twice"
    return int(total)


def wait_until(
    conn: psycopg.Connection[Any], query: str, params: Any, expected: Any, timeout: float = 30
) -> Any:
    """Poll a query (the condition itself, not a guessed sleep) until it returns `expected`.

    Returns `expected`; raises `TimeoutError` naming the query and the last value it gave
    when `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(query, params).fetchone()
        got = row[0] if row else None
        if got == expected:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"waited {timeout:g}s for {query!r} with {params!r} to return {expected!r}; "
                f"last value: {got!r}"
            )
        time.sleep(0.02)


def wait_until_recorded(conn: psycopg.Connection[Any], expected: int, timeout: float = 60) -> int:
    """Poll the table (the condition itself, not a guessed sleep) until `expected` records.

    Returns the count (at least `expected`: a caller comparing it with `==` catches
    doubles); raises `TimeoutError` with the last count when `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = count_records(conn)
        if got >= expected:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"waited {timeout:g}s for {expected} records in system_integrity_events; "
                f"last count: {got}"
            )
        time.sleep(0.02)
