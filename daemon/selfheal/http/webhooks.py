"""Posts an admin message to a Slack incoming webhook or a Teams Workflows webhook, and
says what came back (core/alerts.after_delivery decides what it means). A webhook URL is
a secret: no error, log line or answer here holds it."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

import anyio
import httpx

from selfheal.core.alerts import WebhookAnswer
from selfheal.core.ratelimit import parse_retry_after
from selfheal.http.clients import USER_AGENT, OwnedClient

__all__ = ["Webhooks"]

_BODY_SAMPLE = 4096  # Slack's answers are a word; an error page is cut here


class Webhooks(OwnedClient):
    """One HTTP client for the admin channels (the environment's proxies apply, as for
    token refreshes); every post ends within the timeout, a slow answer included."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,  # a webhook that redirects is misconfigured, not followed
            headers={"User-Agent": USER_AGENT},
        )

    async def post(self, url: str, body: bytes) -> WebhookAnswer:
        try:
            with anyio.fail_after(self._timeout):
                async with self._client.stream(
                    "POST", url, content=body, headers={"Content-Type": "application/json"}
                ) as response:
                    sample = await _start_of(response)
        except (httpx.HTTPError, httpx.InvalidURL, OSError, TimeoutError) as exc:
            # The exception's text may quote the URL: only its name is kept.
            return WebhookAnswer(None, error=type(exc).__name__)
        retry_after = None
        if response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
        return WebhookAnswer(response.status_code, _without(url, sample), retry_after)


def _without(url: str, body: str) -> str:
    """The body without the URL or its secret parts (an error page may echo the path)."""
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query):
        if len(secret) > 1:
            body = body.replace(secret, "[webhook]")
    return body


async def _start_of(response: httpx.Response) -> str:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _BODY_SAMPLE:
            break
    return b"".join(chunks)[:_BODY_SAMPLE].decode("utf-8", "replace")
