"""`selfheal migrate` on empty, migrated and pre-existing databases."""

from __future__ import annotations

import os
import subprocess
import sys

import anyio
import psycopg
import pytest

from selfheal.db.migrate import apply_migrations, sql_root
from tests.support.postgres import Databases

pytestmark = pytest.mark.anyio

SQL_FILES = sum(
    1
    for folder in ("migrations", "triggers")
    for f in (sql_root() / folder).iterdir()
    if f.name.endswith(".sql")
)


def _columns(conn: psycopg.Connection[tuple[object, ...]], table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
    ).fetchall()
    return {str(r[0]) for r in rows}


async def test_fresh_database_gets_every_contract_table_and_column(databases: Databases) -> None:
    with databases.empty() as url:
        result = await apply_migrations(url)
        assert result.applied[0] == "0001_base_tables.sql"
        with psycopg.connect(url) as conn:
            assert {
                "oauth_config",
                "recovery_fail_count",
                "last_recovery_at",
                "auto_recovery_enabled",
            } <= _columns(conn, "integrations_master")
            assert {
                "access_token",
                "refresh_token",
                "token_expires_at",
                "last_error_at",
                "consecutive_failures",
            } <= _columns(conn, "user_integrations")
            assert {
                "status",
                "error_code",
                "error_message",
                "http_status",
                "retry_count",
                "endpoint",
                "http_method",
                "response_headers",
            } <= _columns(conn, "integration_events")
            assert {
                "id",
                "event_id",
                "service_name",
                "failure_reason",
                "failure_category",
                "action_taken",
                "analyzer_signals",
                "llm_reasoning",
                "status",
                "resolved_at",
                "created_at",
                "updated_at",
                "attempts",
                "next_retry_at",
                "lease_expires_at",
            } <= _columns(conn, "system_integrity_events")


async def test_second_run_is_a_no_op(db_url: str) -> None:
    assert (await apply_migrations(db_url)).applied == ()


async def test_concurrent_runs_apply_each_migration_once(databases: Databases) -> None:
    with databases.empty() as url:
        results = []

        async def migrate() -> None:
            results.append(await apply_migrations(url))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(migrate)
        applied = [name for r in results for name in r.applied]
        assert len(applied) == len(set(applied)) == SQL_FILES
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM selfheal_migrations").fetchone()
            assert row == (SQL_FILES,)


async def test_existing_tables_keep_their_columns_and_rows(databases: Databases) -> None:
    with databases.empty() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                """
                CREATE TABLE integrations_master (
                    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                    service_name text UNIQUE, owner_team text);
                CREATE TABLE user_integrations (
                    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid,
                    integration_id uuid REFERENCES integrations_master(id), label text);
                CREATE TABLE integration_events (
                    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), service_name text,
                    event_type text, payload jsonb, user_id uuid,
                    created_at timestamptz DEFAULT now(), region text);
                INSERT INTO integrations_master (service_name, owner_team) VALUES ('slack', 'core');
                INSERT INTO integration_events (service_name, event_type, payload, region)
                SELECT 'slack', 'message.send', '{"n": 1}', 'eu' FROM generate_series(1, 3);
                """
            )
        await apply_migrations(url)
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT region, status, retry_count, http_method FROM integration_events"
            ).fetchall()
            assert rows == [("eu", "success", 0, "POST")] * 3
            team = conn.execute("SELECT owner_team, auto_recovery_enabled FROM integrations_master")
            assert team.fetchall() == [("core", True)]
            # Existing successes are not failures: nothing queued.
            assert conn.execute("SELECT count(*) FROM selfheal_inbox").fetchone() == (0,)


def test_migrate_command_twice(databases: Databases) -> None:
    with databases.empty() as url:
        env = {**os.environ, "DATABASE_URL": url, "SELFHEAL_LOG_FORMAT": "json"}
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-m", "selfheal", "migrate"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        assert '"applied":[]' in done.stderr


def test_row_level_security_hides_tokens_from_other_roles(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO integrations_master (service_name) VALUES ('slack');
            INSERT INTO user_integrations (user_id, integration_id, access_token)
            SELECT gen_random_uuid(), id, 'xoxb-secret' FROM integrations_master;
            DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_test_app') THEN
                    CREATE ROLE selfheal_test_app NOLOGIN;
                END IF;
            END $$;
            GRANT SELECT ON user_integrations TO selfheal_test_app;
            """
        )
        with conn.transaction():
            conn.execute("SET LOCAL ROLE selfheal_test_app")
            assert conn.execute("SELECT count(*) FROM user_integrations").fetchone() == (0,)
        with conn.transaction():
            conn.execute("SET LOCAL ROLE service_role")
            assert conn.execute("SELECT access_token FROM user_integrations").fetchall() == [
                ("xoxb-secret",)
            ]


async def test_an_old_table_with_several_rows_per_event_stops_with_a_clear_message(
    databases: Databases,
) -> None:
    with databases.empty() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                """
                CREATE TABLE system_integrity_events (
                    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), event_id uuid NOT NULL,
                    service_name text NOT NULL, failure_category text, status text);
                INSERT INTO system_integrity_events (event_id, service_name, status)
                SELECT '00000000-0000-0000-0000-000000000001', 'slack', 'retrying'
                FROM generate_series(1, 2);
                """
            )
        with pytest.raises(psycopg.errors.RaiseException, match="more than one row"):
            await apply_migrations(url)
