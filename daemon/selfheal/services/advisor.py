"""The advisor: asks the LLM for a second opinion on the alert groups the analyzer was
least sure of, one question per group, within a budget every daemon shares; records the
answer (core/llm_prompt.py says what it may change). Healing never waits for it: the
deterministic decision is recorded first, and the advisor has its own client and loop."""

from __future__ import annotations

import secrets
from functools import partial
from typing import Any

import anyio
from anyio.abc import TaskGroup

from selfheal import metrics
from selfheal.core.llm_prompt import (
    AdvicePolicy,
    InvalidAnswer,
    Question,
    prompt,
    question,
    read_answer,
    reasoning,
    recorded,
    response_format,
    stop_reason,
)
from selfheal.db.questions import Questions
from selfheal.errors import PermanentError
from selfheal.http.llm import Completion, LlmClient, LlmFailed
from selfheal.logs import error_fields, get_logger
from selfheal.models import ClaimedQuestion, Failure
from selfheal.services.base import Every, Paced, Service, Wakeup, retry_until_done

__all__ = ["Advisor"]

log = get_logger()

# Looks at most this often: the claimer wakes the advisor with every batch it records.
_LOOK_SPACING = 0.25


class Advisor(Service):
    name = "advisor"

    def __init__(
        self,
        questions: Questions,
        llm: LlmClient,
        policy: AdvicePolicy,
        wakeup: Wakeup,
        owner: str,
        *,
        per_hour: int,
        concurrency: int,
        copy_window: float,
        period: float,
        reconnect_cap: float,
    ) -> None:
        super().__init__(wakeup, period=period, reconnect_cap=reconnect_cap)
        self._questions = questions
        self._llm = llm
        self._policy = policy
        self._owner = owner
        self._per_hour = per_hour
        self._concurrency = concurrency
        # A question lost with its daemon (or its write) is asked again when this runs out:
        # after the longest a question takes (the fallback asks twice).
        self._lease = 2 * llm.timeout + 5
        self._copy_window = copy_window
        self._reconnect_cap = reconnect_cap
        self._strict = True  # structured outputs, until the server rejects them
        self._pace = Paced(_LOOK_SPACING)
        self._pruning = Every(3600.0)
        self._in_flight = 0
        self._asking: TaskGroup

    async def main(self) -> None:
        # Questions run beside the loop, so a slow one never holds up the next group's;
        # on stop, the ones in flight end within their timeout.
        async with anyio.create_task_group() as self._asking:
            await self.loop()

    async def step(self) -> float | None:
        try:
            await self._look()
        except PermanentError as exc:  # never the daemon's end: healing goes on without it
            log.error("advisor.failed", **error_fields(exc))
        return None  # woken by new records, and by each question that ends

    async def _look(self) -> None:
        await self._pace.wait()
        if self._pruning.due():
            await self._questions.prune()
        await self._questions.copy_answers(self._copy_window)
        free = self._concurrency - self._in_flight
        if free <= 0:
            return
        claimed = await self._questions.claim(
            self._owner,
            self._llm.model,
            per_hour=self._per_hour,
            concurrency=self._concurrency,
            lease_seconds=self._lease,
            limit=free,
        )
        for claim in claimed:
            self._in_flight += 1
            self._asking.start_soon(self._ask, claim)

    async def _ask(self, claim: ClaimedQuestion) -> None:
        fields = {"group": claim.fingerprint, "service_name": claim.service_name}
        try:
            await self._answer(claim, fields)
        except Exception as exc:
            # Advice is optional, never worth the daemon. The question's lease runs out and
            # it is asked again.
            log.error("advisor.failed", **fields, **error_fields(exc))
        finally:
            self._in_flight -= 1
            self.wakeup.set()  # a free slot, and an answer to copy to its records

    async def _answer(self, claim: ClaimedQuestion, fields: dict[str, str]) -> None:
        started = anyio.current_time()
        completion: Completion | None = None
        try:
            completion = await self._consult(_question(claim))
            opinion = read_answer(
                completion.content,
                refusal=completion.refusal,
                finish_reason=completion.finish_reason,
            )
        except (LlmFailed, InvalidAnswer) as exc:
            usage = _usage(completion, started, "failed")
            log.warning("llm.failed", **fields, reason=str(exc), latency_ms=usage["latency_ms"])
            write = partial(self._questions.failed, claim, str(exc), usage)
            await retry_until_done("advisor", write, self._reconnect_cap)
            return
        usage = _usage(completion, started, "answered")
        stop = stop_reason(claim.category, opinion, self._policy)
        answer = recorded(opinion, model=self._llm.model, latency_ms=usage["latency_ms"], stop=stop)
        write = partial(self._questions.answered, claim, answer, reasoning(opinion), stop, usage)
        await retry_until_done("advisor", write, self._reconnect_cap)
        log.info(
            "llm.answered",
            **fields,
            category=opinion.category.value,
            confidence=opinion.confidence,
            stopped_retry=stop is not None,
            **usage,
        )

    async def _consult(self, q: Question) -> Completion:
        """One question; structured outputs first, and once a server has rejected them
        (400), JSON mode with the schema in the prompt, for every later question too."""
        nonce = secrets.token_hex(8)
        if self._strict:
            try:
                return await self._llm.complete(prompt(q, nonce), response_format(strict=True))
            except LlmFailed as exc:
                if exc.status != 400:
                    raise
            self._strict = False
            log.warning(
                "llm.fallback",
                reason="the server rejected a json_schema response_format (HTTP 400)",
                now="json_object, with the schema in the prompt",
            )
        return await self._llm.complete(
            prompt(q, nonce, schema_in_prompt=True), response_format(strict=False)
        )


def _question(claim: ClaimedQuestion) -> Question:
    """The question about the claim's sample failure; when the event is gone, its record's
    sanitized reason stands in for the message."""
    failure = Failure.coerce(
        claim.service_name, claim.http_status, claim.error_code, claim.error_message, None
    )
    return question(
        claim.fingerprint,
        claim.service_name,
        claim.category,
        claim.signals,
        http_status=failure.http_status,
        error_code=failure.error_code,
        error_message=failure.error_message or claim.sample_error,
        retry_count=claim.retry_count,
        payload=claim.payload,
    )


def _usage(completion: Completion | None, started: float, result: str) -> dict[str, Any]:
    """What a question cost (for its call row and the log), counted in the metrics."""
    seconds = anyio.current_time() - started
    prompt_tokens = completion.prompt_tokens if completion else None
    completion_tokens = completion.completion_tokens if completion else None
    metrics.LLM_CALLS.labels(result).inc()
    metrics.LLM_LATENCY.observe(seconds)
    metrics.LLM_TOKENS.labels("prompt").inc(prompt_tokens or 0)
    metrics.LLM_TOKENS.labels("completion").inc(completion_tokens or 0)
    return {
        "latency_ms": round(seconds * 1000, 1),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }
