"""The second opinion's statements, through the store's connections (and its error
translation): claiming questions within the shared budget, writing what came back, and
copying answers onto the records of their groups."""

from __future__ import annotations

from typing import Any

import orjson
from psycopg.rows import class_row, dict_row

from selfheal.db import queries
from selfheal.db.store import Store
from selfheal.models import ClaimedQuestion

__all__ = ["Questions"]


class Questions:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def claim(
        self,
        owner: str,
        model: str,
        *,
        per_hour: int,
        concurrency: int,
        lease_seconds: float,
        limit: int,
    ) -> list[ClaimedQuestion]:
        """The groups to ask about now: at most `limit`, and no more than the hour's budget
        and the free slots allow, counted over every daemon."""
        async with self._store._transaction() as conn:
            await conn.execute(queries.LOCK_QUESTIONS, {"key": queries.QUESTION_LOCK_KEY})
            async with conn.cursor(row_factory=class_row(ClaimedQuestion)) as cur:
                await cur.execute(
                    queries.CLAIM_QUESTIONS,
                    {
                        "owner": owner,
                        "model": model,
                        "per_hour": per_hour,
                        "concurrency": concurrency,
                        "lease_seconds": lease_seconds,
                        "limit": limit,
                    },
                )
                return await cur.fetchall()

    async def answered(
        self,
        question: ClaimedQuestion,
        answer: dict[str, Any],
        reasoning: str,
        stop: str | None,
        usage: dict[str, Any],
    ) -> None:
        await self._store._execute(
            queries.QUESTION_ANSWERED,
            {
                "call_id": question.call_id,
                "fingerprint": question.fingerprint,
                "answer": orjson.dumps(answer).decode(),
                "reasoning": reasoning,
                "stop": stop,
                **usage,
            },
        )

    async def failed(self, question: ClaimedQuestion, reason: str, usage: dict[str, Any]) -> None:
        await self._store._execute(
            queries.QUESTION_FAILED,
            {
                "call_id": question.call_id,
                "fingerprint": question.fingerprint,
                "reason": reason,
                **usage,
            },
        )

    async def copy_answers(self, window_seconds: float) -> None:
        await self._store._execute(queries.COPY_ANSWERS, {"window_seconds": window_seconds})

    async def prune(self) -> None:
        await self._store._execute(queries.PRUNE_LLM_CALLS, {})

    async def status(self) -> dict[str, Any]:
        [calls] = await self._store._fetchall(queries.LLM_CALLS, {}, dict_row)
        failures = await self._store._fetchall(queries.LLM_FAILURES, {}, dict_row)
        return {**calls, "failures": {f["reason"]: f["calls"] for f in failures}}
