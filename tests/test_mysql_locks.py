"""MySQL/MariaDB: the lease locks, multi-host URLs and read_your_writes on one server.

The same mechanisms hold across a Galera cluster (test_galera.py); here they are
checked on the shared server, where every test run has them.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from sqlsession import ConfigError, DatabaseUnavailableError, SchemaError, _migrate, session_drivers
from sqlsession._table import SCHEMA_REVISION
from sqlsession.drivers.sql import SQLDriver
from sqlsession.drivers.sql.dialects.mysql import _claimed

from .conftest import FakeClock, admin_mysql, migrate, table_names


async def hold_cleanup_lease(driver: SQLDriver, now: float) -> bool:
    """Claim `driver`'s cleanup lease for 60 s from `now`, as its cleanup would."""
    async with driver.engine.connect() as conn:
        ms = int(now * 1000)
        return await _claimed(conn, driver._dialect._cleanup_lock, ms, ms + 60_000)  # type: ignore[attr-defined]


async def test_a_held_cleanup_lease_makes_other_runners_skip(
    mysql_url: str, clock: FakeClock
) -> None:
    async with (
        SQLDriver(mysql_url, clock=clock, ttl=1) as driver,
        SQLDriver(mysql_url, clock=clock) as other,
    ):
        await driver.set_item("old", 1)
        clock.advance(2)
        assert await hold_cleanup_lease(other, clock.now)
        assert not await hold_cleanup_lease(driver, clock.now)
        assert await driver.cleanup() == 0
        assert driver.last_cleanup_skipped is True
        assert await other.cleanup() == 1  # its holder goes on, and releases it
        assert other.last_cleanup_skipped is False
        await driver.set_item("old", 1, ttl=1)
        clock.advance(2)
        assert await driver.cleanup() == 1
        assert driver.last_cleanup_skipped is False


async def test_a_dead_runners_cleanup_lease_expires(mysql_url: str, clock: FakeClock) -> None:
    # A runner killed while it held the lease: its row stays until the lease passes
    # (60 s on the runner's clock), then the next runner takes it over.
    script = (
        "import asyncio, os, sys\n"
        "from sqlsession.drivers.sql import SQLDriver\n"
        "from sqlsession.drivers.sql.dialects.mysql import _claimed\n"
        "async def main():\n"
        "    driver = SQLDriver(sys.argv[1], pool_size=1)\n"
        "    now = int(sys.argv[2])\n"
        "    async with driver.engine.connect() as conn:\n"
        "        held = await _claimed(conn, driver._dialect._cleanup_lock, now, now + 60000)\n"
        "        print('held' if held else 'no-lock', flush=True)\n"
        "        os._exit(9)\n"
        "asyncio.run(main())\n"
    )
    async with SQLDriver(mysql_url, clock=clock, ttl=1) as driver:
        await driver.set_item("old", 1)
        clock.advance(2)
        runner = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            mysql_url,
            str(int(clock.now * 1000)),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(runner.communicate(), 60)
        assert (out.decode().strip(), runner.returncode) == ("held", 9)
        assert await driver.cleanup() == 0
        assert driver.last_cleanup_skipped is True
        clock.advance(61)
        assert await driver.cleanup() == 1
        assert driver.last_cleanup_skipped is False


async def test_a_migration_waits_for_a_held_migration_lease(mysql_url: str) -> None:
    # Another deploy is migrating this table: its lease row, claimed for 300 s.
    admin_mysql(
        mysql_url,
        "INSERT INTO sqlsession_lock (name, holder, expires_at) VALUES "
        f"('migrate', 'another-deploy', {int(time.time() * 1000) + 300_000})",
    )
    migration = asyncio.ensure_future(asyncio.to_thread(_migrate.upgrade, mysql_url))
    await asyncio.sleep(1.5)
    assert not migration.done()  # waiting for the other deploy
    admin_mysql(mysql_url, "UPDATE sqlsession_lock SET expires_at = 0 WHERE name = 'migrate'")
    await asyncio.wait_for(migration, 30)
    assert _migrate.current(mysql_url) == SCHEMA_REVISION


async def test_a_multi_host_url_connects_to_the_host_that_answers(mysql_url: str) -> None:
    url = make_url(mysql_url)
    # Port 1 refuses at once; the second host is the test server.
    hosts = f"127.0.0.1:1,{url.host}:{url.port or 3306}"
    multi = f"mysql://{url.username}@{hosts}/{url.database}"
    async with SQLDriver(multi) as driver:
        await driver.set_item("a", {"x": 1})
        assert await driver.get_item("a") == {"x": 1}
        assert await driver.merge_item("a", {"y": 2}) == {"x": 1, "y": 2}
        assert "127.0.0.1:1," in driver.url
    only_dead = f"mysql://{url.username}@127.0.0.1:1,127.0.0.1:2/{url.database}"
    async with SQLDriver(only_dead) as driver:
        with pytest.raises(DatabaseUnavailableError, match="Cannot reach"):
            await driver.get_item("a")


async def test_read_your_writes_sets_wsrep_sync_wait_on_every_connection(
    mysql_url: str,
) -> None:
    async with SQLDriver(mysql_url, read_your_writes=True) as driver:
        await driver.set_item("a", 1)
        assert await driver.get_item("a") == 1
        async with driver.engine.connect() as conn:
            assert await conn.scalar(text("SELECT @@SESSION.wsrep_sync_wait")) == 1
    async with SQLDriver(mysql_url) as driver, driver.engine.connect() as conn:
        assert await conn.scalar(text("SELECT @@SESSION.wsrep_sync_wait")) == 0


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "sqlite:///x.db"])
def test_read_your_writes_is_a_galera_option(url: str) -> None:
    config = session_drivers.sql(url=url, read_your_writes=True)  # the config half is light
    assert (config.config or {})["read_your_writes"] is True
    with pytest.raises(ConfigError, match="MariaDB Galera"):
        SQLDriver(url, read_your_writes=True)


def test_read_your_writes_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="read_your_writes"):
        session_drivers.sql(url="mysql://u@h/db", read_your_writes="yes")  # type: ignore[arg-type]


async def test_read_your_writes_is_refused_with_a_given_engine(mysql_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from sqlsession._url import normalize_url

    engine = create_async_engine(normalize_url(mysql_url))
    try:
        with pytest.raises(ConfigError, match="wsrep_sync_wait"):
            SQLDriver(engine=engine, read_your_writes=True)
    finally:
        await engine.dispose()


async def test_cleanup_without_the_lock_table_says_to_migrate(
    mysql_url: str, clock: FakeClock
) -> None:
    # A database migrated by a sqlsession from before the lock table.
    table = f"t_{uuid.uuid4().hex[:10]}"
    migrate(mysql_url, table=table)
    try:
        admin_mysql(mysql_url, f"DROP TABLE {table}_lock")
        async with SQLDriver(mysql_url, table=table, clock=clock, ttl=1) as driver:
            await driver.set_item("old", 1)
            clock.advance(2)
            with pytest.raises(SchemaError, match=f"lock table '{table}_lock'.*migrate"):
                await driver.cleanup()
            migrate(mysql_url, table=table)
            assert await driver.cleanup() == 1
    finally:
        _migrate.downgrade(mysql_url, table=table, revision="base")
    assert not {table, f"{table}_lock"} & table_names(mysql_url)


@pytest.mark.parametrize("hosts", ["h1:3306,:3307", "h1:3306,h2:port", "h1,"])
def test_a_bad_host_in_a_multi_host_url_is_a_config_error(hosts: str) -> None:
    with pytest.raises(ConfigError, match="host:port,host:port"):
        SQLDriver(f"mysql://app@{hosts}/db")
