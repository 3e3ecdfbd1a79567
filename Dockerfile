# The pg-selfheal daemon as a container image.
#   docker build -t pg-selfheal .
#   docker run -e DATABASE_URL=postgresql://... -p 9464:9464 pg-selfheal
# No embedded Postgres in here: DATABASE_URL is required (without it the daemon stops at
# start with one line saying so). Logs are JSON lines on stdout; /healthz and /metrics on
# port 9464. SIGTERM stops it cleanly within SELFHEAL_SHUTDOWN_GRACE_SECONDS (10), the
# same as `docker stop`'s default wait: give it more (`docker stop -t 30`, compose's
# stop_grace_period) so that a slow replay is finished, not killed.

# The wheel, built from the package's sources only (see .dockerignore).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY sql ./sql
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# The daemon: the wheel and its dependencies in a venv, run by a user that is not root.
FROM python:3.11-slim AS runtime
COPY --from=build /dist /tmp/dist
RUN python -m venv /opt/selfheal/venv \
    && /opt/selfheal/venv/bin/pip install --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && groupadd --system --gid 10001 selfheal \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin selfheal
# Numeric, so that a runtime which refuses root (Kubernetes' runAsNonRoot) can tell.
USER 10001:10001
# The daemon writes nothing to disk: the root file system may be read-only.
WORKDIR /opt/selfheal
ENV PATH=/opt/selfheal/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SELFHEAL_LOG_FORMAT=json \
    SELFHEAL_HTTP_ADDR=127.0.0.1:9464
# /healthz (for the HEALTHCHECK) on loopback. To scrape /metrics or open the dashboard from
# outside, set SELFHEAL_HTTP_ADDR=0.0.0.0:9464 and SELFHEAL_HTTP_TOKEN (required then).
EXPOSE 9464
STOPSIGNAL SIGTERM
# Healthy while GET /healthz answers 200. No curl in a slim image: Python's urllib, told to
# ignore HTTP_PROXY (the daemon may need one outside, never for its own port), and to
# 127.0.0.1 when the server listens on every interface. Start-up includes migrations.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; h, _, p = os.environ.get('SELFHEAL_HTTP_ADDR', '').strip().rpartition(':'); p or sys.exit('SELFHEAL_HTTP_ADDR is empty: no /healthz to ask'); h = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '[::]': '[::1]', '::': '[::1]'}.get(h, h); r = u.build_opener(u.ProxyHandler({})).open(f'http://{h}:{p}/healthz', timeout=4); sys.exit(r.status != 200)"]
# The daemon is PID 1: it handles SIGTERM and SIGINT itself and starts no children.
ENTRYPOINT ["selfheal"]
CMD ["run"]
