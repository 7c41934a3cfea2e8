"""What only the SQL driver does: URLs, schema checks, errors, cleanup, processes."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import subprocess
import sys
import textwrap
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from sqlsession import (
    ConfigError,
    DatabaseUnavailableError,
    SchemaError,
    StorageError,
    load_driver,
    session_drivers,
)
from sqlsession._url import normalize_url
from sqlsession.drivers.sql import SQLDriver
from sqlsession.drivers.sql.dialects import CleanupJob

from .conftest import (
    SQL_BACKENDS,
    FakeClock,
    admin_sql,
    migrate,
    mysql_base_url,
    postgres_base_url,
)


class _AnyInt:
    def __eq__(self, other: object) -> bool:
        return type(other) is int

    def __repr__(self) -> str:
        return "<any int>"


ANY_INT: Any = _AnyInt()


def dialect_of(driver: SQLDriver) -> Any:
    """The driver's dialect object, for tests of a database's own mechanics."""
    return driver._dialect


@dataclass
class CleanupLock:
    """The statements that take and release a table's cleanup lock."""

    try_lock: Any
    unlock: Any


def lock_of(driver: SQLDriver) -> CleanupLock:
    """The cleanup lock of PostgreSQL (advisory), as the dialect takes it.

    MySQL's is a lease row, tested in test_mysql_locks.py.
    """
    dialect = dialect_of(driver)
    if driver.dialect == "postgresql":
        # The cleanup takes a transaction-scoped lock in each batch's transaction; a
        # session-level lock on the same key, held here, blocks it just the same.
        key = dialect._lock_key
        return CleanupLock(
            text(f"SELECT pg_try_advisory_lock({key})"), text(f"SELECT pg_advisory_unlock({key})")
        )
    return CleanupLock(dialect._try_lock, dialect._unlock)


@pytest.fixture(params=SQL_BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


# -- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["", "sessions.db", "mssql://root@localhost/db", "sqlite:relative.db", 42, "redis://x"],
)
def test_bad_url_is_refused_by_config_and_driver(bad: Any) -> None:
    with pytest.raises(ConfigError, match="URL"):
        session_drivers.sql(url=bad)
    with pytest.raises(ConfigError, match="URL"):
        SQLDriver(bad)


def test_url_password_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        SQLDriver("mssql://app:s3cret@db/app")
    assert "s3cret" not in str(info.value)


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ConfigError, match="memory driver"):
        SQLDriver("sqlite:///:memory:")


async def test_plain_schemes_map_to_async_drivers(sqlite_url: str) -> None:
    assert sqlite_url.startswith("sqlite:///")
    async with SQLDriver(sqlite_url) as driver:
        assert driver.engine.url.drivername == "sqlite+aiosqlite"
        await driver.set_item("k", 1)
    base = os.environ.get("SQLSESSION_TEST_POSTGRES_URL")
    if base:
        for scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
            driver = SQLDriver(scheme + "://" + base.split("://", 1)[1])
            assert driver.engine.url.drivername == "postgresql+asyncpg"
            await driver.dispose()


def test_libpq_sslmode_becomes_asyncpg_ssl() -> None:
    from sqlsession._url import normalize_url

    url = normalize_url("postgres://u:p@db.example:5432/app?sslmode=require&application_name=x")
    assert url == "postgresql+asyncpg://u:p@db.example:5432/app?ssl=require&application_name=x"
    assert normalize_url("sqlite:///a.db?sslmode=x") == "sqlite+aiosqlite:///a.db?sslmode=x"


async def test_sslmode_disable_connects(postgres_url: str) -> None:
    async with SQLDriver(postgres_url + "?sslmode=disable") as driver:
        await driver.set_item("k", 1)
        assert await driver.get_item("k") == 1


async def test_env_var_is_read_when_the_driver_is_loaded(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SQLSESSION_URL", "sqlite:////nonexistent/built-time.db")
    cfg = session_drivers.sql()  # the URL is not resolved here
    assert cfg.config is not None
    assert cfg.config["url"] is None
    monkeypatch.setenv("SQLSESSION_URL", sqlite_url)
    driver: Any = load_driver(cfg)
    try:
        await driver.set_item("k", "via env")
        assert await driver.get_item("k") == "via env"
        assert driver.engine.url.database == sqlite_url.split(":///", 1)[1]
    finally:
        await driver.dispose()


async def test_default_url_is_sqlsession_db_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SQLSESSION_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    migrate(None)  # type: ignore[arg-type]
    assert (tmp_path / "sqlsession.db").exists()
    async with SQLDriver() as driver:
        await driver.set_item("k", 1)
        assert await driver.get_item("k") == 1


# -- schema: never created implicitly ------------------------------------------------------


async def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    async with SQLDriver(f"sqlite:///{path}") as driver:
        with pytest.raises(SchemaError, match="sqlsession migrate --url"):
            await driver.set_item("k", 1)
        with pytest.raises(SchemaError):
            await driver.get_item("k")
    assert not path.exists()


async def test_unmigrated_table_says_run_migrate(url: str) -> None:
    async with SQLDriver(url, table="never_migrated") as driver:
        with pytest.raises(SchemaError) as info:
            await driver.set_item("k", 1)
    message = str(info.value)
    assert "sqlsession migrate" in message
    assert "--table never_migrated" in message


async def test_table_behind_head_says_run_migrate(url: str) -> None:
    engine = create_async_engine(normalize_url(url))
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE sqlsession_alembic_version SET version_num = '0000'"))
    try:
        async with SQLDriver(url) as driver:
            with pytest.raises(SchemaError, match=r"'0001'.*sqlsession migrate"):
                await driver.get_item("k")
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE sqlsession_alembic_version SET version_num = '0001'"))
        await engine.dispose()


async def test_table_dropped_later_gives_schema_error(url: str) -> None:
    async with SQLDriver(url) as driver:
        await driver.set_item("k", 1)
        engine = driver.engine
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE sqlsession RENAME TO sqlsession_gone"))
        try:
            with pytest.raises(SchemaError, match="sqlsession migrate"):
                await driver.get_item("k")
        finally:
            async with engine.begin() as conn:
                await conn.execute(text("ALTER TABLE sqlsession_gone RENAME TO sqlsession"))


# -- unreachable databases -----------------------------------------------------------------


@pytest.mark.parametrize(
    "unreachable",
    [
        "postgresql://nobody@127.0.0.1:1/nowhere",
        "postgresql://root@127.0.0.1:5432/sqlsession_no_such_database",
    ],
)
async def test_unreachable_postgres(unreachable: str) -> None:
    postgres_base_url()
    async with SQLDriver(unreachable) as driver:
        with pytest.raises(DatabaseUnavailableError, match="Cannot reach"):
            await driver.set_item("k", 1)


@pytest.mark.parametrize(
    "unreachable",
    [
        "mysql://root@127.0.0.1:1/test",  # nothing listening
        "mysql://nobody:s3cret@127.0.0.1:3306/test",  # no such user
        "mysql://root@127.0.0.1:3306/sqlsession_no_such_database",
    ],
)
async def test_unreachable_mysql(unreachable: str) -> None:
    mysql_base_url()
    async with SQLDriver(unreachable) as driver:
        with pytest.raises(DatabaseUnavailableError, match="Cannot reach") as info:
            await driver.set_item("k", 1)
    assert "s3cret" not in str(info.value)


async def test_a_mysql_lock_wait_timeout_is_a_storage_error(mysql_url: str) -> None:
    async with SQLDriver(mysql_url, pool_size=1) as driver:
        await driver.set_item("k", 1)
        # The driver's only connection gives up on a lock after one second.
        async with driver.engine.connect() as conn:
            await conn.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
        async with SQLDriver(mysql_url, pool_size=1) as holder, holder.engine.connect() as other:
            await other.execute(text("SET SESSION autocommit = 0"))
            await other.execute(text("SELECT * FROM sqlsession WHERE `key` = 'k' FOR UPDATE"))
            for write in (driver.set_item("k", 2), driver.merge_item("k", {"a": 1})):
                with pytest.raises(StorageError, match="gave up waiting for a lock"):
                    await write
            await other.execute(text("ROLLBACK"))
        assert await driver.get_item("k") == 1  # nothing was written


async def test_sqlite_in_a_missing_directory(tmp_path: Path) -> None:
    async with SQLDriver(f"sqlite:///{tmp_path}/no/such/dir/s.db") as driver:
        with pytest.raises(SchemaError, match="does not exist"):
            await driver.get_item("k")


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("table", "bad-name"),
        ("table", "1abc"),
        ("table", "x" * 47),
        ("table", "drop table x;--"),
        ("schema", "a.b"),
        ("pool_size", 0),
        ("durability", "maybe"),
        ("cleanup_batch_size", 0),
        ("cleanup_interval", -5),
    ],
)
def test_bad_options_are_refused(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        session_drivers.sql(url="sqlite:///x.db", **{option: value})
    with pytest.raises(ValueError, match=option):
        SQLDriver("sqlite:///x.db", **{option: value})


def test_unknown_config_key_is_refused() -> None:
    from sqlsession.drivers.sql import create_driver

    with pytest.raises(ConfigError, match="poolsize"):
        create_driver({"url": "sqlite:///x.db", "poolsize": 3})


async def test_a_given_engine_is_left_open(sqlite_url: str) -> None:
    engine = create_async_engine(sqlite_url.replace("sqlite://", "sqlite+aiosqlite://", 1))
    async with SQLDriver(engine=engine) as driver:
        await driver.set_item("k", 1)
    async with engine.connect() as conn:  # still usable: the driver did not dispose it
        assert await conn.scalar(text("SELECT count(*) FROM sqlsession")) == 1
    await engine.dispose()


async def test_relaxed_durability_turns_off_synchronous_commit(postgres_url: str) -> None:
    async with SQLDriver(postgres_url, durability="relaxed") as driver:
        await driver.set_item("k", 1)
        async with driver.engine.connect() as conn:
            assert await conn.scalar(text("SHOW synchronous_commit")) == "off"
    async with SQLDriver(postgres_url) as driver, driver.engine.connect() as conn:
        assert await conn.scalar(text("SHOW synchronous_commit")) == "on"


async def test_postgres_schema_and_separate_tables(postgres_database: str) -> None:
    schema = f"s_{uuid.uuid4().hex[:8]}"
    admin_sql(postgres_database, f'CREATE SCHEMA "{schema}"')
    migrate(postgres_database, table="other", schema=schema)
    migrate(postgres_database, table="second")
    async with (
        SQLDriver(postgres_database, table="other", schema=schema) as a,
        SQLDriver(postgres_database, table="second") as b,
    ):
        await a.set_item("k", "in schema")
        await b.set_item("k", "second table")
        assert await a.get_item("k") == "in schema"
        assert await b.get_item("k") == "second table"
        await a.clear()
        assert await b.get_item("k") == "second table"


async def test_sqlite_runs_in_wal_mode(sqlite_url: str) -> None:
    async with SQLDriver(sqlite_url) as driver:
        await driver.set_item("k", 1)
        async with driver.engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"


# -- cleanup -------------------------------------------------------------------------------


async def test_cleanup_in_batches_never_deletes_live_rows(url: str, clock: FakeClock) -> None:
    async with SQLDriver(url, clock=clock, ttl=60, cleanup_batch_size=50) as driver:
        await asyncio.gather(*(driver.set_item(f"old{i:04}", i) for i in range(1000)))
        await driver.set_item("forever", "f", ttl=None)
        clock.advance(30)
        await driver.set_item("young", "y")
        clock.advance(31)  # old* expired, young still has 29 s
        refreshed = [f"old{i:04}" for i in range(0, 1000, 7)]

        async def refresh() -> None:
            # Sessions refreshed while cleanup runs must survive it.
            for key in refreshed:
                await driver.set_item(key, "refreshed")

        deleted, _ = await asyncio.gather(driver.cleanup(), refresh())
        assert 1000 - len(refreshed) <= deleted <= 1000
        for key in refreshed:
            assert await driver.get_item(key) == "refreshed"
        assert await driver.get_item("young") == "y"
        assert await driver.get_item("forever") == "f"
        assert await driver.stats() == {"live": len(refreshed) + 2, "expired": 0}


async def test_sqlite_cleanup_checkpoints_between_batches_not_inside_them(
    sqlite_url: str, clock: FakeClock
) -> None:
    from sqlalchemy import event

    async with SQLDriver(sqlite_url, clock=clock, pool_size=1, cleanup_batch_size=100) as driver:
        for i in range(1000):
            await driver.set_item(f"k{i:04}", i, ttl=1)
        async with driver.engine.connect() as conn:  # the pool's only connection
            await conn.exec_driver_sql("PRAGMA wal_autocheckpoint = 700")
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(" ".join(statement.split()[:3]))

        event.listen(driver.engine.sync_engine, "before_cursor_execute", record)
        clock.advance(2)
        assert await driver.cleanup() == 1000
        event.remove(driver.engine.sync_engine, "before_cursor_execute", record)
        # The DELETEs run with the autocheckpoint off (or each would also copy its
        # pages into the database file before returning), and a PASSIVE checkpoint
        # follows every batch, including the last, short one.
        assert statements == [
            "PRAGMA wal_autocheckpoint",
            "PRAGMA wal_autocheckpoint =",
            *["DELETE FROM sqlsession", "PRAGMA wal_checkpoint(PASSIVE)"] * 11,
            "PRAGMA wal_autocheckpoint =",
        ]
        async with driver.engine.connect() as conn:
            # The pooled connection gets its own setting back.
            assert await conn.scalar(text("PRAGMA wal_autocheckpoint")) == 700
        assert await driver.stats() == {"live": 0, "expired": 0}


async def test_cancelled_cleanup_ends_and_leaves_the_pool_healthy(
    url: str, clock: FakeClock
) -> None:
    from sqlalchemy import event

    async with SQLDriver(url, clock=clock, pool_size=1, cleanup_batch_size=10) as driver:
        for i in range(100):
            # 1.5 KB each, random (so neither compressed nor moved out of line), so
            # that PostgreSQL's sweep, a page range per DELETE, needs many statements.
            await driver.set_item(f"k{i:03}", secrets.token_hex(750), ttl=1)
        clock.advance(2)
        deletes = 0

        def cancel_at_the_third_delete(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
            nonlocal deletes
            if statement.lstrip().startswith("DELETE"):
                deletes += 1
                if deletes == 3:
                    task.cancel()

        event.listen(driver.engine.sync_engine, "before_cursor_execute", cancel_at_the_third_delete)
        task = asyncio.ensure_future(driver.cleanup())
        # The cancellation itself comes out, not an error from undoing the lock or
        # setting on a connection the cancellation broke (that hung dispose() with a
        # periodic cleanup, which keeps going after a storage error).
        with pytest.raises(asyncio.CancelledError):
            await task
        event.remove(driver.engine.sync_engine, "before_cursor_execute", cancel_at_the_third_delete)
        assert deletes == 3
        # (How many the first DELETEs removed depends on the table's history: a
        # PostgreSQL sweep starts at page 0, which earlier tests may have left empty.)
        left = (await driver.stats())["expired"]
        assert left <= 100
        # The pool's one connection works, holds no cleanup lock and has SQLite's
        # default autocheckpoint: the next cleanup finishes the job.
        assert await driver.cleanup() == left
        assert driver.last_cleanup_skipped is False
        assert await driver.stats() == {"live": 0, "expired": 0}
        if driver.dialect == "sqlite":
            async with driver.engine.connect() as conn:
                assert await conn.scalar(text("PRAGMA wal_autocheckpoint")) == 1000


async def test_dispose_stops_a_periodic_cleanup_in_the_middle_of_a_batch(
    url: str, clock: FakeClock
) -> None:
    from sqlalchemy import event

    driver = SQLDriver(url, clock=clock, ttl=1, cleanup_interval=0.01, cleanup_batch_size=5)
    for i in range(200):
        await driver.set_item(f"k{i:03}", i)
    clock.advance(2)
    deleting = asyncio.Event()

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith("DELETE"):
            deleting.set()

    event.listen(driver.engine.sync_engine, "before_cursor_execute", on_execute)
    await asyncio.wait_for(deleting.wait(), 10)
    task = driver._cleanup_task
    assert task is not None
    await asyncio.wait_for(driver.dispose(), 10)
    assert task.done()


async def test_stats_counts_live_and_expired(url: str, clock: FakeClock) -> None:
    async with SQLDriver(url, clock=clock) as driver:
        await driver.set_item("a", 1, ttl=10)
        await driver.set_item("b", 1, ttl=100)
        await driver.set_item("c", 1, ttl=None)
        clock.advance(50)
        assert await driver.stats() == {"live": 2, "expired": 1}


async def test_stats_counts_the_keys_with_a_prefix(url: str, clock: FakeClock) -> None:
    async with SQLDriver(url, clock=clock) as driver:
        for key in ("s:1", "s:2", "u:1", "t", "s"):
            await driver.set_item(key, 1, ttl=None)
        await driver.set_item("s:old", 1, ttl=1)
        await driver.set_item("s_x", 1, ttl=None)  # _ is literal, not a wildcard
        clock.advance(2)
        assert await driver.stats("s:") == {"live": 2, "expired": 1}
        assert await driver.stats("u:") == {"live": 1, "expired": 0}
        assert await driver.stats("\U0010ffff") == {"live": 0, "expired": 0}
        assert await driver.stats() == {"live": 6, "expired": 1}


async def test_get_expiry(url: str, clock: FakeClock) -> None:
    async with SQLDriver(url, clock=clock, ttl=60) as driver:
        await driver.set_item("default", 1)
        await driver.set_item("short", 1, ttl=10.5)
        await driver.set_item("forever", None, ttl=None)
        assert await driver.get_expiry("default") == clock.now + 60
        assert await driver.get_expiry("short") == clock.now + 10.5
        assert await driver.get_expiry("forever") == math.inf
        assert await driver.get_expiry("absent") is None
        clock.advance(11)
        assert await driver.get_expiry("short") is None  # expired: as if absent
        assert await driver.touch("default", ttl=5)
        assert await driver.get_expiry("default") == clock.now + 5


@pytest.mark.parametrize("backend", ["postgres"])  # MySQL: test_mysql_locks.py
async def test_one_cleanup_at_a_time(
    backend: str, request: pytest.FixtureRequest, clock: FakeClock
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    async with SQLDriver(url, clock=clock, ttl=1) as driver, SQLDriver(url) as other:
        await driver.set_item("old", 1)
        clock.advance(2)
        # Another process holding the table's cleanup lock, taken as a cleanup takes it
        # (PostgreSQL's advisory lock, MySQL's named lock), on a connection of its own.
        async with other.engine.connect() as holder:
            assert await holder.scalar(lock_of(other).try_lock)
            assert await driver.cleanup() == 0
            assert driver.last_cleanup_skipped is True
            await holder.execute(lock_of(other).unlock)
        assert await driver.cleanup() == 1
        assert driver.last_cleanup_skipped is False


@pytest.mark.parametrize("backend", ["postgres"])  # MySQL: test_mysql_locks.py
async def test_a_dead_runners_cleanup_lock_is_released(
    backend: str, request: pytest.FixtureRequest, clock: FakeClock
) -> None:
    # A process killed in the middle of a cleanup must not leave the lock held: the
    # next runner cleans. The lock dies with the runner's connection.
    script = (
        "import asyncio, os, sys\n"
        "from sqlalchemy import text\n"
        "from sqlsession.drivers.sql import SQLDriver\n"
        "async def main():\n"
        "    driver = SQLDriver(sys.argv[1], pool_size=1)\n"
        "    async with driver.engine.connect() as conn:\n"
        "        key = getattr(driver._dialect, '_lock_key', None)\n"
        "        lock = driver._dialect._try_lock if key is None else text(\n"
        "            f'SELECT pg_try_advisory_lock({key})')\n"
        "        taken = await conn.scalar(lock)\n"
        "        print('held' if taken in (True, 1) else 'no-lock', flush=True)\n"
        "        os._exit(9)\n"
        "asyncio.run(main())\n"
    )
    url = request.getfixturevalue(f"{backend}_url")
    async with SQLDriver(url, clock=clock, ttl=1) as driver:
        await driver.set_item("old", 1)
        clock.advance(2)
        runner = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, url, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(runner.communicate(), 60)
        assert out.decode().strip() == "held"
        assert runner.returncode == 9
        for _ in range(100):  # the server notices the closed socket at once, or nearly
            if await driver.cleanup() == 1:
                break
            await asyncio.sleep(0.05)
        assert driver.last_cleanup_skipped is False
        assert await driver.stats() == {"live": 0, "expired": 0}


async def test_periodic_cleanup_task(url: str, clock: FakeClock) -> None:
    # The clock decides what is expired; only the schedule runs on real (short) time.
    async with SQLDriver(url, clock=clock, ttl=1, cleanup_interval=0.02) as driver:
        await driver.set_item("old", 1)
        await driver.set_item("live", 2, ttl=None)
        clock.advance(5)
        for _ in range(200):
            if (await driver.stats())["expired"] == 0:
                break
            await asyncio.sleep(0.02)
        assert await driver.stats() == {"live": 1, "expired": 0}
        task = driver._cleanup_task
        assert task is not None
        assert not task.done()
    assert task.done()  # dispose stopped it


def test_periodic_cleanup_is_off_by_default() -> None:
    cfg = session_drivers.sql(url="sqlite:///x.db")
    assert cfg.config is not None
    assert cfg.config["cleanup_interval"] is None


# -- two processes -------------------------------------------------------------------------

MERGER = textwrap.dedent(
    """
    import asyncio, sys
    from sqlsession.drivers.sql import SQLDriver

    async def main(url, name, count):
        async with SQLDriver(url) as driver:
            for i in range(count):
                await driver.merge_item("shared", set={f"{name}{i}": i})

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_two_processes_merging_different_keys_both_win(url: str) -> None:
    count = 60
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", MERGER, url, name, str(count))
        for name in ("a", "b")
    ]
    assert [await p.wait() for p in procs] == [0, 0]
    async with SQLDriver(url) as driver:
        value = await driver.get_item("shared")
    expected = {f"{n}{i}": i for n in ("a", "b") for i in range(count)}
    assert value == expected


def test_fifty_writer_processes_do_not_lock_sqlite(sqlite_url: str) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from sqlsession.drivers.sql import SQLDriver

        async def main(url, n):
            async with SQLDriver(url) as driver:
                await asyncio.gather(*(driver.set_item("hot", {"p": n, "i": i}) for i in range(10)))

        asyncio.run(main(sys.argv[1], int(sys.argv[2])))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, sqlite_url, str(n)], stderr=subprocess.PIPE)
        for n in range(8)
    ]
    errors = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors


async def test_postgres_cleanup_sweeps_only_a_mostly_expired_table(
    postgres_url: str, clock: FakeClock
) -> None:
    # Both ways of cleaning up on PostgreSQL, chosen by the planner's estimate: the
    # expires_at index for a few expired rows among many, a sweep of page ranges when
    # most of the table has expired.
    async with SQLDriver(postgres_url, clock=clock, cleanup_batch_size=400) as driver:
        now = round(clock() * 1000)
        job = CleanupJob(batch_size=400, now_ms=lambda: now)
        admin_sql(
            postgres_url,
            "INSERT INTO sqlsession (key, value, expires_at) "
            f"SELECT 'live' || i, '1', {now + 3_600_000} FROM generate_series(1, 20000) i;"
            f"INSERT INTO sqlsession (key, value, expires_at) "
            f"SELECT 'old' || i, '1', {now - 1000} FROM generate_series(1, 30) i;"
            "ANALYZE sqlsession",
        )
        async with driver.engine.connect() as conn:
            assert await dialect_of(driver)._mostly_expired(conn, job) is False
        assert await driver.cleanup() == 30

        admin_sql(
            postgres_url,
            f"UPDATE sqlsession SET expires_at = {now - 1000} WHERE key NOT LIKE 'live19%';"
            "ANALYZE sqlsession",
        )
        live = await driver.stats()
        async with driver.engine.connect() as conn:
            assert await dialect_of(driver)._mostly_expired(conn, job) is True
        assert await driver.cleanup() == live["expired"]
        assert await driver.stats() == {"live": live["live"], "expired": 0}
        assert await driver.get_item("live19") == 1
        assert await driver.get_keys("live2") == []


@pytest.mark.parametrize("operation", ["get_item", "get_keys"])  # fast path and SQLAlchemy path
async def test_tasks_take_turns_on_a_busy_pool(url: str, operation: str) -> None:
    # A task running operations back to back must not keep the only connection to
    # itself: the asyncio queue behind the pool would hand it straight back, and the
    # other tasks would wait until it is done (or until the pool's timeout).
    engine = create_async_engine(
        normalize_url(url), poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0
    )
    async with SQLDriver(engine=engine) as driver:
        await driver.set_item("k", 1)  # the one connection is open from here on
        done: list[int] = []

        async def worker(n: int) -> None:
            for _ in range(20):
                await getattr(driver, operation)("k")
                done.append(n)

        await asyncio.gather(*(worker(n) for n in range(3)))
    await engine.dispose()
    assert sorted(set(done[:9])) == [0, 1, 2], done


async def test_a_mysql_deadlock_is_run_once_more(mysql_url: str) -> None:
    # A real deadlock between the driver's connection and another one: the server rolls
    # the lighter transaction (the driver's, one row) back with error 1213, and the
    # driver runs the work again instead of failing the operation.
    async with SQLDriver(mysql_url, pool_size=1) as driver, SQLDriver(mysql_url) as other:
        for key in ("a", "b", *(f"heavy{i}" for i in range(50))):
            await driver.set_item(key, 0)
        attempts = 0
        other_has_b = asyncio.Event()
        others: list[asyncio.Task[None]] = []

        async def heavy() -> None:
            async with other.engine.connect() as conn:
                await conn.execute(text("SET SESSION autocommit = 0"))
                # Many rows changed: InnoDB picks the other transaction as the victim.
                await conn.execute(
                    text("UPDATE sqlsession SET value = '1' WHERE `key` LIKE 'heavy%'")
                )
                await conn.execute(text("UPDATE sqlsession SET value = '1' WHERE `key` = 'b'"))
                other_has_b.set()
                await conn.execute(text("UPDATE sqlsession SET value = '1' WHERE `key` = 'a'"))
                await conn.execute(text("COMMIT"))

        async def work(conn: Any) -> str:
            nonlocal attempts
            attempts += 1
            await conn.execute(text("SET SESSION autocommit = 0"))
            try:
                await conn.execute(text("UPDATE sqlsession SET value = '2' WHERE `key` = 'a'"))
                if attempts == 1:
                    others.append(asyncio.create_task(heavy()))
                    await other_has_b.wait()
                    await asyncio.sleep(0.2)  # the other now waits for 'a'
                await conn.execute(text("UPDATE sqlsession SET value = '2' WHERE `key` = 'b'"))
                await conn.execute(text("COMMIT"))
            finally:
                await conn.execute(text("SET SESSION autocommit = 1"))
            return "done"

        assert await driver._run(work, transactional=True) == "done"
        assert attempts == 2
        await others[0]  # the other transaction went through once the victim let go
        assert await driver.get_item("heavy0") == 1
        assert await driver.get_item("a") == 2  # the retry's write came last
        assert await driver.get_item("b") == 2


async def test_cancelled_merges_leave_the_pool_healthy(url: str) -> None:
    # Cancellation is routine (a client goes away, an asyncio.timeout): a merge cancelled
    # at any point must not leave a broken connection in the pool for later operations.
    threads_before = set(_sqlite_threads())
    async with SQLDriver(url, pool_size=2) as driver:
        await driver.set_item("c", {"n": 0})
        for i in range(90):
            operation = (driver.merge_item("c", {"n": i}), driver.get_keys(), driver.stats())
            task = asyncio.create_task(operation[i % 3])
            for unused in operation[: i % 3] + operation[i % 3 + 1 :]:
                unused.close()
            await asyncio.sleep((i % 4) / 1000)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        async def afterwards() -> None:
            for _ in range(5):
                assert await driver.get_keys() == ["c"]
                assert await driver.merge_item("c", {"done": True}) == {
                    "n": ANY_INT,
                    "done": True,
                }

        # Quickly: a lock left behind would make these wait (SQLite's busy timeout is 30 s).
        await asyncio.wait_for(afterwards(), 10)
    # Nor a connection left open: an aiosqlite connection that was never closed keeps
    # its thread, and with it the process, alive at exit.
    for _ in range(200):
        if set(_sqlite_threads()) <= threads_before:
            break
        await asyncio.sleep(0.01)
    assert set(_sqlite_threads()) - threads_before == set()


def _sqlite_threads() -> list[threading.Thread]:
    """aiosqlite's connection threads still running (none once every connection closed)."""
    return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]
