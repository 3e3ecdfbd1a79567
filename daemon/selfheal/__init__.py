"""pg-selfheal: a Postgres-native daemon that heals failed third-party integrations."""

from __future__ import annotations

__version__ = "0.1.0"
