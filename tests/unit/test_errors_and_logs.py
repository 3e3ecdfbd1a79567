"""What an operator reads of an error, and how library log records come out."""

from __future__ import annotations

import io
import json
import logging

import pytest
from psycopg.conninfo import conninfo_to_dict

from selfheal.db.connections import ConnectionPolicy, with_keepalives
from selfheal.errors import DatabaseError, innermost
from selfheal.logs import configure_logging, error_fields, get_logger
from selfheal.settings import Settings


def nested_group() -> BaseExceptionGroup[BaseException]:
    cause = DatabaseError('UndefinedTable: relation "selfheal_inbox" does not exist')
    return BaseExceptionGroup("outer", [BaseExceptionGroup("inner", [cause, ValueError("x")])])


def test_the_innermost_error_of_nested_groups_is_the_cause() -> None:
    assert isinstance(innermost(nested_group()), DatabaseError)
    plain = KeyError("k")
    assert innermost(plain) is plain


def test_error_fields_name_the_cause_in_one_line_and_keep_the_traceback_apart() -> None:
    try:
        raise nested_group()
    except BaseExceptionGroup as exc:
        fields = error_fields(exc)
    assert fields["error"] == (
        'DatabaseError: UndefinedTable: relation "selfheal_inbox" does not exist'
    )
    assert "\n" not in fields["error"]
    assert "Traceback" in fields["traceback"] and "ExceptionGroup" in fields["traceback"]


@pytest.fixture
def logs() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(Settings(database_url=None, log_format="json"), stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_crash_line_reads_as_an_operator_expects(logs: io.StringIO) -> None:
    try:
        raise nested_group()
    except BaseExceptionGroup as exc:
        get_logger().error("daemon.crashed", **error_fields(exc))
    [line] = lines(logs)
    assert line["event"] == "daemon.crashed"
    assert str(line["error"]).startswith("DatabaseError: UndefinedTable")
    assert "ExceptionGroup" in str(line["traceback"])


def test_library_records_keep_their_level_and_traceback_and_are_sanitized(
    logs: io.StringIO,
) -> None:
    logging.getLogger("psycopg.pool").critical("broken: password=hunter2hunter2")
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        logging.getLogger("anyio").exception("task failed")
    critical, failed = lines(logs)
    assert (critical["event"], critical["level"]) == ("psycopg.pool.log", "critical")
    assert "hunter2" not in json.dumps(critical)
    assert (failed["event"], failed["level"], failed["message"]) == (
        "anyio.log",
        "error",
        "task failed",
    )
    assert "ZeroDivisionError" in json.dumps(failed["exception"])


def test_keepalives_and_a_user_timeout_are_added_unless_given() -> None:
    params = conninfo_to_dict(with_keepalives("host=db dbname=app", 15))
    assert params["keepalives"] == "1"
    assert params["tcp_user_timeout"] == "15000"
    assert params["keepalives_idle"] == "5"
    assert params["connect_timeout"] == "15"
    own = conninfo_to_dict(with_keepalives("postgresql://db/app?tcp_user_timeout=500", 15))
    assert own["tcp_user_timeout"] == "500"


def test_through_a_pooler_nothing_is_prepared() -> None:
    assert ConnectionPolicy(pooled=True).connect_kwargs == {
        "autocommit": True,
        "prepare_threshold": None,
    }
    assert "prepare_threshold" not in ConnectionPolicy().connect_kwargs
