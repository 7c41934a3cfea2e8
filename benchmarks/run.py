"""sqlsession's performance harness: sqlsession against raw drivers and peer stores.

    python benchmarks/run.py --url postgresql+asyncpg://root@127.0.0.1/test \
        --url sqlite+aiosqlite:////tmp/bench.db --url mysql://root@127.0.0.1:3306/test \
        --ops 5000 --concurrency 16 --json out.json

Modes (combine them; with none, the operations are measured):
    --ops-mode   set_item, get_item (hit and miss), touch, remove_item for every contender,
                 sequential on one task, then `--concurrency` tasks.
    --cleanup    1,000,000 expired rows among 100,000 live ones (`--expired`, `--live`),
                 then `cleanup()` while other tasks read and write live keys.
    --scale      get_item p50 at 10,000 and at 1,000,000 live rows (`--scale-rows`), and
                 RSS over 100,000 operations (`--memory-ops`).

The raw drivers sqlsession is measured against: asyncpg on PostgreSQL, aiosqlite on
SQLite, asyncmy on MySQL/MariaDB (``mysql://`` or ``mariadb://`` URLs).

Every table the harness uses is its own (``bench_sessions`` and the peers'), created at
the start and dropped at the end. It is not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _cleanup
import _contenders as c
import _scale
from _common import (
    TABLE,
    Timing,
    is_mysql,
    is_postgres,
    make_keys,
    migrate,
    normalized,
    session_value,
)
from _common import unmigrate as drop_table

# Rounds per measurement: each contender runs each operation on 1/ROUNDS of the keys.
ROUNDS = 5

OP_LABELS = {
    "set_item": "set_item",
    "get_item": "get_item (hit)",
    "get_miss": "get_item (miss)",
    "touch": "touch",
    "remove_item": "remove_item",
}


async def contenders_for(url: str, peers: bool) -> list[c.Contender]:
    found: list[c.Contender] = [c.SQLSession(url)]
    if is_postgres(url):
        found += [c.AsyncpgHeld(url), c.AsyncpgPool(url)]
    elif is_mysql(url):
        found += [c.AsyncmyHeld(url), c.AsyncmyPool(url)]
    else:
        found.append(c.AiosqliteHeld(url))
    if not peers:
        return found
    if await c.redis_answers():
        found.append(c.Redis())
    for cls in (c.AdvancedAlchemy, c.Django):
        try:
            found.append(cls(url))
        except ImportError as exc:
            # A package outside the bench extra names its own install command.
            hint = "" if "pip install" in str(exc) else " (pip install -e '.[bench]')"
            print(f"  skipping {cls.name}: {exc}{hint}", file=sys.stderr)
    return found


async def _timed_async(fn: Any, keys: list[str], values: list[Any] | None, tasks: int) -> Timing:
    timing = Timing()
    clock = time.perf_counter_ns
    record = timing.latencies.append

    async def worker(part: range) -> None:
        for i in part:
            start = clock()
            if values is None:
                await fn(keys[i])
            else:
                await fn(keys[i], values[i])
            record(clock() - start)

    parts = [range(t, len(keys), tasks) for t in range(tasks)]
    began = time.perf_counter()
    await asyncio.gather(*(worker(p) for p in parts))
    timing.wall = time.perf_counter() - began
    return timing


async def _timed_threaded(
    contender: c.Contender, fn: Any, keys: list[str], values: list[Any] | None, tasks: int
) -> Timing:
    timing = Timing()
    clock = time.perf_counter_ns

    def worker(part: range) -> list[int]:
        lat = []
        for i in part:
            start = clock()
            if values is None:
                fn(keys[i])
            else:
                fn(keys[i], values[i])
            lat.append(clock() - start)
        return lat

    parts = [range(t, len(keys), tasks) for t in range(tasks)]
    pool = contender.pool  # type: ignore[attr-defined]
    began = time.perf_counter()
    for lat in await asyncio.gather(*(pool.run(worker, p) for p in parts)):
        timing.latencies.extend(lat)
    timing.wall = time.perf_counter() - began
    return timing


async def measure(
    contender: c.Contender,
    op: str,
    keys: list[str],
    values: list[Any] | None,
    tasks: int,
) -> Timing:
    method = {"set_item": "set", "get_item": "get", "get_miss": "get"}.get(op, op)
    method = {"remove_item": "remove"}.get(method, method)
    if contender.threaded:
        return await _timed_threaded(
            contender, getattr(contender, method + "_sync"), keys, values, tasks
        )
    return await _timed_async(getattr(contender, method), keys, values, tasks)


async def prepare(contender: c.Contender, keys: list[str], values: list[Any], tasks: int) -> None:
    """Seed the keys, check one, and warm caches (statements, pools) before timing."""
    seed = "seed_sync" if contender.threaded else "seed"
    await measure_seed(contender, seed, keys, values, tasks)
    got = await _read_one(contender, keys[0])
    if got != values[0]:
        raise AssertionError(f"{contender.name} returned {got!r:.80} for a seeded key")
    if "remove_item" not in contender.ops:  # pragma: no cover - every contender removes
        raise AssertionError(contender.name)
    await measure(contender, "get_item", keys[: min(len(keys), 200)], None, tasks)


async def run_rounds(
    contenders: list[c.Contender],
    keys: list[str],
    misses: list[str],
    values: list[Any],
    tasks: int,
) -> dict[str, dict[str, dict[str, float]]]:
    """Time every operation of every contender, in rounds that take turns.

    Each round runs each contender's operations (set, get, miss, touch, remove) over
    its own slice of the keys, and each round starts with a different contender, so
    that a slow spell of the machine or the disk (a PostgreSQL checkpoint, another
    process) falls on all of them alike instead of on whoever ran then. Run one
    contender after the other, the ratio of set_item to raw asyncpg moved between
    0.68x and 1.10x across runs.
    """
    for contender in contenders:
        await prepare(contender, keys, values, tasks)
    timings = {ct.name: {op: Timing() for op in c.OPS if op in ct.ops} for ct in contenders}
    for round_ in range(ROUNDS):
        part = slice(len(keys) * round_ // ROUNDS, len(keys) * (round_ + 1) // ROUNDS)
        first = round_ % len(contenders)
        for contender in contenders[first:] + contenders[:first]:
            for op, total in timings[contender.name].items():
                gc.collect()
                ks = (misses if op == "get_miss" else keys)[part]
                vs = values[part] if op == "set_item" else None
                timing = await measure(contender, op, ks, vs, tasks)
                total.latencies += timing.latencies
                total.wall += timing.wall
    return {
        name: {op: timing.summary() for op, timing in ops.items()} for name, ops in timings.items()
    }


async def measure_seed(
    contender: c.Contender, seed: str, keys: list[str], values: list[Any], tasks: int
) -> None:
    fn = getattr(contender, seed)
    if contender.threaded:
        await _timed_threaded(contender, fn, keys, values, tasks)
    else:
        await _timed_async(fn, keys, values, tasks)


async def _read_one(contender: c.Contender, key: str) -> Any:
    if contender.threaded:
        return await contender.pool.run(contender.get_sync, key)  # type: ignore[attr-defined]
    return await contender.get(key)


async def bench_ops(url: str, args: argparse.Namespace) -> dict[str, Any]:
    contenders = await contenders_for(url, not args.no_peers)
    keys, misses = make_keys(args.ops), make_keys(args.ops)
    values = [session_value(i) for i in range(args.ops)]
    started: list[c.Contender] = []
    out: dict[str, Any] = {}
    try:
        for contender in contenders:
            await contender.start(args.concurrency)
            started.append(contender)
        for mode, tasks in (("sequential", 1), (f"{args.concurrency} tasks", args.concurrency)):
            active = [ct for ct in started if tasks == 1 or ct.concurrent]
            print(f"  {mode}: {', '.join(ct.name for ct in active)}", file=sys.stderr)
            out[mode] = await run_rounds(active, keys, misses, values, tasks)
    finally:
        for contender in reversed(started):
            await contender.stop()
    return out


def print_ops(url: str, results: dict[str, Any]) -> None:
    for mode, rows in results.items():
        print(f"\n{url} - {mode}")
        ours = rows["sqlsession"]
        header = f"{'operation':16} {'contender':34} {'ops/s':>9} {'p50 us':>8} {'p99 us':>8}"
        print(header + f" {'sqlsession/it':>13}")
        print("-" * (len(header) + 14))
        for op in c.OPS:
            for name, ops in rows.items():
                if op not in ops:
                    continue
                r = ops[op]
                ratio = ours[op]["ops_per_s"] / r["ops_per_s"] if r["ops_per_s"] else 0.0
                r["sqlsession_ratio"] = ratio
                print(
                    f"{OP_LABELS[op]:16} {name:34} {r['ops_per_s']:9.0f} {r['p50_us']:8.0f} "
                    f"{r['p99_us']:8.0f} {ratio:12.2f}x"
                )
            print()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        action="append",
        help="database URL (repeat for several; default: PostgreSQL on 127.0.0.1 and a "
        "SQLite file in the temp directory)",
    )
    parser.add_argument("--ops", type=int, default=5000, help="operations per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="tasks in the concurrent run")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--ops-mode", action="store_true", help="measure the operations")
    parser.add_argument("--cleanup", action="store_true", help="measure cleanup at scale")
    parser.add_argument("--scale", action="store_true", help="measure table size and memory")
    parser.add_argument("--no-peers", action="store_true", help="only sqlsession and raw drivers")
    parser.add_argument("--expired", type=int, default=1_000_000, help="expired rows in --cleanup")
    parser.add_argument("--live", type=int, default=100_000, help="live rows in --cleanup")
    parser.add_argument(
        "--scale-rows",
        type=int,
        default=_scale.SIZES[-1],
        help="live rows of the large table in --scale (more than 10,000)",
    )
    parser.add_argument(
        "--memory-ops",
        type=int,
        default=_scale.MEMORY_OPS,
        help="operations of the RSS measurement in --scale",
    )
    args = parser.parse_args(argv)
    if args.scale_rows <= _scale.SIZES[0]:
        parser.error(f"--scale-rows must be more than {_scale.SIZES[0]:,}")
    if not (args.ops_mode or args.cleanup or args.scale):
        args.ops_mode = True
    urls = [normalized(u) for u in (args.url or [])] or [
        "postgresql+asyncpg://root@127.0.0.1/test",
        "sqlite+aiosqlite:///" + os.path.join(tempfile.gettempdir(), "sqlsession-bench.db"),
    ]
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "results": {},
    }
    for url in urls:
        print(f"== {url}", file=sys.stderr)
        result: dict[str, Any] = {}
        await migrate(url, TABLE)
        try:
            if args.ops_mode:
                result["ops"] = await bench_ops(url, args)
                print_ops(url, result["ops"])
            if args.cleanup:
                result["cleanup"] = await _cleanup.run(url, args.expired, args.live)
                _cleanup.print_report(url, result["cleanup"])
            if args.scale:
                result["scale"] = await _scale.run(url, args.scale_rows, args.memory_ops)
                _scale.print_report(url, result["scale"])
        finally:
            await drop_table(url, TABLE)
        report["results"][url] = result
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
