"""sqlsession on MariaDB Galera: 1 node against 3, conflicts, read-your-writes, a node killed.

    .venv/bin/python benchmarks/galera.py [--ops 2000] [--json galera.json]

Starts its own cluster on loopback (``tests/galera.py``: SQL on 3311-3313, data in a
temporary directory, stopped at the end), with node 1 alone first, then all three:

- write: ``set_item`` of a 1 KB session, one task (latency p50/p99), then 16 tasks on
  node 1 (throughput); with 3 nodes also 16 tasks spread over the nodes.
- cleanup: one batch of 5,000 expired rows deleted (the default batch size).
- conflicts (3 nodes): two drivers, on nodes 1 and 2, ``merge_item`` on 20 shared
  sessions, 4 tasks each: transactions per second, retries, ``ConflictError``s.
- read-your-writes (3 nodes): ``get_item`` on node 3 right after a ``set_item`` on node
  1, with and without ``read_your_writes``: stale reads and read latency.
- node failure (3 nodes): 8 tasks write through a multi-host URL; node 1 (the one the URL
  prefers) is killed with SIGKILL; the longest gap between acknowledged writes, the
  errors, and acknowledged writes missing afterwards; then node 1 rejoins.

Not part of the test suite; the figures go in the README's "Scaling out" section.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import session_value

from sqlsession import ConflictError, SessionError
from sqlsession._migrate import upgrade
from sqlsession.drivers.sql import SQLDriver
from tests.galera import GaleraCluster

VALUE = session_value(1)


class Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "running it again" in record.getMessage():
            self.count += 1


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def write_latency(url: str, ops: int) -> dict[str, float]:
    async with SQLDriver(url, pool_size=2) as driver:
        await driver.set_item("warm", VALUE)
        times = []
        for i in range(ops):
            started = time.perf_counter()
            await driver.set_item(f"lat{i}", VALUE, ttl=3600)
            times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(pct(times, 0.5), 2), "p99_ms": round(pct(times, 0.99), 2)}


async def write_throughput(urls: list[str], ops: int, tasks: int = 16) -> float:
    drivers = [SQLDriver(url, pool_size=tasks) for url in urls]
    try:
        for driver in drivers:
            await driver.set_item("warm", VALUE)
        per_task = ops // tasks

        async def run(t: int) -> None:
            driver = drivers[t % len(drivers)]
            for i in range(per_task):
                await driver.set_item(f"tp{t}-{i}", VALUE, ttl=3600)

        started = time.perf_counter()
        await asyncio.gather(*(run(t) for t in range(tasks)))
        return round(per_task * tasks / (time.perf_counter() - started))
    finally:
        for driver in drivers:
            await driver.dispose()


async def cleanup_batch(url: str, rows: int = 5000) -> float:
    """Seconds to delete one batch of `rows` expired rows."""
    base = time.time()
    async with SQLDriver(url, pool_size=16, clock=lambda: base) as writer:
        for start in range(0, rows, 500):
            await asyncio.gather(
                *(writer.set_item(f"exp{i}", VALUE, ttl=1) for i in range(start, start + 500))
            )
    async with SQLDriver(url, clock=lambda: base + 10, cleanup_batch_size=rows) as cleaner:
        started = time.perf_counter()
        deleted = await cleaner.cleanup()
        elapsed = time.perf_counter() - started
    assert deleted == rows, deleted
    return round(elapsed * 1000, 1)


async def conflicts(galera: GaleraCluster, seconds: float = 5.0) -> dict[str, Any]:
    handler = Retries()
    logger = logging.getLogger("sqlsession")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    done = 0
    failed = 0
    stop = time.monotonic() + seconds
    drivers = [SQLDriver(galera.url(n), pool_size=4) for n in (1, 2)]
    try:

        async def run(t: int) -> None:
            nonlocal done, failed
            driver = drivers[t % 2]
            i = 0
            while time.monotonic() < stop:
                try:
                    await driver.merge_item(f"shared{(t * 7 + i) % 20}", {f"t{t}": i}, ttl=3600)
                    done += 1
                except ConflictError:
                    failed += 1
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(run(t) for t in range(8)))
        elapsed = time.perf_counter() - started
    finally:
        logger.removeHandler(handler)
        for driver in drivers:
            await driver.dispose()
    return {
        "merges": done,
        "merges_per_s": round(done / elapsed),
        "retries": handler.count,
        "retry_rate": round(handler.count / max(done, 1), 4),
        "conflict_errors": failed,
    }


async def read_your_writes(galera: GaleraCluster, ops: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with SQLDriver(galera.url(1), pool_size=2) as writer:
        for flag in (False, True):
            async with SQLDriver(galera.url(3), pool_size=2, read_your_writes=flag) as reader:
                stale = 0
                times = []
                for i in range(ops):
                    await writer.set_item("ryw", i, ttl=3600)
                    started = time.perf_counter()
                    got = await reader.get_item("ryw")
                    times.append((time.perf_counter() - started) * 1000)
                    stale += got != i
                out["on" if flag else "off"] = {
                    "stale": round(stale / ops, 4),
                    "get_p50_ms": round(pct(times, 0.5), 3),
                    "get_p99_ms": round(pct(times, 0.99), 3),
                }
    return out


async def node_failure(galera: GaleraCluster) -> dict[str, Any]:
    acked: dict[str, int] = {}
    stamps: list[float] = []
    errors = 0
    stop = asyncio.Event()
    async with SQLDriver(galera.multi_host_url(), pool_size=8) as driver:

        async def run(t: int) -> None:
            nonlocal errors
            i = 0
            while not stop.is_set():
                key = f"nf{t}-{i}"
                try:
                    await driver.set_item(key, i, ttl=3600)
                except SessionError:
                    errors += 1
                    await asyncio.sleep(0.01)
                else:
                    acked[key] = i
                    stamps.append(time.monotonic())
                i += 1

        workers = [asyncio.ensure_future(run(t)) for t in range(8)]
        await asyncio.sleep(2)
        killed = time.monotonic()
        await asyncio.to_thread(galera.kill, 1)
        await asyncio.sleep(4)
        stop.set()
        await asyncio.gather(*workers)
        ordered = sorted(stamps)
        gaps = [b - a for a, b in itertools.pairwise(ordered) if b >= killed]
        outage = max(gaps) if gaps else float("nan")
        lost = 0
        for key, value in acked.items():
            lost += await driver.get_item(key) != value
    started = time.monotonic()
    await asyncio.to_thread(galera.join, 1)
    rejoin = time.monotonic() - started
    return {
        "acked": len(acked),
        "errors": errors,
        "outage_ms": round(outage * 1000),
        "lost_acked": lost,
        "rejoin_s": round(rejoin, 1),
        "size_after": galera.query(1, "SHOW STATUS LIKE 'wsrep_cluster_size'"),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    galera = GaleraCluster()
    try:
        await asyncio.to_thread(galera.start, 1)
        galera.execute(1, "CREATE DATABASE test CHARACTER SET utf8mb4")
        await asyncio.to_thread(upgrade, galera.url(1))
        one = {
            "write": await write_latency(galera.url(1), args.ops),
            "write_per_s_16_tasks": await write_throughput([galera.url(1)], args.ops * 4),
            "cleanup_batch_5000_ms": await cleanup_batch(galera.url(1)),
        }
        results["1 node"] = one
        print("1 node:", json.dumps(one), flush=True)
        for node in (2, 3):
            await asyncio.to_thread(galera.join, node)
        galera.execute(1, "DELETE FROM test.sqlsession")
        urls = [galera.url(n) for n in (1, 2, 3)]
        three = {
            "write": await write_latency(galera.url(1), args.ops),
            "write_per_s_16_tasks": await write_throughput([galera.url(1)], args.ops * 4),
            "write_per_s_16_tasks_3_nodes": await write_throughput(urls, args.ops * 4),
            "cleanup_batch_5000_ms": await cleanup_batch(galera.url(1)),
            "conflicts": await conflicts(galera),
            "read_your_writes": await read_your_writes(galera, args.ops // 2),
            "node_failure": await node_failure(galera),
        }
        results["3 nodes"] = three
        print("3 nodes:", json.dumps(three, indent=1), flush=True)
    finally:
        await asyncio.to_thread(galera.stop)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
