"""--cleanup: `cleanup()` over a million expired rows while the app keeps serving.

The table gets `expired` expired rows among `live` live ones (bulk loaded: COPY on
PostgreSQL, one executemany transaction on SQLite, multi-row INSERTs of a few thousand
rows on MySQL/MariaDB). First a few tasks read and refresh live keys for a while with
no cleanup running (the idle p99), then the same tasks run while `cleanup()` deletes
the expired rows. Every cleanup batch is timed through SQLAlchemy's cursor events: the
cleanup runs on a SQLAlchemy connection on every database (the app's reads and writes
take sqlsession's fast path, which fires no events), so a batch is the time from
handing one DELETE to the database driver to its result, including MySQL's
``DELETE ... LIMIT`` under its named lock. The process RSS is sampled, and at the end
every live row must still be there.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
import time
from typing import Any

from _common import (
    TABLE,
    TTL,
    asyncmy_args,
    asyncpg_dsn,
    is_mysql,
    is_postgres,
    now_ms,
    percentile,
    sqlite_path,
)
from _rss import RssSampler

READERS = 4
IDLE_SECONDS = 3.0
# A small session (about 300 bytes of JSON) for the bulk rows, so that filling the
# table stays well under a minute; the statements cleanup runs do not read values.
FILLER = json.dumps(
    {
        "user_id": 123456,
        "csrf": "x" * 43,
        "roles": ["customer"],
        "cart": [{"sku": "SKU-000001", "qty": 1, "price": 12.5}] * 3,
        "prefs": {"theme": "dark", "currency": "EUR"},
    },
    separators=(",", ":"),
)
# Rows per multi-row INSERT of the MySQL bulk load: about 0.7 MB of SQL, so that each
# batch stays one statement under asyncmy's 1 MB split (and the server's packet limit).
MYSQL_LOAD_BATCH = 2_000


def _rows(
    expired: int, live: int, *, clustered: bool = False
) -> tuple[list[tuple[str, str, int]], list[str]]:
    """Rows in random order (live ones scattered among the expired), and the live keys.

    With `clustered` (InnoDB, which stores rows in primary-key order, not in the order
    they came), each key starts with its random part, so that live rows lie among the
    expired ones in the table itself too, as random session ids do; the "exp-"/"live-"
    prefixes would put every live row after every expired one. The random numbers
    drawn are the same either way.
    """
    now = now_ms()
    rng = random.Random(7)

    def key(kind: str, i: int, width: int) -> str:
        tag, rand = f"{kind}-{i:0{width}d}", f"{rng.getrandbits(64):016x}"
        return f"{rand}-{tag}" if clustered else f"{tag}-{rand}"

    rows = [(key("exp", i, 8), FILLER, now - rng.randrange(1, 86_400_000)) for i in range(expired)]
    live_keys = [key("live", i, 7) for i in range(live)]
    rows += [(k, FILLER, now + int(TTL * 1000)) for k in live_keys]
    rng.shuffle(rows)
    return rows, live_keys


async def _load(url: str, rows: list[tuple[str, str, int]], table: str = TABLE) -> None:
    if is_postgres(url):
        import asyncpg

        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute(f"TRUNCATE {table}")
            await conn.copy_records_to_table(
                table, records=rows, columns=["key", "value", "expires_at"]
            )
            # Fresh statistics, as autovacuum would gather them in production.
            await conn.execute(f"VACUUM ANALYZE {table}")
        finally:
            await conn.close()
        return
    if is_mysql(url):
        await _load_mysql(url, rows, table)
        return

    def load() -> None:
        db = sqlite3.connect(sqlite_path(url), isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("BEGIN")
            db.execute(f"DELETE FROM {table}")
            db.executemany(f"INSERT INTO {table} (key, value, expires_at) VALUES (?, ?, ?)", rows)
            db.execute("COMMIT")
            db.execute("ANALYZE")
        finally:
            db.close()

    await asyncio.to_thread(load)


async def _load_mysql(url: str, rows: list[tuple[str, str, int]], table: str) -> None:
    """Multi-row INSERTs through raw asyncmy, each batch committed on its own.

    asyncmy's `executemany` turns an INSERT ... VALUES into one statement of many rows
    (split at 1 MB); a batch of a few thousand rows per commit keeps the load at a few
    hundred redo-log flushes, without one transaction of a million rows to undo.

    The rows go in in the shuffled order, as random session ids arrive. InnoDB keeps a
    table in primary-key order, and random inserts leave its pages as partly filled as
    an app's table; sorted by key, 550,000 rows loaded in a third of the time, but the
    pages came out full, which would flatter the cleanup. Once the table outgrows the
    buffer pool (128 MB by default, a few hundred thousand of these rows), loading and
    cleaning up read from disk: the report gives the pool's size.
    """
    import asyncmy

    conn = await asyncmy.connect(**asyncmy_args(url))
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(f"TRUNCATE TABLE {table}")
            insert = f"INSERT INTO {table} (`key`, value, expires_at) VALUES (%s, %s, %s)"
            for start in range(0, len(rows), MYSQL_LOAD_BATCH):
                await cursor.executemany(insert, rows[start : start + MYSQL_LOAD_BATCH])
            # Fresh index statistics, as InnoDB would gather them after so many changes.
            await cursor.execute(f"ANALYZE TABLE {table}")
            await cursor.fetchall()
    finally:
        await conn.ensure_closed()


class _Load:
    """Tasks that read live keys and refresh one in four, timing each read."""

    def __init__(self, driver: Any, live_keys: list[str]) -> None:
        self.driver = driver
        self.live_keys = live_keys
        self.reads: list[int] = []
        self.writes: list[int] = []
        self.written: set[str] = set()
        self.stop = asyncio.Event()

    async def _task(self, seed: int) -> None:
        rng = random.Random(seed)
        value = {"user_id": seed, "refreshed": True}
        while not self.stop.is_set():
            key = rng.choice(self.live_keys)
            if rng.random() < 0.25:
                start = time.perf_counter_ns()
                await self.driver.set_item(key, value)
                self.writes.append(time.perf_counter_ns() - start)
                self.written.add(key)
            else:
                start = time.perf_counter_ns()
                got = await self.driver.get_item(key)
                self.reads.append(time.perf_counter_ns() - start)
                if got is None:
                    raise AssertionError(f"live key {key!r} read as absent during cleanup")

    async def run_until(self, done: asyncio.Future[Any] | float) -> None:
        tasks = [asyncio.create_task(self._task(i)) for i in range(READERS)]
        try:
            if isinstance(done, float):
                await asyncio.sleep(done)
            else:
                await done
        finally:
            self.stop.set()
            await asyncio.gather(*tasks)


async def run(url: str, expired: int, live: int) -> dict[str, Any]:
    from sqlalchemy import event

    from sqlsession.drivers.sql import SQLDriver

    print(f"  --cleanup: loading {expired:,} expired and {live:,} live rows", file=sys.stderr)
    began = time.perf_counter()
    rows, live_keys = _rows(expired, live, clustered=is_mysql(url))
    await _load(url, rows)
    del rows
    load_seconds = time.perf_counter() - began

    driver = SQLDriver(url, table=TABLE, ttl=TTL)
    settings: dict[str, Any] = {}
    if is_mysql(url):
        # Read before the timing hooks go on, which should only see cleanup's statements.
        from sqlalchemy import text

        async with driver.engine.connect() as conn:
            pool = await conn.scalar(text("SELECT @@innodb_buffer_pool_size"))
        settings["innodb_buffer_pool_mb"] = int(pool) / 2**20
    batches: list[float] = []
    checkpoints: list[float] = []  # SQLite: run between batches, without the write lock

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started = conn.info.pop("bench_started", None)
        if started is None:
            return
        took = time.perf_counter() - started
        if statement.lstrip().upper().startswith("DELETE"):
            batches.append(took)
        elif "wal_checkpoint" in statement:
            checkpoints.append(took)

    event.listen(driver.engine.sync_engine, "before_cursor_execute", before)
    event.listen(driver.engine.sync_engine, "after_cursor_execute", after)
    try:
        idle = _Load(driver, live_keys)
        await idle.run_until(IDLE_SECONDS)

        print("  --cleanup: cleaning up under load", file=sys.stderr)
        busy = _Load(driver, live_keys)
        sampler = RssSampler()
        sampler.start()
        started = time.perf_counter()
        cleanup = asyncio.ensure_future(driver.cleanup())
        await busy.run_until(cleanup)
        deleted = cleanup.result()
        seconds = time.perf_counter() - started
        rss_growth = await sampler.stop()

        stats = await driver.stats()
        missing = [k for k in live_keys if await driver.get_item(k) is None]
    finally:
        await driver.dispose()
    idle_p99 = percentile(idle.reads, 99)
    busy_p99 = percentile(busy.reads, 99)
    return {
        "expired_rows": expired,
        "live_rows": live,
        "load_seconds": load_seconds,
        "deleted": deleted,
        "seconds": seconds,
        "rows_per_s": deleted / seconds if seconds else 0.0,
        "batches": len(batches),
        "longest_batch_ms": max(batches) * 1000 if batches else 0.0,
        "batch_ms": [round(b * 1000, 1) for b in batches],
        "checkpoints": len(checkpoints),
        "longest_checkpoint_ms": max(checkpoints) * 1000 if checkpoints else 0.0,
        "read_p99_idle_us": idle_p99,
        "read_p99_during_us": busy_p99,
        "read_p99_ratio": busy_p99 / idle_p99 if idle_p99 else 0.0,
        "reads_during": len(busy.reads),
        "write_p99_idle_us": percentile(idle.writes, 99),
        "write_p99_during_us": percentile(busy.writes, 99),
        "write_max_during_ms": max(busy.writes) / 1e6 if busy.writes else 0.0,
        "rss_growth_mb": rss_growth,
        "live_after": stats["live"],
        "expired_after": stats["expired"],
        "live_rows_lost": len(missing),
        **settings,
    }


def print_report(url: str, r: dict[str, Any]) -> None:
    print(f"\n{url} - cleanup of {r['expired_rows']:,} expired among {r['live_rows']:,} live")
    print(f"  bulk load                    {r['load_seconds']:.1f} s")
    print(f"  deleted                      {r['deleted']:,} in {r['seconds']:.2f} s")
    print(f"  expired rows/s               {r['rows_per_s']:,.0f}")
    print(f"  batches / longest batch      {r['batches']} / {r['longest_batch_ms']:.1f} ms")
    if r["checkpoints"]:
        print(
            f"  checkpoints / longest        {r['checkpoints']} / "
            f"{r['longest_checkpoint_ms']:.1f} ms (between batches, write lock free)"
        )
    print(
        f"  read p99 idle / during       {r['read_p99_idle_us']:.0f} us / "
        f"{r['read_p99_during_us']:.0f} us ({r['read_p99_ratio']:.2f}x)"
    )
    print(
        f"  write p99 idle / during      {r['write_p99_idle_us']:.0f} us / "
        f"{r['write_p99_during_us']:.0f} us (longest {r['write_max_during_ms']:.0f} ms)"
    )
    print(f"  peak RSS growth              {r['rss_growth_mb']:.1f} MB")
    if "innodb_buffer_pool_mb" in r:
        print(f"  InnoDB buffer pool           {r['innodb_buffer_pool_mb']:.0f} MB")
    print(
        f"  live rows after / lost       {r['live_after']:,} / {r['live_rows_lost']} "
        f"(expired left: {r['expired_after']})"
    )
