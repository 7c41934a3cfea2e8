"""SQLite: how long a read waits while writers wait for a write lock held elsewhere.

    python benchmarks/sqlite_readers.py --writers 6 --hold 3 --reads 20

Another connection (as another process would) takes SQLite's write lock with
``BEGIN IMMEDIATE`` and keeps it for ``--hold`` seconds. Meanwhile ``--writers`` tasks
call ``set_item`` (each waits for the lock in SQLite's busy handler), and, once they
are waiting, one task does ``--reads`` ``get_item`` calls one after the other. Prints
the read latencies (first, median, longest) and when the writers finished. It is not
part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
from pathlib import Path

from sqlsession import _migrate
from sqlsession.drivers.sql import SQLDriver


async def measure(path: Path, writers: int, hold: float, reads: int) -> dict[str, float]:
    """Read latencies (ms) while `writers` wait on a lock held `hold` seconds elsewhere."""
    loop = asyncio.get_running_loop()
    async with SQLDriver(f"sqlite:///{path}") as driver:
        await driver.set_item("read-me", {"cart": [1, 2, 3]})
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        release_at = loop.time() + hold
        loop.call_at(release_at, holder.execute, "COMMIT")
        writing = [asyncio.ensure_future(driver.set_item(f"writer-{n}", n)) for n in range(writers)]
        await asyncio.sleep(0.2)  # every writer is now waiting for the lock
        latencies = []
        for _ in range(reads):
            started = loop.time()
            await driver.get_item("read-me")
            latencies.append((loop.time() - started) * 1000)
        outcomes = await asyncio.gather(*writing, return_exceptions=True)
        writers_done = (loop.time() - release_at) * 1000
        await asyncio.sleep(max(0.0, release_at - loop.time()))
        holder.close()
    return {
        "read_first_ms": latencies[0],
        "read_median_ms": statistics.median(latencies),
        "read_max_ms": max(latencies),
        "writers_done_after_release_ms": writers_done,
        "writers_failed": sum(isinstance(outcome, Exception) for outcome in outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=6)
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the lock is held")
    parser.add_argument("--reads", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sessions.db"
        _migrate.upgrade(f"sqlite:///{path}", table="sqlsession", schema=None)
        result = asyncio.run(measure(path, args.writers, args.hold, args.reads))
    print(
        f"{args.writers} writers waiting on a lock held {args.hold:g} s elsewhere: "
        f"{args.reads} reads, first {result['read_first_ms']:.1f} ms, median "
        f"{result['read_median_ms']:.1f} ms, longest {result['read_max_ms']:.1f} ms; "
        f"writers done {result['writers_done_after_release_ms']:.0f} ms after the release, "
        f"{result['writers_failed']:.0f} of them failed"
    )


if __name__ == "__main__":
    main()
