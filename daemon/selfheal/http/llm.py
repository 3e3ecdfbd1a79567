"""Asks an OpenAI-compatible server (OpenAI, Ollama, vLLM, llama.cpp's server) for one chat
completion, and says what came back; core/llm_prompt.py decides what it means. The API
key goes only in the Authorization header to the configured server, never anywhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import orjson
from pydantic import SecretStr

from selfheal.http.clients import USER_AGENT, OwnedClient

__all__ = ["Completion", "LlmClient", "LlmFailed"]

_MAX_ANSWER_BYTES = 256 * 1024  # an answer of 300 tokens is a few KB
TEMPERATURE = 0.3
MAX_TOKENS = 300


class LlmFailed(Exception):
    """No usable completion; the message is the reason, in our words (never the server's
    body, which may quote the prompt). ``status`` is the HTTP status when there was one."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class Completion:
    content: Any
    refusal: Any
    finish_reason: Any
    prompt_tokens: int | None
    completion_tokens: int | None


class LlmClient(OwnedClient):
    """One HTTP client for the LLM server: `timeout` bounds each question as a whole, a
    slow or trickling answer included; redirects are not followed."""

    def __init__(self, base_url: str, api_key: SecretStr, model: str, timeout: float) -> None:
        self.model = model
        self.timeout = timeout
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            headers={
                "User-Agent": USER_AGENT,
                "Authorization": f"Bearer {api_key.get_secret_value()}",
                "Content-Type": "application/json",
            },
        )

    async def complete(
        self, messages: list[dict[str, str]], response_format: dict[str, Any]
    ) -> Completion:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": TEMPERATURE,
            "max_tokens": MAX_TOKENS,
            "response_format": response_format,
        }
        try:
            with anyio.fail_after(self.timeout):
                async with self._client.stream(
                    "POST", self._url, content=orjson.dumps(body)
                ) as response:
                    raw = await _read(response)
        except (TimeoutError, httpx.TimeoutException):
            raise LlmFailed("timeout") from None
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise LlmFailed(f"unreachable ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise LlmFailed(f"HTTP {response.status_code}", response.status_code)
        return _completion(raw)


async def _read(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > _MAX_ANSWER_BYTES:
            raise LlmFailed(f"answer larger than {_MAX_ANSWER_BYTES:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _completion(raw: bytes) -> Completion:
    try:
        answer = orjson.loads(raw)
        choice = answer["choices"][0]
        message = choice["message"]
        if not isinstance(message, dict):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise LlmFailed("not a chat completion") from None
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    return Completion(
        content=message.get("content"),
        refusal=message.get("refusal"),
        finish_reason=choice.get("finish_reason") if isinstance(choice, dict) else None,
        prompt_tokens=_tokens(usage.get("prompt_tokens")),
        completion_tokens=_tokens(usage.get("completion_tokens")),
    )


def _tokens(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    return None
