"""The store operations of issue 11 on the SQL driver after the server dropped its connections.

Their behaviour on every backend is part of the shipped contract
(`sqlsession.testing.DriverContract`, run by `tests/test_contract.py`); this is what only a
server can show.
"""

from __future__ import annotations

from typing import Any

import pytest

from sqlsession import Entry
from sqlsession.drivers.sql import SQLDriver

from .conftest import admin_mysql, admin_sql

# -- the new operations after the server dropped every pooled connection -----------------


async def _drop_pooled_connections(driver: SQLDriver, url: str) -> None:
    if driver._fast is not None:  # its idle connection back in the pool, to be dropped too
        await driver._fast.release()
    pool: Any = driver.engine.sync_engine.pool
    ids = []
    for _ in range(pool.checkedin()):
        async with driver.engine.connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            ids.append(raw.get_server_pid() if driver.dialect == "postgresql" else raw.thread_id())
    assert ids
    if driver.dialect == "postgresql":
        for pid in ids:
            admin_sql(url, f"SELECT pg_terminate_backend({pid})")
    else:
        admin_mysql(url, *(f"KILL {thread}" for thread in ids))


@pytest.mark.parametrize("server", ["postgres", "mysql"])
async def test_each_operation_survives_dropped_connections(
    server: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{server}_url")
    async with SQLDriver(url, pool_size=2) as driver:
        await driver.set_many({"a": 1, "b": 2, "c": 3}, ttl=None)
        operations: list[tuple[Any, Any]] = [
            (driver.get_entry("a"), Entry(1, None)),
            (driver.get_entry("a", renew=60), Entry(1, None)),
            (driver.get_entries(["a", "x"]), {"a": Entry(1, None)}),
            (driver.get_many(["b", "x"]), {"b": 2}),
            (driver.delete_item("a"), True),
            (driver.add_item("d", 4), True),
            (driver.add_item("d", 5), False),
            (driver.remove_many(["b", "c"]), 2),
            (driver.set_many({"e": 5}), None),
            (driver.cleanup(prefix="e"), 0),
        ]
        for operation, expected in operations:
            await _drop_pooled_connections(driver, url)
            assert await operation == expected
        assert await driver.get_keys() == ["d", "e"]
