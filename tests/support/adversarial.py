"""Texts that would make a backtracking or unbounded scrubber slow.

Shared by the unit tests (which check what comes out) and `bench.sanitize` (which times it).
"""

from __future__ import annotations

ADVERSARIAL_TEXTS: tuple[str, ...] = (
    "a" * 100_000,
    "=" * 100_000,
    "Bearer " * 10_000,
    "token: " * 20_000,
    '"password": "' * 10_000,
    "//a:" * 30_000,
    "-----BEGIN PRIVATE KEY-----" * 5_000,
    "authorization: " * 10_000,
    "sk-" * 40_000,
    "eyJaaaaa." * 20_000,
    "secret is " * 20_000,
    '\\"' * 100_000,
    "?key=" * 20_000,
    "@" * 200_000,
)
