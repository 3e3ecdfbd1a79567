"""The LLM's second opinion, measured against a loopback OpenAI-compatible server that
takes `--answer-seconds` per answer: whether asking slows healing (it must not).

A burst of `--count` identical unknown failures (one alert group), each replayed once to a
loopback API that succeeds: the seconds from the commit to the last record written and to
the last one resolved, with the LLM off and on; the questions it cost (the target: one),
and the seconds from the answer to every record of the group carrying it.

Usage: python -m bench.llm [--count 5000] [--answer-seconds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import psycopg

from bench.common import bench_databases, quiet_daemon
from tests.support.http import Request, Response, StubServer

COMPLETIONS = "/v1/chat/completions"
REPLAY = "/v1/widgets"

BURST = """
INSERT INTO integration_events (service_name, event_type, payload, status, error_code,
                                error_message, http_status, endpoint)
SELECT 'acme', 'bench.llm', jsonb_build_object('n', g), 'error', 'teapot_mode',
       'the kettle is sulking (request ' || g || ')', 418, %(endpoint)s
FROM generate_series(1, %(count)s) AS g
"""

ANSWER = {
    "category": "unknown",
    "confidence": 0.4,
    "root_cause": "An unrecognised provider state.",
    "recovery_steps": ["Check the provider's status page"],
    "prevention": "Map this error code.",
}


def _answer(delay: float) -> Response:
    message = {"role": "assistant", "content": json.dumps(ANSWER)}
    return Response(
        200,
        {
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 400, "completion_tokens": 60},
        },
        delay=delay,
    )


# When each figure is reached: every condition is polled together, none waits for another.
PROGRESS = """
SELECT count(*), count(*) FILTER (WHERE status = 'resolved'),
       count(*) FILTER (WHERE llm_reasoning IS NOT NULL)
FROM system_integrity_events
"""


def _progress(conn: psycopg.Connection[tuple[object, ...]], count: int, llm: bool) -> list[float]:
    """perf_counter() when the count was recorded, resolved, and carried the answer."""
    reached: list[float | None] = [None, None, None if llm else 0.0]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        row = conn.execute(PROGRESS).fetchone()
        assert row is not None
        now = time.perf_counter()
        for n, value in enumerate(row):
            if reached[n] is None and int(str(value)) >= count:
                reached[n] = now
        if all(r is not None for r in reached):
            return [r for r in reached if r is not None]
        time.sleep(0.01)
    raise TimeoutError(f"the burst did not settle: {reached}")


def burst(url: str, count: int, answer_seconds: float, llm: bool) -> dict[str, float]:
    with StubServer() as servers:
        servers.route("POST", REPLAY, Response(200, {"ok": True}))
        asked: list[float] = []

        def answer(_: Request) -> Response:
            asked.append(time.perf_counter())
            return _answer(answer_seconds)

        servers.route("POST", COMPLETIONS, answer)
        env = {
            "SELFHEAL_USE_LLM": "true" if llm else "false",
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": servers.url + "/v1",
            "SLACK_WEBHOOK_URL": "",
            "MICROSOFT_TEAMS_WEBHOOK_URL": "",
        }
        with quiet_daemon(url, **env), psycopg.connect(url, autocommit=True) as conn:
            conn.execute(BURST, {"count": count, "endpoint": servers.url + REPLAY})
            committed = time.perf_counter()
            recorded, resolved, carried = _progress(conn, count, llm)
            figures = {
                "recorded": recorded - committed,
                "resolved": resolved - committed,
                "questions": float(len(servers.requests(COMPLETIONS))),
            }
            if llm:
                figures["answer_to_all_records"] = carried - (asked[0] + answer_seconds)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--answer-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dbs = bench_databases()
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    try:
        for _ in range(args.rounds):
            for llm in (False, True):
                with dbs.fresh() as url:
                    figures = burst(url, args.count, args.answer_seconds, llm)
                results[llm].append(figures)
                shown = "  ".join(f"{k} {v:.3f}" for k, v in figures.items())
                print(f"LLM {'on ' if llm else 'off'}: {shown}")
    finally:
        dbs.close()
    for key in ("recorded", "resolved"):
        off, on = (statistics.median(r[key] for r in results[m]) for m in (False, True))
        change = on / off - 1
        print(
            f"median seconds to the last record {key}: {off:.3f} off, {on:.3f} on ({change:+.1%})"
        )
    questions = sorted({int(r["questions"]) for r in results[True]})
    carried = statistics.median(r["answer_to_all_records"] for r in results[True])
    print(
        f"questions per burst of {args.count}: {questions}; answer to every record carrying it: "
        f"median {carried:.3f} s"
    )


if __name__ == "__main__":
    main()
