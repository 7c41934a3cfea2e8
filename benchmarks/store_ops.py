"""The key-value store operations of the SQL driver against `get_item`, and the SQL each runs.

    python benchmarks/store_ops.py --url sqlite+aiosqlite:////tmp/bench.db \
        --url postgresql+asyncpg://root@127.0.0.1/test --url mysql://root@127.0.0.1:3306/test \
        --ops 2000 --sql

For each URL: a table of its own (created, then dropped), ``--ops`` keys holding a 1 KB
session each, then every operation ``--ops`` times in one task; prints the median and p99
latency in microseconds and the median as a multiple of `get_item`'s. The bulk operations
handle 10 keys per call. ``--sql`` also prints the statements each operation sends (the
fast path's for the operations it runs). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import migrate, normalized, percentile, session_value
from _common import unmigrate as drop_table

TABLE = "bench_store_ops"
TTL = 3600.0
BULK = 10


async def measure(n: int, op: Callable[[int], Awaitable[Any]]) -> list[int]:
    times = []
    for i in range(n):
        start = time.perf_counter_ns()
        await op(i)
        times.append(time.perf_counter_ns() - start)
    return times


def keys(n: int, tag: str) -> list[str]:
    return [f"{tag}:{secrets.token_hex(16)}" for _ in range(n)]


async def bench(url: str, n: int, show_sql: bool) -> None:
    from sqlalchemy import event

    from sqlsession.drivers.sql import SQLDriver

    await migrate(url, TABLE)
    driver = SQLDriver(url, table=TABLE, ttl=TTL)
    try:
        live = keys(n, "live")
        value = session_value(1)
        for start in range(0, n, 500):
            await driver.set_many(dict.fromkeys(live[start : start + 500], value))
        doomed = keys(n, "del")
        for start in range(0, n, 500):
            await driver.set_many(dict.fromkeys(doomed[start : start + 500], value))
        doomed_many = keys(n * BULK, "delm")
        for start in range(0, len(doomed_many), 500):
            await driver.set_many(dict.fromkeys(doomed_many[start : start + 500], value))
        fresh = keys(n, "add")
        fresh_many = keys(n * BULK, "setm")

        ops: dict[str, Callable[[int], Awaitable[Any]]] = {
            "get_item": lambda i: driver.get_item(live[i]),
            "get_entry": lambda i: driver.get_entry(live[i]),
            "get_entry(renew=)": lambda i: driver.get_entry(live[i], renew=TTL),
            "delete_item": lambda i: driver.delete_item(doomed[i]),
            "add_item (new)": lambda i: driver.add_item(fresh[i], value),
            "add_item (present)": lambda i: driver.add_item(live[i], value),
            f"get_many ({BULK})": lambda i: driver.get_many(live[i : i + BULK]),
            f"get_entries ({BULK})": lambda i: driver.get_entries(live[i : i + BULK]),
            f"set_many ({BULK})": lambda i: driver.set_many(
                dict.fromkeys(fresh_many[i * BULK : (i + 1) * BULK], value)
            ),
            f"remove_many ({BULK})": lambda i: driver.remove_many(
                doomed_many[i * BULK : (i + 1) * BULK]
            ),
            "cleanup(prefix=) (none expired)": lambda i: driver.cleanup(prefix="live:"),
        }
        if show_sql:
            statements: list[str] = []

            @event.listens_for(driver.engine.sync_engine, "before_cursor_execute")
            def _seen(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
                statements.append(" ".join(sql.split()))

            print(f"\n## SQL on {driver.dialect}")
            probe = keys(2 * BULK, "probe")
            await driver.set_many(dict.fromkeys(probe, value))
            for name in ops:
                statements.clear()
                # Run on the probe keys so the measured keys stay as they were.
                await {
                    "get_item": lambda: driver.get_item(probe[0]),
                    "get_entry": lambda: driver.get_entry(probe[0]),
                    "get_entry(renew=)": lambda: driver.get_entry(probe[0], renew=TTL),
                    "delete_item": lambda: driver.delete_item(probe[1]),
                    "add_item (new)": lambda: driver.add_item(probe[1], value),
                    "add_item (present)": lambda: driver.add_item(probe[1], value),
                    f"get_many ({BULK})": lambda: driver.get_many(probe[:2]),
                    f"get_entries ({BULK})": lambda: driver.get_entries(probe[:2]),
                    f"set_many ({BULK})": lambda: driver.set_many(dict.fromkeys(probe[:2], 1)),
                    f"remove_many ({BULK})": lambda: driver.remove_many(probe[:2]),
                    "cleanup(prefix=) (none expired)": lambda: driver.cleanup(prefix="probe:"),
                }[name]()
                if not statements and driver._fast is not None:
                    fast = {
                        "get_item": "get",
                        "get_entry": "entry",
                        "delete_item": "delete_live",
                        "add_item (new)": "add",
                        "add_item (present)": "add",
                    }[name]
                    sql = " ".join(driver._fast._statements[fast][0].split())
                    statements.append(sql + "  [fast path]")
                print(f"- {name}:")
                for sql in statements:
                    print(f"    {sql}")
            event.remove(driver.engine.sync_engine, "before_cursor_execute", _seen)

        print(f"\n## {driver.dialect}: {n} calls each, one task (microseconds)")
        print(f"{'operation':34} {'p50':>8} {'p99':>8} {'x get_item':>10}")
        base = None
        for name, op in ops.items():
            times = await measure(n, op)
            p50 = percentile(times, 50)
            p99 = percentile(times, 99)
            base = base or p50
            print(f"{name:34} {p50:8.0f} {p99:8.0f} {p50 / base:10.2f}")
    finally:
        await driver.dispose()
        await drop_table(url, TABLE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--sql", action="store_true", help="print the SQL of each operation")
    args = parser.parse_args()
    for url in args.url:
        asyncio.run(bench(normalized(url), args.ops, args.sql))


if __name__ == "__main__":
    main()
