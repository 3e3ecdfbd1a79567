"""An embedded Postgres (pgserver) for `selfheal run` without DATABASE_URL; installed with
the `embedded` extra (`pip install 'pg-selfheal[embedded]'`)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["INSTALL_HINT", "available", "default_data_dir", "start_embedded"]

INSTALL_HINT = "pip install 'pg-selfheal[embedded]'"


def available() -> bool:
    """Whether the `embedded` extra is installed. Looked up, not imported: importing
    pgserver asks for a runtime directory, which start_embedded provides first."""
    try:
        return all(importlib.util.find_spec(name) for name in ("pgserver", "platformdirs"))
    except (ImportError, ValueError):  # a module set to None in sys.modules: not usable
        return False


def default_data_dir() -> Path:
    """A per-user data directory, e.g. ~/.local/share/pg-selfheal/pgdata."""
    import platformdirs

    return platformdirs.user_data_path("pg-selfheal") / "pgdata"


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the server in data_dir and return its socket conninfo."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if "XDG_RUNTIME_DIR" not in os.environ:
        # pgserver asks platformdirs for one, which warns when it is unset or not private
        # (containers, CI, root): give it a private one beside the data.
        run_dir = data_dir.parent / "run"
        run_dir.mkdir(mode=0o700, exist_ok=True)
        run_dir.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(run_dir)
    from pgserver import get_server  # type: ignore[attr-defined]  # slow import; only here

    server = get_server(data_dir, cleanup_mode="stop")
    return str(server.get_uri())
