"""A real PgBouncer in transaction mode in front of the test Postgres, as in production.

Transaction pooling hands each transaction whichever server connection is free: a
session advisory lock, a server-side prepared statement or a LISTEN taken through it
lands on a connection the next statement may not get. Tests run the daemon through it
to prove it never relies on a session.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.http import free_port
from tests.support.postgres import PostgresServer

__all__ = [
    "NOT_INSTALLED",
    "PGBOUNCER_BINARY",
    "PgBouncer",
    "advisory_locks",
    "pgbouncer_binary",
    "start_pgbouncer",
]

PGBOUNCER_BINARY = "/usr/sbin/pgbouncer"
NOT_INSTALLED = "PgBouncer is not installed (apt-get install pgbouncer)"


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: ``url(dbname)`` is that database through it."""

    host: str
    port: int
    user: str
    password: str | None
    log_file: Path

    def url(self, dbname: str) -> str:
        params: dict[str, Any] = {
            "host": self.host,
            "port": str(self.port),
            "user": self.user,
            "dbname": dbname,
        }
        if self.password:
            params["password"] = self.password
        return make_conninfo(**params)

    def log(self) -> str:
        """PgBouncer's own log so far: what a failing test prints."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


def pgbouncer_binary() -> str | None:
    """The PgBouncer executable, or None when it is not installed."""
    if os.access(PGBOUNCER_BINARY, os.X_OK):
        return PGBOUNCER_BINARY
    return shutil.which("pgbouncer")


def advisory_locks(admin_conninfo: str, dbname: str) -> int:
    """Advisory locks held on the real server in `dbname`, by any session (pooled or not)."""
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = %s",
            (dbname,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _run_as(server: PostgresServer) -> pwd.struct_passwd | None:
    """PgBouncer refuses to run as root: the unprivileged user to run it as, if needed."""
    if os.geteuid() != 0:
        return None
    # An embedded server's socket directory belongs to pgserver; else Debian's postgres.
    order = (
        ("pgserver", "postgres") if server.embedded_dir is not None else ("postgres", "pgserver")
    )
    for name in order:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'pgserver' user exists")


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _config(server: PostgresServer, port: int, workdir: Path) -> tuple[str, str, str | None]:
    """Write pgbouncer.ini and its auth file; return (ini text, user, password)."""
    target = conninfo_to_dict(server.admin_conninfo)
    user = str(target.get("user") or pwd.getpwuid(os.geteuid()).pw_name)
    password = str(target["password"]) if target.get("password") else None
    host = str(target.get("host") or "127.0.0.1")
    if "," in host:
        host = host.split(",", 1)[0]
    upstream = f"host={host} port={target.get('port') or 5432}"
    auth_file = workdir / "userlist.txt"
    # With auth_type = trust clients are not checked; the password (if any) is the one
    # PgBouncer logs in to Postgres with.
    auth_file.write_text(f"{_quote(user)} {_quote(password or '')}\n")
    ini = f"""\
[databases]
* = {upstream}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {auth_file}
admin_users = {user}
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 10
; Each transaction takes the next server connection in turn, not the one it had last:
; anything the daemon leaves on a session (a lock, a prepared statement) is soon missed.
server_round_robin = 1
max_db_connections = 40
; What production configurations carry for common drivers; nothing else is let through.
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
"""
    return ini, user, password


@contextmanager
def start_pgbouncer(server: PostgresServer, timeout: float = 30) -> Iterator[PgBouncer]:
    """Run PgBouncer (transaction pooling) in front of `server` until the block ends."""
    binary = pgbouncer_binary()
    if binary is None:
        raise FileNotFoundError(NOT_INSTALLED)
    # Not under tmp_path: /tmp/pytest-of-root is 0700, and PgBouncer may run as another user.
    workdir = Path(tempfile.mkdtemp(prefix="selfheal-pgbouncer-"))
    workdir.chmod(0o755)
    port = free_port()
    ini, user, password = _config(server, port, workdir)
    ini_path = workdir / "pgbouncer.ini"
    ini_path.write_text(ini)
    for path in (ini_path, workdir / "userlist.txt"):
        path.chmod(0o644)
    log_file = workdir / "pgbouncer.log"
    runner = _run_as(server)
    extra: dict[str, Any] = {}
    if runner is not None:
        extra = {"user": runner.pw_uid, "group": runner.pw_gid, "extra_groups": []}
    bouncer = PgBouncer("127.0.0.1", port, user, password, log_file)
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [binary, str(ini_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            **extra,
        )
        try:
            admin_db = str(conninfo_to_dict(server.admin_conninfo).get("dbname") or "postgres")
            _wait_until_serving(proc, bouncer.url(admin_db), bouncer, timeout)
            yield bouncer
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_until_serving(
    proc: subprocess.Popen[bytes], probe: str, bouncer: PgBouncer, timeout: float
) -> None:
    """Poll a query through it (the condition itself, not a guessed sleep) until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"PgBouncer exited ({proc.returncode}): {bouncer.log()}")
        try:
            with psycopg.connect(probe, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"PgBouncer did not answer within {timeout:g}s: {exc}; log: {bouncer.log()}"
                ) from exc
            time.sleep(0.05)
