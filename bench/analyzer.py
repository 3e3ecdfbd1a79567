"""The analyzer's figures: how often it is right on each corpus in tests/unit, and its time
per call.

- the first list (analyzer_cases.jsonl): the providers it was first built from;
- the other providers' cases (analyzer_cases_unseen.jsonl): what its shapes were built from;
- the probes (analyzer_probes_unseen.jsonl): other providers, written before the shapes and
  never tuned on;
- the held-out set (analyzer_holdout.jsonl): yet other providers, written by someone who had
  not seen the rules, never tuned on; its clear cases scored apart from the unclear ones
  (for which a wrong category is only a miss when it comes with confidence of 0.6 or more).

Usage: python -m bench.analyzer [--failures] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from selfheal.core.analyzer import analyze
from selfheal.models import Analysis, Failure

CORPORA = Path(__file__).resolve().parents[1] / "tests" / "unit"


def _load(name: str) -> list[dict[str, Any]]:
    lines = (CORPORA / name).read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _failure(case: dict[str, Any]) -> Failure:
    return Failure.coerce(
        case["service_name"],
        case["http_status"],
        case["error_code"],
        case["error_message"],
        case["response_headers"],
    )


def _score(what: str, cases: list[dict[str, Any]], show: bool) -> None:
    misses: list[tuple[dict[str, Any], Analysis]] = []
    for case in cases:
        result = analyze(_failure(case))
        wrong = result.category.value != case["expected"]
        if wrong and (case.get("clear", True) or result.confidence >= 0.6):
            misses.append((case, result))
    right = len(cases) - len(misses)
    print(f"{what}: {right}/{len(cases)} ({right / len(cases):.1%})")
    for case, result in misses if show else ():
        print(
            f"    {case['service_name']} {case['http_status']} {case['error_code']!r}: expected "
            f"{case['expected']}, got {result.category.value} ({result.confidence:.2f}); "
            f"{case.get('note', '')}"
        )


def _microseconds(cases: list[dict[str, Any]], rounds: int) -> float:
    failures = [_failure(case) for case in cases]
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for failure in failures:
            analyze(failure)
        timings.append((time.perf_counter() - started) / len(failures) * 1e6)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--failures", action="store_true", help="list the cases it gets wrong")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    first = _load("analyzer_cases.jsonl")
    unseen = _load("analyzer_cases_unseen.jsonl")
    holdout = _load("analyzer_holdout.jsonl")
    _score("first list", first, args.failures)
    _score("other providers (built from)", unseen, args.failures)
    _score("probes (never tuned on)", _load("analyzer_probes_unseen.jsonl"), args.failures)
    _score("held out, clear (never tuned on)", [c for c in holdout if c["clear"]], args.failures)
    _score("held out, unclear", [c for c in holdout if not c["clear"]], args.failures)
    for what, cases in (("first list", first), ("other providers", unseen)):
        print(f"analyze(): {_microseconds(cases, args.rounds):.1f} µs per call ({what}, median)")


if __name__ == "__main__":
    main()
