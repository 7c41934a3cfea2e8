"""The fast path hands its last connection to the next operation instead of the pool.

Runs on SQLite (aiosqlite), PostgreSQL (asyncpg) and MySQL/MariaDB (asyncmy): the
memory driver has no connections. Checkouts are counted with SQLAlchemy's pool event.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from sqlsession._url import normalize_url
from sqlsession.drivers.sql import SQLDriver

from .conftest import SQL_BACKENDS, admin_mysql, admin_sql


@pytest.fixture(params=[b for b in SQL_BACKENDS if b != "sqlite"])
def url(request: pytest.FixtureRequest) -> str:
    # SQLite's driver watches its file at every checkout, so it hands nothing over (below).
    return str(request.getfixturevalue(f"{request.param}_url"))


async def test_sqlite_checks_its_file_at_every_operation(sqlite_url: str) -> None:
    async with SQLDriver(sqlite_url) as driver:
        await driver.set_item("k", 1)
        checkouts = count_checkouts(driver)
        for _ in range(5):
            assert await driver.get_item("k") == 1
            assert checked_out(driver) == 0
        assert len(checkouts) == 5  # each through the pool's checkout and its file watch


def given_engine(url: str, **pool: Any) -> Any:
    """An engine of the app's own, in autocommit (see the test below for one that is not)."""
    return create_async_engine(normalize_url(url), isolation_level="AUTOCOMMIT", **pool)


def count_checkouts(driver: SQLDriver) -> list[Any]:
    """The driver connections the pool hands out from now on, one entry per checkout."""
    seen: list[Any] = []

    @event.listens_for(driver.engine.sync_engine.pool, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        seen.append(proxy.driver_connection)

    return seen


def checked_out(driver: SQLDriver) -> int:
    count: int = driver.engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined]
    return count


def is_open(driver: SQLDriver, conn: Any) -> bool:
    if driver.dialect == "postgresql":
        return not conn.is_closed()
    if driver.dialect == "mysql":
        return bool(conn.connected)
    return conn._connection is not None  # aiosqlite's sqlite3 connection, None once closed


async def until_back_in_pool(driver: SQLDriver) -> None:
    """Let the loop run until the kept connection went back by itself (it takes ~1 ms)."""
    for _ in range(2000):
        if checked_out(driver) == 0:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the kept connection never went back to the pool")


def in_another_thread(fn: Callable[[], Any]) -> Any:
    """Run `fn` on a thread of its own and wait for it, without letting this loop run."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


async def test_back_to_back_operations_check_out_once(url: str) -> None:
    async with SQLDriver(url, ttl=60) as driver:
        await driver.set_item("k", {"n": 0})
        await until_back_in_pool(driver)
        checkouts = count_checkouts(driver)
        for i in range(10):
            await driver.set_item("k", {"n": i})
            assert await driver.get_item("k") == {"n": i}
            assert await driver.has_item("k")
            assert await driver.touch("k")
        await driver.remove_item("k")
        assert await driver.delete_item("k") is False
        # 42 operations, one checkout: each took the connection the one before left.
        assert len(checkouts) == 1
        assert checked_out(driver) == 1  # kept for a next operation...
        await until_back_in_pool(driver)  # ...until the loop has nothing to give it
        assert await driver.get_item("k") is None
        assert len(checkouts) == 2


async def test_sqlalchemy_work_gets_the_kept_connection_back(url: str) -> None:
    async with SQLDriver(url) as driver:
        await driver.set_item("k", 1)
        await until_back_in_pool(driver)
        checkouts = count_checkouts(driver)
        await driver.set_item("k", {"a": 0})  # the fast path
        assert await driver.merge_item("k", {"b": 1}) == {"a": 0, "b": 1}  # SQLAlchemy's
        assert await driver.get_keys() == ["k"]
        # One connection did it all: the merge did not open another beside the kept one.
        assert len({id(conn) for conn in checkouts}) == 1


async def test_a_full_pool_gets_its_connection_back_at_once(url: str) -> None:
    # At the pool's limit another task may be waiting: nothing is kept from it.
    engine = given_engine(url, poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0)
    try:
        async with SQLDriver(engine=engine) as driver:
            await driver.set_item("k", 1)
            checkouts = count_checkouts(driver)
            for _ in range(5):
                assert await driver.get_item("k") == 1
                assert checked_out(driver) == 0
            assert len(checkouts) == 5
    finally:
        await engine.dispose()


async def test_an_engine_without_autocommit_keeps_every_write(url: str) -> None:
    # The app's engine at the driver's default isolation: each fast-path statement opens
    # a transaction, which must be committed, not rolled back at checkin.
    engine = create_async_engine(normalize_url(url), pool_size=2, max_overflow=0)
    try:
        async with SQLDriver(engine=engine) as driver, SQLDriver(url) as other:
            await driver.set_item("k", {"n": 1})
            assert await other.get_item("k") == {"n": 1}
            await other.set_item("k", {"n": 2})
            # A connection kept from the first write must not read an old snapshot.
            assert await driver.get_item("k") == {"n": 2}
            await driver.remove_item("k")
            assert await other.get_item("k") is None
    finally:
        await engine.dispose()


async def test_many_tasks_on_a_small_pool_all_progress(url: str) -> None:
    engine = given_engine(url, poolclass=AsyncAdaptedQueuePool, pool_size=2, max_overflow=0)
    try:
        async with SQLDriver(engine=engine) as driver:
            await driver.set_item("k", 1)
            done: list[int] = []

            async def worker(n: int) -> None:
                for i in range(20):
                    await (driver.get_item("k") if i % 2 else driver.touch("k"))
                    done.append(n)

            await asyncio.gather(*(worker(n) for n in range(5)))
        # No task waits for the others to finish: each is among the first few done.
        assert sorted(set(done[:25])) == [0, 1, 2, 3, 4], done
    finally:
        await engine.dispose()


async def test_a_connection_past_the_recycle_time_is_not_kept(url: str) -> None:
    engine = given_engine(url, pool_recycle=0)
    try:
        async with SQLDriver(engine=engine) as driver:
            await driver.set_item("k", 1)
            checkouts = count_checkouts(driver)
            for _ in range(3):
                assert await driver.get_item("k") == 1
            # Each went through the pool, which replaces a connection past its time.
            assert len(checkouts) == 3
            assert len({id(conn) for conn in checkouts}) == 3
    finally:
        await engine.dispose()


@pytest.mark.parametrize("server", ["postgres", "mysql"])
async def test_a_kept_connection_the_server_dropped_costs_one_retry(
    server: str, request: pytest.FixtureRequest
) -> None:
    server_url = request.getfixturevalue(f"{server}_url")
    async with SQLDriver(server_url) as driver:
        await driver.set_item("k", {"v": 0})
        await until_back_in_pool(driver)
        checkouts = count_checkouts(driver)
        await driver.set_item("k", {"v": 1})
        kept = checkouts[-1]
        # Dropped while the loop cannot run, so the next operation takes it as it is.
        if server == "postgres":
            admin_sql(server_url, f"SELECT pg_terminate_backend({kept.get_server_pid()})")
        else:
            admin_mysql(server_url, f"KILL {kept.thread_id()}")
        assert await driver.get_item("k") == {"v": 1}
        assert len(checkouts) == 2  # the retry, on a fresh connection
        assert checkouts[1] is not kept
        assert not is_open(driver, kept)
        await driver.set_item("k", {"v": 2})  # and the fresh one is kept from then on
        assert len(checkouts) == 2
        assert await driver.get_item("k") == {"v": 2}


async def test_dispose_closes_the_kept_connection(url: str) -> None:
    driver = SQLDriver(url)
    checkouts = count_checkouts(driver)
    await driver.set_item("k", 1)
    pool: Any = driver.engine.sync_engine.pool
    assert pool.checkedout() == 1
    await driver.dispose()
    assert pool.checkedout() == 0
    assert not is_open(driver, checkouts[0])


async def test_dispose_returns_the_kept_connection_to_a_given_engine(url: str) -> None:
    engine = given_engine(url)
    try:
        driver = SQLDriver(engine=engine)
        checkouts = count_checkouts(driver)
        await driver.set_item("k", 1)
        await driver.dispose()
        pool: Any = engine.sync_engine.pool
        assert (pool.checkedout(), pool.checkedin()) == (0, 1)
        assert is_open(driver, checkouts[0])  # the engine's own, left open
    finally:
        await engine.dispose()


async def test_another_event_loop_does_not_get_the_kept_connection(url: str) -> None:
    async with SQLDriver(url) as driver:
        await driver.set_item("k", 0)
        await until_back_in_pool(driver)
        checkouts = count_checkouts(driver)
        await driver.set_item("k", 1)
        kept = checkouts[-1]

        async def elsewhere() -> Any:
            value = await driver.get_item("k")
            assert await driver.get_keys() == ["k"]  # gives this loop's kept one back
            # Close the connection this loop opened while the loop still runs.
            async with driver.engine.connect() as conn:
                await conn.invalidate()
            return value

        # This loop cannot run meanwhile, so its connection is still kept.
        assert in_another_thread(lambda: asyncio.run(elsewhere())) == 1
        assert len(checkouts) == 4
        assert all(conn is not kept for conn in checkouts[1:])  # the other loop's own
        assert await driver.get_item("k") == 1  # this loop's next operation takes it
        assert len(checkouts) == 4
        assert is_open(driver, kept)


async def test_a_cancelled_operation_leaves_no_connection_behind(url: str) -> None:
    async with SQLDriver(url) as driver:
        await driver.set_item("k", 1)
        checkouts = count_checkouts(driver)
        task = asyncio.create_task(driver.get_item("k"))
        await asyncio.sleep(0)  # it took the kept connection and sent its statement
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Its state unknown, the connection was closed rather than kept or pooled.
        assert checkouts == []
        assert checked_out(driver) == 0
        assert await driver.get_item("k") == 1
        assert len(checkouts) == 1
