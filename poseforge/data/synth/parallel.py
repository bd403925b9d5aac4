"""Rendering many synthetic images: a process pool (one thread per process), the dataset each worker
builds once, and a progress display."""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import torch

log = logging.getLogger("poseforge")

T = TypeVar("T")
_BUILT: dict[str, Any] = {}  # per process: the last object built_once made


def built_once(factory: Callable[..., T], options: dict[str, Any]) -> T:
    """``factory(**options)``, made once per process and reused while the options stay the same: a
    worker process renders many chunks of one dataset."""
    key = f"{factory.__module__}.{factory.__qualname__}:{sorted(options.items())!r}"
    if key not in _BUILT:
        _BUILT.clear()
        _BUILT[key] = factory(**options)
    return _BUILT[key]


def index_chunks(count: int, size: int) -> list[list[int]]:
    """``0 .. count-1`` in consecutive chunks of ``size`` (the last may be shorter): one render call each."""
    return [list(range(s, min(s + size, count))) for s in range(0, count, size)]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cores_per_process() -> int:
    """Usable cores divided among the processes that torchrun started on this machine
    (``LOCAL_WORLD_SIZE``), so that ranks rendering at once do not oversubscribe the cores."""
    local_processes = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    return max(usable_cores() // local_processes, 1)


def _single_threaded_worker() -> None:
    """Pool initializer: one torch (OpenMP/MKL) thread per worker; the workers share the cores."""
    torch.set_num_threads(1)


@contextmanager
def render_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes (each rendering on one thread: the renderer's ops are too small to gain from
    intra-op threads, and the workers already fill the cores), or None for in-process rendering when
    ``workers <= 1``.

    While the pool lives, OpenCV runs one thread in this process: the workers are forked from it when
    work arrives and inherit that (encoding images there must not start a thread pool per worker), and
    OpenCV's pool is not fork-safe to reconfigure in a child. The caller's setting is restored after.
    """
    if workers <= 1:
        yield None
        return
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with ProcessPoolExecutor(max_workers=workers, initializer=_single_threaded_worker) as pool:
            yield pool
    finally:
        cv2.setNumThreads(threads)


class render_progress:
    """``with render_progress(total, what) as advance: advance(n)`` — a rich progress bar on stderr, or
    log lines every few seconds when rich is unavailable or stderr is not a terminal (a run's log file)."""

    def __init__(self, total: int, what: str = "rendering") -> None:
        self.total, self.what = total, what
        self._bar = None

    def __enter__(self) -> Callable[[int], None]:
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            console = Console(stderr=True)
            if console.is_terminal:
                self._bar = Progress(TextColumn(self.what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                     console=console, transient=True)
        except ImportError:  # rich is a dependency, but keep working without it
            self._bar = None
        if self._bar is not None:
            self._bar.__enter__()
            task = self._bar.add_task("render", total=self.total)
            return lambda n: self._bar.advance(task, n)
        done, last = 0, time.perf_counter()

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.perf_counter()
            if now - last > 10 or done == self.total:
                log.info(f"{self.what}: {done}/{self.total} images")
                last = now

        return advance

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
