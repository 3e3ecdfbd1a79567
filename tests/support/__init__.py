"""Test support: a real Postgres and real loopback HTTP servers."""
