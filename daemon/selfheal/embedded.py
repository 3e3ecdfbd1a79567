"""An embedded Postgres (pgserver) for `selfheal run` without DATABASE_URL."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["default_data_dir", "start_embedded"]


def default_data_dir() -> Path:
    """A per-user data directory, e.g. ~/.local/share/pg-selfheal/pgdata."""
    return platformdirs.user_data_path("pg-selfheal") / "pgdata"


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the server in data_dir and return its socket conninfo."""
    # pgserver warns through platformdirs when XDG_RUNTIME_DIR is unset (containers, CI).
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.parent))
    from pgserver import get_server  # type: ignore[attr-defined]  # slow import; only here

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    return str(server.get_uri())
