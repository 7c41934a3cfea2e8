"""--scale: get_item latency against table size, and memory over many operations.

Two tables are bulk loaded, one with 10,000 live rows and one with 1,000,000, and
`get_item` is timed on random keys of each, in alternating rounds, so that whatever
else the machine does in the meantime weighs on both sizes alike (timed one after
the other, the p50 of the same table moved by 30-40% between runs). Finally 100,000
operations (set, get, touch, remove on 10,000 keys) run through one driver while the
process RSS is sampled.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from typing import Any

from _cleanup import FILLER, _load
from _common import TABLE, TTL, migrate, now_ms, session_value, unmigrate
from _rss import RssSampler, rss_bytes

SIZES = (10_000, 1_000_000)
ROUNDS = 10
GETS_PER_ROUND = 500
MEMORY_OPS = 100_000


async def _timed_gets(driver: Any, sample: list[str], into: list[int]) -> None:
    for key in sample:
        start = time.perf_counter_ns()
        if await driver.get_item(key) is None:
            raise AssertionError(f"live key {key!r} not found")
        into.append(time.perf_counter_ns() - start)


async def _get_p50s(url: str, sizes: tuple[int, ...]) -> dict[str, float]:
    from sqlsession.drivers.sql import SQLDriver

    # The largest size uses the harness's own table; the others get tables of their own.
    tables = {size: f"{TABLE}_{size}" if size != sizes[-1] else TABLE for size in sizes}
    expires = now_ms() + int(TTL * 1000)
    keys: dict[int, list[str]] = {}
    drivers: dict[int, Any] = {}
    latencies: dict[int, list[int]] = {size: [] for size in sizes}
    rng = random.Random(1)
    try:
        for size, table in tables.items():
            print(f"  --scale: {size:,} live rows", file=sys.stderr)
            if table != TABLE:
                await migrate(url, table)
            keys[size] = [f"k{i:08d}-{random.getrandbits(64):016x}" for i in range(size)]
            random.Random(size).shuffle(keys[size])
            await _load(url, [(k, FILLER, expires) for k in keys[size]], table)
            drivers[size] = SQLDriver(url, table=table, ttl=TTL)
        for size, driver in drivers.items():  # warm the pools and statement caches
            await _timed_gets(driver, rng.sample(keys[size], GETS_PER_ROUND), [])
        for round_ in range(ROUNDS):
            # Each size goes first in half of the rounds.
            order = list(drivers.items()) if round_ % 2 == 0 else list(drivers.items())[::-1]
            for size, driver in order:
                sample = [rng.choice(keys[size]) for _ in range(GETS_PER_ROUND)]
                await _timed_gets(driver, sample, latencies[size])
    finally:
        for driver in drivers.values():
            await driver.dispose()
        for table in tables.values():
            if table != TABLE:
                await unmigrate(url, table)
    return {f"get_p50_us_{s}": statistics.median(latencies[s]) / 1000 for s in sizes}


async def run(url: str, large: int = SIZES[-1], memory_ops: int = MEMORY_OPS) -> dict[str, Any]:
    """Measure with `large` live rows in the big table and `memory_ops` operations.

    The defaults are the published sizes; smaller ones are for trying the harness out.
    """
    from sqlsession.drivers.sql import SQLDriver

    sizes = (SIZES[0], large)
    out: dict[str, Any] = await _get_p50s(url, sizes)
    small_p50, large_p50 = (out[f"get_p50_us_{s}"] for s in sizes)
    out["get_p50_ratio"] = large_p50 / small_p50 if small_p50 else 0.0

    print(f"  --scale: RSS over {memory_ops:,} operations", file=sys.stderr)
    await _load(url, [])
    keys = [f"m{i:05d}" for i in range(10_000)]
    values = [session_value(i) for i in range(100)]
    async with SQLDriver(url, table=TABLE, ttl=TTL) as driver:

        async def step(i: int) -> None:
            key = keys[i % len(keys)]
            kind = i % 4
            if kind == 0:
                await driver.set_item(key, values[i % len(values)])
            elif kind == 1:
                await driver.get_item(key)
            elif kind == 2:
                await driver.touch(key)
            else:
                await driver.remove_item(key)

        for i in range(min(5_000, memory_ops)):  # warm-up: pool, caches, allocator arenas
            await step(i)
        before = rss_bytes()
        sampler = RssSampler()
        sampler.start()
        for i in range(memory_ops):
            await step(i)
        out["rss_peak_growth_mb"] = await sampler.stop()
        out["rss_end_growth_mb"] = (rss_bytes() - before) / 2**20
        out["memory_ops"] = memory_ops
    return out


def print_report(url: str, r: dict[str, Any]) -> None:
    print(f"\n{url} - table size and memory")
    sizes = sorted(int(k.rsplit("_", 1)[1]) for k in r if k.startswith("get_p50_us_"))
    for size in sizes:
        print(f"  get_item p50, {size:>9,} live rows   {r[f'get_p50_us_{size}']:.0f} us")
    print(f"  ratio                                {r['get_p50_ratio']:.2f}x")
    print(
        f"  RSS growth over {r['memory_ops']:,} ops       peak {r['rss_peak_growth_mb']:.1f} MB, "
        f"end {r['rss_end_growth_mb']:.1f} MB"
    )
