"""Helpers shared by the benchmark scripts: machine description and interleaved median timing."""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> str:
    """The 1/5/15-minute load average: the machine is shared, so every report says how busy it was."""
    try:
        return "load avg %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load avg n/a"


def timed(fn: Callable[[], object], sync: Callable[[], None] = lambda: None) -> float:
    """Seconds one call of ``fn`` takes, with ``sync`` (e.g. ``torch.cuda.synchronize``) on both sides."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def race(runners: dict[str, Callable[[], object]], items: int, repeats: int, warmup: int,
         sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median items/s of each runner (``items`` per call), interleaving their repeats so that a noisy
    neighbour slows every runner alike."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            times[name].append(timed(fn, sync))
    return {name: items / statistics.median(t) for name, t in times.items()}
