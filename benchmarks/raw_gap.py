"""sqlsession's sequential operations against raw asyncpg on a held connection, PostgreSQL only.

    python benchmarks/raw_gap.py --url postgresql+asyncpg://root@127.0.0.1/test --ops 2000

Both run the same statements on the same table (``benchmarks/_contenders.py``: each
encodes and decodes the JSON value), taking turns over five rounds, each round on keys
of its own: ``--ops`` set_item, then get_item, then remove_item calls per round. Prints
per operation the median latency of each and its ratio (raw / sqlsession: 1.00x means
as fast as raw), and the CPU time of this process per call, which a busy machine moves
less than wall time. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import _contenders as c
from _common import migrate, normalized, session_value
from _common import unmigrate as drop_table

ROUNDS = 5
TABLE = "bench_raw_gap"  # not run.py's table: the two may run at once
OPS = ("set", "get", "remove")
NAMES = {"set": "set_item", "get": "get_item", "remove": "remove_item"}


async def run(url: str, n: int) -> None:
    c.TABLE = TABLE  # both contenders read the table name from there when built
    await migrate(url, c.TABLE)
    ours, raw = c.SQLSession(url), c.AsyncpgHeld(url)
    await ours.start(1)
    await raw.start(1)
    value = session_value(1)
    latencies: dict[tuple[str, str], list[int]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    try:
        for round_ in range(ROUNDS):
            pair = [("sqlsession", ours), ("raw", raw)]
            for who, contender in pair if round_ % 2 == 0 else pair[::-1]:
                keys = [f"{who}{round_}:{i}" for i in range(n)]
                for op in OPS:
                    fn: Any = getattr(contender, op)
                    times = latencies.setdefault((op, who), [])
                    began = time.process_time()
                    for key in keys:
                        start = time.perf_counter_ns()
                        await (fn(key, value) if op == "set" else fn(key))
                        times.append(time.perf_counter_ns() - start)
                    cpu.setdefault((op, who), []).append((time.process_time() - began) / n)
    finally:
        await ours.stop()
        await raw.stop()
        await drop_table(url, c.TABLE)
    header = ("operation", "p50 us", "raw p50", "raw/ours", "cpu us", "raw cpu")
    print("{:12} {:>8} {:>8} {:>9} {:>7} {:>8}".format(*header))
    for op in OPS:
        ours_p50 = statistics.median(latencies[(op, "sqlsession")]) / 1000
        raw_p50 = statistics.median(latencies[(op, "raw")]) / 1000
        ours_cpu = statistics.median(cpu[(op, "sqlsession")]) * 1e6
        raw_cpu = statistics.median(cpu[(op, "raw")]) * 1e6
        print(
            f"{NAMES[op]:12} {ours_p50:8.1f} {raw_p50:8.1f} {raw_p50 / ours_p50:8.2f}x "
            f"{ours_cpu:7.1f} {raw_cpu:8.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+asyncpg://root@127.0.0.1/test")
    parser.add_argument("--ops", type=int, default=2000, help="calls per operation and round")
    args = parser.parse_args()
    asyncio.run(run(normalized(args.url), args.ops))


if __name__ == "__main__":
    main()
