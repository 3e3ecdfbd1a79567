"""The daemon's one small HTTP server: /metrics, /healthz (and the dashboard to come)."""
