"""The bounded inference pool: admits running + queued jobs up to its size, refuses the rest, and counts a place as
taken for exactly as long as its job really runs or waits."""
from __future__ import annotations

import asyncio
import threading

import pytest

from dermlens.serve.pool import InferencePool, PoolFull


def test_refuses_beyond_running_plus_queued_and_recovers():
    pool = InferencePool(max_concurrency=1, max_queue=2)
    gate = threading.Event()
    ran = []
    futures = [pool.submit(lambda k=k: (gate.wait(10), ran.append(k))) for k in range(3)]
    assert pool.is_full()
    with pytest.raises(PoolFull) as refused:
        pool.submit(lambda: None)
    assert refused.value.retry_after >= 1
    gate.set()
    for future in futures:
        future.result(timeout=10)
    assert ran == [0, 1, 2]  # first come, first served
    stats = pool.stats()
    assert (stats.running, stats.waiting) == (0, 0) and stats.mean_seconds is not None
    assert not pool.is_full()
    pool.shutdown()


def test_retry_after_grows_with_the_queue_and_job_time():
    pool = InferencePool(max_concurrency=1, max_queue=10)
    pool._mean_seconds = 2.0  # as if recent jobs took 2 s each
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 10) for _ in range(5)]  # 1 running, 4 waiting
    assert pool.retry_after() == 10  # a new job has 5 ahead of it at one worker: 5 x 2 s
    gate.set()
    for future in futures:
        future.result(timeout=10)
    pool.shutdown()


def test_a_caller_that_gives_up_frees_its_queued_place_without_running():
    pool = InferencePool(max_concurrency=1, max_queue=1)
    gate = threading.Event()
    ran = []

    async def scenario():
        running = asyncio.ensure_future(pool.run(gate.wait, 10))
        queued = asyncio.ensure_future(pool.run(ran.append, "queued job"))
        await asyncio.sleep(0.05)
        assert pool.is_full()
        queued.cancel()  # e.g. the client disconnected while waiting
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert not pool.is_full()  # its place is free again...
        gate.set()
        await running
        return ran

    assert asyncio.run(scenario()) == []  # ...and its job never ran
    pool.shutdown()


def test_rejects_nonsense_sizes():
    with pytest.raises(ValueError):
        InferencePool(max_concurrency=0)
    with pytest.raises(ValueError):
        InferencePool(max_queue=-1)
