"""Time one contender: the first call apart, then warm-up and timed repeats."""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from typing import Any, Callable

import torch


class _Records(logging.Handler):
    """Collects the library's log lines (e.g. "make_fx cannot trace the step")."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def measure(fn: Callable[[], Any], repeats: int, device: str, warmup: int = 3) -> dict:
    """Median, interquartile range, first-call time, CUDA peak memory and fallback notes."""
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    logged = _Records()
    logging.getLogger("functional_grads").addHandler(logged)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
        sync()
    finally:
        logging.getLogger("functional_grads").removeHandler(logged)
    first = time.perf_counter() - t0
    notes = [str(w.message)[:400] for w in caught if "Fallback" in type(w.message).__name__]
    notes += [m[:400] for m in logged.messages if "cannot trace" in m]
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return {"first_call_s": first, "median_ms": statistics.median(times), "q1_ms": q[0], "q3_ms": q[2],
            "iqr_ms": q[2] - q[0], "peak_mem_mib": peak, "notes": notes}
