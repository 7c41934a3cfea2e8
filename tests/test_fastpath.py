"""The raw-driver fast path: dropped connections, statement caching, SQLite concurrency.

Runs on PostgreSQL (asyncpg), MySQL/MariaDB (asyncmy) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from sqlsession.drivers.sql import SQLDriver
from sqlsession.drivers.sql._greenlet import GreenletRunner
from sqlsession.errors import SchemaError

from .conftest import admin_mysql, admin_sql


async def _pool_everything(driver: SQLDriver) -> None:
    """Return the connection the fast path keeps for its next operation to the pool.

    It would go back by itself within a millisecond; the checks below look at the
    pool's connections right after an operation.
    """
    assert driver._fast is not None
    await driver._fast.release()


async def _backend_pids(driver: SQLDriver) -> list[int]:
    """The server pids of the driver's pooled connections (checked out one at a time)."""
    await _pool_everything(driver)
    pool = driver.engine.sync_engine.pool
    pids = []
    for _ in range(pool.checkedin()):  # type: ignore[attr-defined]  # a QueuePool
        async with driver.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            pids.append(raw.driver_connection.get_server_pid())  # type: ignore[union-attr]
    return pids


@pytest.mark.postgres
async def test_a_terminated_backend_costs_one_retry_not_an_error(postgres_url: str) -> None:
    async with SQLDriver(postgres_url, pool_size=2) as driver:
        await driver.set_item("k", {"v": 1})
        assert driver._fast is not None  # the operations below go through it
        pids = await _backend_pids(driver)
        assert pids
        for pid in pids:
            admin_sql(postgres_url, f"SELECT pg_terminate_backend({pid})")
        # Every pooled connection is dead; each operation still succeeds.
        assert await driver.get_item("k") == {"v": 1}
        await driver.set_item("k", {"v": 2})
        assert await driver.get_item("k") == {"v": 2}
        assert await driver.touch("k", ttl=60)
        await driver.remove_item("k")
        assert await driver.get_item("k") is None


async def test_a_killed_mysql_connection_costs_one_retry_not_an_error(mysql_url: str) -> None:
    async with SQLDriver(mysql_url, pool_size=2) as driver:
        await driver.set_item("k", {"v": 1})
        assert driver._fast is not None  # the operations below go through it
        await _pool_everything(driver)
        pool = driver.engine.sync_engine.pool
        ids = []
        for _ in range(pool.checkedin()):  # type: ignore[attr-defined]  # a QueuePool
            async with driver.engine.connect() as conn:
                raw: Any = (await conn.get_raw_connection()).driver_connection
                ids.append(raw.thread_id())
        assert ids
        admin_mysql(mysql_url, *(f"KILL {thread}" for thread in ids))
        # Every pooled connection is dead; each operation still succeeds, a merge too
        # (its transaction runs once more on a fresh connection).
        assert await driver.merge_item("m", {"a": 1}) == {"a": 1}
        assert await driver.get_item("k") == {"v": 1}
        await driver.set_item("k", {"v": 2})
        assert await driver.get_item("k") == {"v": 2}
        assert await driver.touch("k", ttl=60)
        await driver.remove_item("k")
        assert await driver.get_item("k") is None


@pytest.mark.postgres
async def test_statements_are_prepared_once_per_connection(postgres_url: str) -> None:
    async with SQLDriver(postgres_url, pool_size=1) as driver:
        await driver.set_item("k", 1)
        for _ in range(20):
            assert await driver.get_item("k") == 1
        await _pool_everything(driver)
        async with driver.engine.connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            prepared = [
                r[0] for r in await raw.fetch("SELECT statement FROM pg_prepared_statements")
            ]
        # Each statement once, however many times it ran.
        assert len(prepared) == len(set(prepared))
        assert sum(s.startswith("SELECT sqlsession.value") for s in prepared) == 1
        assert sum(s.startswith("INSERT INTO sqlsession") for s in prepared) == 1


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_a_missing_table_is_a_schema_error_on_the_fast_path(
    backend: str, request: pytest.FixtureRequest
) -> None:
    async with SQLDriver(
        request.getfixturevalue(f"{backend}_url"), table="fastpath_gone"
    ) as driver:
        assert driver._fast is not None
        driver._ready = True  # skip the first-use check: the statement itself must fail
        with pytest.raises(SchemaError, match="fastpath_gone"):
            await driver.get_item("k")


async def test_many_sqlite_tasks_never_see_database_is_locked(sqlite_url: str) -> None:
    async with SQLDriver(sqlite_url, ttl=60) as driver:

        async def work(n: int) -> None:
            for i in range(25):
                key = f"k{(n * 7 + i) % 40}"
                await driver.set_item(key, {"n": n, "i": i})
                await driver.get_item(key)
                await driver.touch(key)
                if i % 5 == 0:
                    await driver.remove_item(key)

        await asyncio.gather(*(work(n) for n in range(32)))
        assert len(await driver.get_keys()) <= 40


async def test_sqlite_writes_commit_on_an_engine_that_is_not_autocommit(sqlite_url: str) -> None:
    # A handed-in engine whose connections open a transaction before a write.
    engine = create_async_engine(sqlite_url.replace("sqlite:", "sqlite+aiosqlite:"))
    try:
        async with SQLDriver(engine=engine) as driver:
            await driver.set_item("k", "v")
        async with SQLDriver(sqlite_url) as other:
            assert await other.get_item("k") == "v"
    finally:
        await engine.dispose()


async def test_greenlet_runner_reuses_greenlets_and_passes_errors_through() -> None:
    from sqlalchemy.util import await_only as await_  # await_ in 2.1, await_only in 2.0

    runner = GreenletRunner()

    def waits() -> int:
        return await_(asyncio.sleep(0, result=5)) + 1

    assert await runner.run(waits) == 6
    assert len(runner._idle) == 1
    worker = runner._idle[0]

    def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await runner.run(fails)
    assert runner._idle == [worker]
    assert await asyncio.gather(*(runner.run(waits) for _ in range(5))) == [6] * 5


async def test_mysql_operations_send_no_rollback(mysql_url: str) -> None:
    # A returned autocommit connection has nothing to roll back; asyncmy would still
    # send the pool's ROLLBACK to the server, one more round trip per operation.
    async with SQLDriver(mysql_url, pool_size=1) as driver:
        await driver.set_item("k", 1)

        async def rollbacks() -> int:
            async with driver.engine.connect() as conn:
                row = (await conn.execute(text("SHOW SESSION STATUS LIKE 'Com_rollback'"))).one()
                return int(row[1])

        before = await rollbacks()
        for i in range(20):
            await driver.set_item("k", i)
            assert await driver.get_item("k") == i
            await driver.get_keys("k")
        await driver.merge_item("m", {"a": 1})
        assert await rollbacks() == before
