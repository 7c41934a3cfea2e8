"""A changed session's write: the one-statement merge against the locked merge, in one run.

    .venv/bin/python benchmarks/merge_ops.py --url sqlite+aiosqlite:////tmp/bench.db \
        --url postgresql+asyncpg://root@127.0.0.1/test --url mysql://root@127.0.0.1:3306/test \
        --ops 2000 --rounds 3

For each URL: a table of its own (created, then dropped), 16 sessions of about 1 KB,
then a changed request's write (two members set, a counter and a 6-item cart, and one
deleted) ``--ops`` times through ``merge_existing_text`` (the texts the session layer
encoded) and through ``merge_existing`` (values), in turns:

    locked   what main ran at bb32a89 for both: the locked merge (BEGIN, a locking
             read, the UPDATE of the merged dict, COMMIT), the texts decoded first
    one      the one UPDATE that merges in the database (`dialects._merge`); for
             merge_existing on MariaDB, which has no UPDATE ... RETURNING, the locked
             merge again

each sequentially (one task) and from 16 tasks (one session each), ``--rounds`` times
alternating; prints ops/s (the median of the rounds) and one/locked. Not part of the
test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import make_keys, migrate, normalized, session_value
from _common import unmigrate as drop_table

TABLE = "bench_merge_ops"
TTL = 3600.0
TASKS = 16


def change(i: int) -> tuple[dict[str, str], list[str]]:
    """What a changed request writes: a counter, the cart, and a flash message read."""
    cart = [{"sku": f"SKU-{i % 997:06d}", "qty": 1 + i % 3, "price": 9.5} for _ in range(6)]
    texts = {"counter": str(i), "cart": json.dumps(cart, separators=(",", ":"))}
    return texts, ["flash"]


async def run(ops: int, tasks: int, merge: Callable[[int, int], Awaitable[Any]]) -> float:
    """Ops/s of `ops` merges spread over `tasks` tasks (each on its own session)."""
    per_task = ops // tasks

    async def worker(task: int) -> None:
        for i in range(per_task):
            await merge(task, i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    return per_task * tasks / (time.perf_counter() - start)


async def bench(url: str, ops: int, rounds: int) -> None:
    from sqlsession import _codec
    from sqlsession.drivers.sql import SQLDriver

    await migrate(url, TABLE)
    driver = SQLDriver(url, table=TABLE, ttl=TTL)
    try:
        sessions = make_keys(TASKS)
        await driver.set_many({key: session_value(n) for n, key in enumerate(sessions)})

        values = [
            {name: json.loads(text) for name, text in change(i)[0].items()} for i in range(ops)
        ]

        async def one_text(task: int, i: int) -> None:
            texts, delete = change(i)
            assert await driver.merge_existing_text(sessions[task], texts, delete)

        async def locked_text(task: int, i: int) -> None:
            # merge_existing_text as main ran it at bb32a89.
            key = sessions[task]
            texts, delete = change(i)
            decoded = {name: _codec.decode(text, key) for name, text in texts.items()}
            assert await driver._merge(key, decoded, delete, TTL, create=False) is not None

        async def one_values(task: int, i: int) -> None:
            assert await driver.merge_existing(sessions[task], values[i], ["flash"]) is not None

        async def locked_values(task: int, i: int) -> None:
            # merge_existing as main ran it at bb32a89.
            merged = await driver._merge(sessions[task], values[i], ["flash"], TTL, create=False)
            assert merged is not None

        apis = {
            "merge_existing_text": {"locked": locked_text, "one": one_text},
            "merge_existing": {"locked": locked_values, "one": one_values},
        }
        for contenders in apis.values():
            for merge in contenders.values():
                await run(100, 1, merge)  # warm: connections opened, statements prepared
        results: dict[tuple[str, str, int], list[float]] = {}
        for _ in range(rounds):
            for tasks in (1, TASKS):
                for api, contenders in apis.items():
                    for name, merge in contenders.items():
                        rate = await run(ops, tasks, merge)
                        results.setdefault((api, name, tasks), []).append(rate)
        print(f"\n## {driver.dialect}: {ops} calls, median of {rounds}")
        header = f"{'operation':20} {'tasks':>5} {'locked ops/s':>13} {'one ops/s':>10}"
        print(f"{header} {'one/locked':>11}")
        for api in apis:
            for tasks in (1, TASKS):
                old = statistics.median(results[(api, "locked", tasks)])
                new = statistics.median(results[(api, "one", tasks)])
                print(f"{api:20} {tasks:5} {old:13.0f} {new:10.0f} {new / old:10.2f}x")
    finally:
        await driver.dispose()
        await drop_table(url, TABLE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for url in args.url:
        asyncio.run(bench(normalized(url), args.ops, args.rounds))


if __name__ == "__main__":
    main()
