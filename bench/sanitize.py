"""Worst-case time of the sanitizer: adversarial and huge texts, cyclic and shared values.

Each case is the slowest of a few rounds; the targets are those the unit tests used to
time (0.5 s for a 2.4 MB text cut to 4096 characters, 1 s for every other case).
Usage: python -m bench.sanitize [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from selfheal.core.sanitize import scrub, scrub_text
from tests.support.adversarial import ADVERSARIAL_TEXTS


def slowest_seconds(work: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return max(times)


def cyclic() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    value.append(value)
    return value


def shared() -> list[Any]:
    value: list[Any] = ["x"] * 100
    for _ in range(10):
        value = [value] * 100  # 10**20 leaves if expanded
    return value


def cases() -> list[tuple[str, Callable[[], object], float]]:
    """(name, work, target seconds)."""
    huge = "start " + "lorem ipsum " * 200_000 + "tail"
    found: list[tuple[str, Callable[[], object], float]] = [
        ("huge text, max_length=4096", lambda: scrub_text(huge, max_length=4096), 0.5)
    ]
    for text in ADVERSARIAL_TEXTS:
        for max_length in (4096, 200_000):
            name = f"{text[:15]!r} x {len(text):,} chars, max_length={max_length}"
            found.append((name, partial(scrub_text, text, max_length=max_length), 1.0))
    cycle, tree = cyclic(), shared()
    found.append(("a self-referencing list", lambda: scrub(cycle), 1.0))
    found.append(("100 x 100 x ... shared lists", lambda: scrub(tree, max_items=100), 1.0))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    over = 0
    for name, work, target in cases():
        seconds = slowest_seconds(work, args.rounds)
        mark = "" if seconds < target else f"  OVER the {target:g} s target"
        over += seconds >= target
        print(f"{seconds * 1000:9.1f} ms  {name}{mark}")
    print(f"{over} case(s) over target")


if __name__ == "__main__":
    main()
