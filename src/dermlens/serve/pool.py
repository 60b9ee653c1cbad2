"""A bounded inference pool: at most ``max_concurrency`` jobs run, at most ``max_queue`` wait, the rest are refused.

Refusing early (503 with Retry-After) keeps latency bounded for the requests that are accepted and keeps a burst
from piling up memory; a client that is told when to come back does better than one that times out.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable


class PoolFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"busy; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class PoolStats:
    running: int
    waiting: int
    max_concurrency: int
    max_queue: int
    mean_seconds: float | None  # recent job duration (exponential moving average)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


class InferencePool:
    def __init__(self, max_concurrency: int = 1, max_queue: int = 32):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="dermlens-inference")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting; released when the job really ends, not when its caller gives up
        self._running = 0
        self._mean_seconds: float | None = None

    def stats(self) -> PoolStats:
        with self._lock:
            waiting = self._admitted - self._running
            return PoolStats(self._running, waiting, self.max_concurrency, self.max_queue, self._mean_seconds)

    def is_full(self) -> bool:
        with self._lock:
            return self._admitted >= self.max_concurrency + self.max_queue

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead of a new job, drained at the recent job rate."""
        with self._lock:
            per_job = self._mean_seconds or 1.0
            ahead = self._admitted - self.max_concurrency + 1
        return max(1, math.ceil(ahead * per_job / self.max_concurrency))

    def _run(self, fn: Callable[..., Any], args: tuple) -> Any:
        with self._lock:
            self._running += 1
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            seconds = time.perf_counter() - started
            with self._lock:
                self._running -= 1
                self._mean_seconds = seconds if self._mean_seconds is None else 0.8 * self._mean_seconds + 0.2 * seconds

    def _release(self, _: Future) -> None:
        with self._lock:
            self._admitted -= 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue a job or raise :class:`PoolFull`."""
        with self._lock:
            full = self._admitted >= self.max_concurrency + self.max_queue
            if not full:
                self._admitted += 1
        if full:
            raise PoolFull(self.retry_after())
        future = self._executor.submit(self._run, fn, args)
        future.add_done_callback(self._release)
        return future

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the pool and await it. A cancelled caller takes its job off the queue if it has not
        started; a started job runs to the end and keeps its place counted until then."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
