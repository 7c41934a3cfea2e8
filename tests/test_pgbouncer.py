"""Behind pgbouncer in transaction mode: every operation, merges across processes, cleanup.

A pooler in transaction mode gives each transaction whichever server connection is
free, so a statement prepared on one is missing on the next, and a session-level lock
is taken on one server connection and released (or not) on another.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sqlsession.drivers.sql import SQLDriver

from . import pgcluster
from .conftest import FakeClock, migrate

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


@dataclass
class Pooled:
    direct: str  # the cluster itself
    pooled: str  # the same database through pgbouncer
    cluster: pgcluster.Cluster


@pytest.fixture(scope="module")
def pooled() -> Iterator[Pooled]:
    with pgcluster.cluster("bounced") as cluster:
        cluster.psql("CREATE DATABASE sessions")
        direct = cluster.url_for("sessions")
        migrate(direct)
        with pgcluster.pgbouncer(cluster.port, [pgcluster.SUPERUSER]) as bouncer:
            pooled = f"postgresql://{pgcluster.SUPERUSER}@127.0.0.1:{bouncer.port}/sessions"
            yield Pooled(direct, pooled, cluster)


@pytest.fixture
def table(pooled: Pooled) -> str:
    """A migrated table of this test's own, so the tests do not see each other's rows."""
    name = "t_" + uuid.uuid4().hex[:12]
    migrate(pooled.direct, table=name)
    return name


async def workload(driver: SQLDriver, task: int, rounds: int) -> None:
    """Every operation of the driver, checked, as one task of a busy app runs them."""
    for n in range(rounds):
        key = f"k{task}:{n}"
        await driver.set_item(key, {"task": task, "n": n})
        assert await driver.get_item(key) == {"task": task, "n": n}
        assert await driver.has_item(key)
        assert await driver.touch(key, 60)
        assert await driver.get_expiry(key) is not None
        merged = await driver.merge_item(key, {"seen": True}, ["n"])
        assert merged == {"task": task, "seen": True}
        assert await driver.merge_existing_text(key, {"t": "[1]"}, ["seen"])
        assert await driver.get_item(key) == {"task": task, "t": [1]}
        assert key in await driver.get_keys(f"k{task}:")
        assert (await driver.stats(f"k{task}:"))["live"] >= 1
        await driver.remove_item(key)
        assert await driver.get_item(key) is None
    await driver.set_item(f"gone{task}", 1)
    await driver.clear(f"gone{task}")
    assert not await driver.has_item(f"gone{task}")


async def busy(driver: SQLDriver, tasks: int = 8, rounds: int = 8) -> None:
    await asyncio.gather(*(workload(driver, task, rounds) for task in range(tasks)))


async def test_the_plain_url_works_behind_pgbouncer(
    pooled: Pooled, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepared statements on: the first one the pooler loses switches them off, once,
    # and the operation that found it runs again; no caller sees an error.
    caplog.set_level(logging.WARNING, "sqlsession")
    async with SQLDriver(pooled.pooled, table=table) as driver:
        await busy(driver)
        await busy(driver)
    switches = [r for r in caplog.records if "lost a prepared statement" in r.getMessage()]
    assert len(switches) == 1
    assert "statement_cache_size=0" in switches[0].getMessage()


@pytest.mark.parametrize(
    ("query", "options"),
    [
        ("?statement_cache_size=0", {}),
        ("?prepared_statement_cache_size=0", {}),
        ("", {"prepared_statements": False}),
    ],
)
async def test_prepared_statements_off_from_the_url_or_the_option(
    pooled: Pooled,
    table: str,
    query: str,
    options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "sqlsession")
    async with SQLDriver(pooled.pooled + query, table=table, **options) as driver:
        await busy(driver)
    # Unnamed from the start: nothing was lost, so nothing switched.
    assert not [r for r in caplog.records if "prepared statement" in r.getMessage()]


async def test_the_cli_through_pgbouncer_says_what_the_server_said(pooled: Pooled) -> None:
    from .conftest import run_script

    url = pooled.pooled.rsplit("/", 1)[0] + "/nosuchdb"
    result = await asyncio.to_thread(run_script, "sqlsession", "stats", "--url", url)
    assert result.returncode != 0
    assert 'database "nosuchdb" does not exist' in result.stderr
    assert "migrate" not in result.stderr


MERGER = textwrap.dedent(
    """
    import asyncio, sys
    from sqlsession.drivers.sql import SQLDriver

    async def main(url, table, name):
        async with SQLDriver(url, table=table) as driver:
            for n in range(40):
                await driver.merge_item("shared", {f"{name}{n}": n})

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_merge_item_across_two_processes_behind_pgbouncer(pooled: Pooled, table: str) -> None:
    # Two processes: asyncpg names its statements from a per-process counter, so their
    # names collide on the shared server connections.
    async def merger(name: str) -> tuple[int, bytes]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            MERGER,
            pooled.pooled,
            table,
            name,
            stderr=subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 120)
        return process.returncode or 0, err

    results = await asyncio.gather(merger("a"), merger("b"))
    # Each may log the one switch to unnamed statements (on stderr), nothing else.
    assert [code for code, _ in results] == [0, 0], results
    assert not [err for _, err in results if b"Traceback" in err or b"Error" in err]
    async with SQLDriver(pooled.direct, table=table) as driver:
        stored = await driver.get_item("shared")
    assert stored == {f"{name}{n}": n for name in "ab" for n in range(40)}


TEXT_MERGER = textwrap.dedent(
    """
    import asyncio, sys
    from sqlsession.drivers.sql import SQLDriver

    async def main(url, table, name):
        async with SQLDriver(url, table=table) as driver:
            for n in range(40):
                assert await driver.merge_existing_text("shared", {f"{name}{n}": str(n)})

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_one_statement_merges_across_two_processes_behind_pgbouncer(
    pooled: Pooled, table: str
) -> None:
    async with SQLDriver(pooled.direct, table=table) as driver:
        await driver.set_item("shared", {"start": True})

    async def merger(name: str) -> tuple[int, bytes]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            TEXT_MERGER,
            pooled.pooled,
            table,
            name,
            stderr=subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 120)
        return process.returncode or 0, err

    results = await asyncio.gather(merger("a"), merger("b"))
    assert [code for code, _ in results] == [0, 0], results
    assert not [err for _, err in results if b"Traceback" in err or b"Error" in err]
    async with SQLDriver(pooled.direct, table=table) as driver:
        stored = await driver.get_item("shared")
    assert stored == {"start": True, **{f"{name}{n}": n for name in "ab" for n in range(40)}}


async def test_two_cleanup_runners_behind_pgbouncer_leave_no_lock(
    pooled: Pooled, table: str, clock: FakeClock
) -> None:
    async with SQLDriver(pooled.direct, table=table, clock=clock) as direct:
        await asyncio.gather(*(direct.set_item(f"old{n}", n, ttl=1) for n in range(600)))
        await direct.set_item("live", 1)
    clock.advance(5)
    runners = [
        SQLDriver(pooled.pooled, table=table, clock=clock, cleanup_batch_size=50) for _ in range(2)
    ]
    try:
        deleted = await asyncio.gather(*(runner.cleanup() for runner in runners))
        # Together they deleted every expired row once; neither deleted a live one.
        assert sum(deleted) == 600
        assert await runners[0].stats() == {"live": 1, "expired": 0}
    finally:
        for runner in runners:
            await runner.dispose()
    # No advisory lock outlived its batch on any server connection.
    held = pooled.cluster.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert held == "0"
    # A later cleanup, direct or pooled, runs rather than finding "another cleanup".
    async with SQLDriver(pooled.direct, table=table, clock=clock, ttl=1) as direct:
        await direct.set_item("older", 1)
        clock.advance(5)
        assert await direct.cleanup() == 1
        assert direct.last_cleanup_skipped is False
