"""Cleanup paced by the app's own latency: the pacer's decisions, and cleanups that finish.

Times are fed to the latency watches as numbers; nothing here measures speed.
"""

from __future__ import annotations

import asyncio

import pytest

from sqlsession.drivers.sql import SQLDriver, _pacing
from sqlsession.drivers.sql._pacing import (
    MAX_WAIT,
    MIN_SAMPLES,
    STEP,
    CleanupPacer,
    LatencyWatch,
)

from .conftest import DriverFactory, FakeClock

SQL = pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])


def watch_with_baseline(seconds: float = 0.001) -> LatencyWatch:
    watch = LatencyWatch()
    for _ in range(MIN_SAMPLES):
        watch.observe(seconds)
    return watch


async def no_pause(_elapsed: float) -> None:
    return None


def test_no_baseline_no_pacing() -> None:
    watch = LatencyWatch()
    for _ in range(MIN_SAMPLES - 1):
        watch.observe(0.001)
    assert watch.baseline() is None
    pacer = CleanupPacer(500, (watch,))
    with pacer.watching():
        assert watch.tally is None
    watch.observe(0.001)
    assert watch.baseline() == 0.001


async def test_slow_operations_shrink_the_batch_and_fast_ones_grow_it() -> None:
    reads, writes = watch_with_baseline(), watch_with_baseline(0.004)
    pacer = CleanupPacer(500, (reads, writes))
    with pacer.watching():
        assert reads.tally is not None
        for _ in range(1000):
            reads.observe(0.0011)  # within the slack of the idle p99
        writes.observe(0.001)
        await pacer.pause(0.01, no_pause)
        assert pacer.size == 500  # never above the configured size
        assert pacer.waited == 0.0
        writes.observe(0.05)  # one slow write: maybe chance, the batch stays
        await pacer.pause(0.01, no_pause)
        assert pacer.size == 500
        writes.observe(0.05)  # two slow writes of two since the last batch
        writes.observe(0.05)
        await pacer.pause(0.01, no_pause)
        assert pacer.size == 250
        # Nothing more came from the app: the pacer waited one step, not for the budget.
        assert pacer.waited == 2 * STEP
        await pacer.pause(0.01, no_pause)
        assert pacer.size == 250 + 250 // 8
        for _ in range(20):
            writes.observe(0.05)
            writes.observe(0.05)
            await pacer.pause(0.01, no_pause)
        assert pacer.size == pacer.smallest == 20
    # The cleanup's time is kept out of the baseline, and the tallies are gone.
    assert reads.tally is None
    assert writes.tally is None
    assert reads.baseline() == 0.001


async def test_over_budget_waits_for_fast_operations_then_goes_on() -> None:
    writes = watch_with_baseline()
    pacer = CleanupPacer(100, (writes,))

    async def app() -> None:
        # The app keeps writing, fast: the budget comes back after 1 / BUDGET of them.
        for _ in range(400):
            writes.observe(0.001)
            await asyncio.sleep(0)

    with pacer.watching():
        writes.observe(0.5)
        running = asyncio.ensure_future(app())
        await pacer.pause(0.1, no_pause)
        assert writes.tally is not None
        assert writes.tally.slow == [1, 0]
        assert sum(writes.tally.total) > 100  # it waited for the app's fast writes
        assert 0 < pacer.waited <= MAX_WAIT
        await running


async def test_slowness_between_batches_too_is_not_the_cleanups() -> None:
    writes = watch_with_baseline()
    pacer = CleanupPacer(100, (writes,))
    with pacer.watching():
        tally = writes.tally
        assert tally is not None
        # The machine is slow anyway: a fifth of the writes between batches are slow...
        tally.in_batch = False
        for i in range(100):
            writes.observe(0.5 if i % 5 == 0 else 0.001)
        tally.in_batch = True
        # ... and as many during a batch: none of it is the cleanup's doing.
        for i in range(10):
            writes.observe(0.5 if i % 5 == 0 else 0.001)
        assert tally.excess() == 0
        await pacer.pause(0.1, no_pause)
        assert pacer.size == 100
        assert pacer.waited == 0.0
        # More slow writes in a batch than between batches: the excess is the cleanup's.
        for _ in range(5):
            writes.observe(0.5)
        assert tally.excess() == pytest.approx(5 - 0.2 * 5)


async def test_the_wait_is_bounded_by_the_batch_time() -> None:
    writes = watch_with_baseline()
    pacer = CleanupPacer(100, (writes,))
    stop = asyncio.Event()

    async def slow_app() -> None:
        # Every write slow, for ever: the budget never comes back.
        while not stop.is_set():
            writes.observe(0.5)
            await asyncio.sleep(0)

    with pacer.watching():
        running = asyncio.ensure_future(slow_app())
        await asyncio.sleep(0)
        await pacer.pause(0.002, no_pause)
        stop.set()
        await running
    assert 0 < pacer.waited <= _pacing.WAIT_RATIO * 0.002 + STEP


@SQL
async def test_a_paced_cleanup_finishes(
    make_driver: DriverFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every read is slow against the baseline below, so the pacer may wait: not for long.
    monkeypatch.setattr(_pacing, "MAX_WAIT", 0.05)
    driver: SQLDriver = await make_driver(cleanup_batch_size=40)
    await driver.set_many({f"old{i:04d}": i for i in range(500)}, ttl=10)
    await driver.set_many({f"live{i:03d}": i for i in range(50)}, ttl=1000)
    # A baseline of fast reads, then the app's reads are slow while the cleanup runs.
    reads, _ = driver._latency
    for _ in range(MIN_SAMPLES):
        reads.observe(0.0001)
    clock.advance(20)
    stop = asyncio.Event()

    async def app() -> int:
        done = 0
        while not stop.is_set():
            assert await driver.get_item("live001") == 1
            done += 1
            await asyncio.sleep(0)
        return done

    reader = asyncio.ensure_future(app())
    try:
        assert await driver.cleanup() == 500
    finally:
        stop.set()
    assert await reader >= 1
    assert reads.tally is None
    # The reads during cleanup stayed out of the baseline (the reader's last read may
    # have ended after the cleanup).
    assert reads._count <= MIN_SAMPLES + 1
    assert await driver.stats() == {"live": 50, "expired": 0}


@SQL
async def test_a_paced_prefix_cleanup_finishes(
    make_driver: DriverFactory, clock: FakeClock
) -> None:
    driver: SQLDriver = await make_driver(cleanup_batch_size=25)
    await driver.set_many({f"a:{i:03d}": i for i in range(100)}, ttl=10)
    await driver.set_many({f"b:{i:03d}": i for i in range(10)}, ttl=10)
    _, writes = driver._latency
    for _ in range(MIN_SAMPLES):
        writes.observe(0.0001)
    clock.advance(20)
    assert await driver.cleanup("a:") == 100
    assert await driver.stats() == {"live": 0, "expired": 10}
