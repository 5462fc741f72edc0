"""Timing shared by the benchmark scripts: a median of loops of calls, after a warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timeit(fn: Callable[[], object], repeats: int, budget: float = 10.0) -> float:
    """Median over ``repeats`` of the mean time per call of a loop of calls.

    Each loop runs long enough (>= 10 ms) for the clock, so microsecond products are timed
    as reliably as second-long ones; fewer repeats if a call is slow, and a call slower than
    ``budget`` is timed once, cold. Warm-up first: calls for at least 0.1 s (at least one),
    so that the first case of a fresh process does not pay for growing the heap and starting
    thread pools.

    Methods are timed one after the other, not interleaved: on this VM, alternating numpy,
    single- and multi-threaded torch work every few milliseconds made identical computations
    differ by up to 3x (allocator and thread-pool churn), far more than sequential drift.
    """
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > budget:
        return first
    while time.perf_counter() - start < 0.1:
        fn()
    number = max(1, int(0.01 / max(first, 1e-9)))
    runs = max(1, min(repeats, int(budget / max(first * number, 1e-9))))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)
