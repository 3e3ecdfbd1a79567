"""Run `selfheal run` (or any command that logs JSON lines) as a real process and follow its
log lines."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class LoggedProcess:
    """A started command whose JSON log lines (stdout and stderr) are read as they come."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd, text=True
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.raw.append(line)
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = None
            if not isinstance(entry, dict):
                entry = {"event": "non_json_line", "line": line}
            self.lines.append(entry)
            self._queue.put(entry)
        self._queue.put(None)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool] | str, timeout: float = 60
    ) -> dict[str, Any]:
        """Block until a log line matches (an event name or a predicate)."""
        match = (lambda e: e.get("event") == predicate) if isinstance(predicate, str) else predicate
        for entry in list(self.lines):
            if match(entry):
                return entry
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no log line matching {predicate!r}; last: {self.raw[-5:]}")
            try:
                entry = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if entry is None:
                raise RuntimeError(f"it exited ({self.proc.poll()}); last: {self.raw[-10:]}")
            if match(entry):
                return entry

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        """Stop it if still running: SIGTERM first, so that its coverage data is written."""
        if self.proc.poll() is None:
            try:
                self.terminate(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.lines if e.get("event") == name]


class DaemonProcess(LoggedProcess):
    """`selfheal run` on `db_url`, with the tests' environment and `env` on top."""

    def __init__(self, db_url: str | None, **env: str) -> None:
        full_env = {
            **os.environ,
            "SELFHEAL_LOG_FORMAT": "json",
            "SELFHEAL_LOG_LEVEL": "info",
            "NO_PROXY": "127.0.0.1,localhost",  # the stand-in servers are on loopback
            "SELFHEAL_ALLOW_LOOPBACK": "true",  # and replays may go there
            **env,
        }
        full_env.pop("SELFHEAL_TEST_DATABASE_URL", None)
        full_env.pop("DATABASE_URL", None)
        if db_url is not None:
            full_env["DATABASE_URL"] = db_url
        super().__init__([sys.executable, "-m", "selfheal", "run"], full_env)

    def started(self, timeout: float = 60) -> DaemonProcess:
        self.wait_for("daemon.started", timeout)
        return self
