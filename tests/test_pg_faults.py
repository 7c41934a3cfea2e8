"""A PostgreSQL cluster of the test's own, restarted, terminated and refused under load.

Every error an operation raises is one of ours, no acknowledged write is lost, the
same driver recovers, and each state the server can be in is reported as what it is.
Run with ``-s`` to see the figures of each fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from sqlsession.drivers.sql import SQLDriver
from sqlsession.errors import DatabaseUnavailableError, OperationTimeoutError, SessionError

from . import pgcluster
from .conftest import migrate, run_script
from .pgload import FaultReport, Load

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


@pytest.fixture(scope="module")
def server() -> Iterator[pgcluster.Cluster]:
    with pgcluster.cluster("faults") as cluster:
        cluster.psql("CREATE DATABASE sessions")
        migrate(cluster.url_for("sessions"))
        yield cluster


def terminate_sql(where: str = "true") -> str:
    return (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
        f"backend_type = 'client backend' AND pid <> pg_backend_pid() AND {where}"
    )


def check(report: FaultReport) -> None:
    print(report.line())
    assert report.foreign == [], report.foreign
    assert report.lost == 0
    assert report.acknowledged > 50
    assert report.outage < 10


@pytest.mark.slow
async def test_restarts_and_terminated_backends_under_load(server: pgcluster.Cluster) -> None:
    url = server.url_for("sessions")

    async def restart(mode: str) -> None:
        await asyncio.to_thread(server.stop, mode)
        await asyncio.to_thread(server.start)

    async def terminate() -> None:
        await asyncio.to_thread(server.psql, terminate_sql())

    # One driver through every fault: it recovers without being made again.
    async with SQLDriver(url, connect_timeout=2) as driver:
        for name, action in [
            ("restart -m fast", lambda: restart("fast")),
            ("restart -m immediate", lambda: restart("immediate")),
            ("pg_terminate_backend", terminate),
        ]:
            check(await Load(driver).fault(name, action, verify_url=url))


async def test_connection_lost_inside_merge_runs_it_again(server: pgcluster.Cluster) -> None:
    url = server.url_for("sessions")
    async with SQLDriver(url) as driver:
        await driver.set_item("locked", {"a": 1})
        holder = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/sessions")
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM sqlsession WHERE key = 'locked' FOR UPDATE")
                merge = asyncio.create_task(driver.merge_item("locked", {"b": 2}))
                # The merge's transaction waits for the row lock: end its connection.
                waiting = 0
                for _ in range(200):
                    waiting = await holder.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    )
                    if waiting:
                        break
                    await asyncio.sleep(0.02)
                assert waiting == 1
                terminated = await holder.fetchval(terminate_sql("wait_event_type = 'Lock'"))
                assert terminated == 1
            # The lock is released: the merge, run once more on a new connection, wins.
            assert await asyncio.wait_for(merge, 10) == {"a": 1, "b": 2}
        finally:
            await holder.close()
        assert await driver.get_item("locked") == {"a": 1, "b": 2}


async def test_cancelled_operations_are_quiet_and_leak_nothing(
    server: pgcluster.Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    # 200 operations at a time cancelled after 1 to 5 ms, for 3 s: a cancelled statement
    # costs its connection, so connects are cancelled too, some in their TLS
    # negotiation. asyncio reports no exception nobody retrieved; the driver works on.
    url = server.url_for("sessions")
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    caplog.set_level(logging.ERROR, "asyncio")
    try:
        async with SQLDriver(url, pool_size=20) as driver:
            await driver.set_item("k", 1)

            async def short(n: int) -> None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(driver.get_item(f"k{n % 7}"), 0.001 * (1 + n % 5))

            until = time.monotonic() + 3
            while time.monotonic() < until:
                await asyncio.gather(*(short(n) for n in range(200)))
            await asyncio.sleep(0.5)  # the connects cancelled callers left behind end
            assert await driver.get_item("k") == 1
        gc.collect()
        await asyncio.sleep(0.1)
    finally:
        loop.set_exception_handler(previous)
    assert [context.get("message") for context in unretrieved] == []
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


# -- what each server state is reported as --------------------------------------------


async def unavailable(url: str, **options: Any) -> str:
    """The message of the error an operation on `url` raises: a DatabaseUnavailableError."""
    async with SQLDriver(url, **options) as driver:
        with pytest.raises(DatabaseUnavailableError) as info:
            await driver.get_item("k")
    return str(info.value)


async def test_server_states_are_unavailable_with_the_servers_reason(
    server: pgcluster.Cluster,
) -> None:
    port = server.port
    for statement in [
        f"CREATE ROLE {pgcluster.PASSWORD_ROLE} LOGIN PASSWORD '{pgcluster.PASSWORD}'",
        "CREATE ROLE limited LOGIN CONNECTION LIMIT 0",
        "CREATE DATABASE closed",
        "ALTER DATABASE closed ALLOW_CONNECTIONS false",
    ]:
        server.psql(statement)
    nobody = pgcluster.free_port(pgcluster.CLUSTER_PORTS)
    cases = {
        f"postgresql://postgres@127.0.0.1:{nobody}/sessions": "refused",
        f"postgresql://postgres@127.0.0.1:{port}/nosuchdb": 'database "nosuchdb" does not exist',
        f"postgresql://{pgcluster.PASSWORD_ROLE}:wrong@127.0.0.1:{port}/sessions": (
            "password authentication failed"
        ),
        f"postgresql://limited@127.0.0.1:{port}/sessions": "too many connections",
        f"postgresql://postgres@127.0.0.1:{port}/closed": "not currently accepting connections",
    }
    for url, reason in cases.items():
        message = await unavailable(url)
        assert reason in message, message
        assert "wrong" not in message
        assert "migrate" not in message
    # The CLI says the same, not "run sqlsession migrate".
    result = await asyncio.to_thread(
        run_script,
        "sqlsession",
        "stats",
        "--url",
        f"postgresql://limited@127.0.0.1:{port}/sessions",
    )
    assert result.returncode != 0
    assert "too many connections" in result.stderr
    assert "migrate" not in result.stderr


async def test_a_server_shutting_down_is_unavailable(server: pgcluster.Cluster) -> None:
    url = server.url_for("sessions")
    # A smart shutdown waits for this client; meanwhile it refuses new connections.
    holder = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/sessions")
    try:
        await asyncio.to_thread(server.stop, "smart", wait=False)
        await asyncio.sleep(0.3)
        message = await unavailable(url)
        assert "shutting down" in message, message
    finally:
        await holder.close()
    for _ in range(100):
        if not server.running():
            break
        await asyncio.sleep(0.1)
    # Stopped: refused.
    assert "refused" in (await unavailable(url)).lower()
    await asyncio.to_thread(server.start)


async def test_a_server_that_never_answers_times_out_once(server: pgcluster.Cluster) -> None:
    # Accepts TCP and says nothing: the connect gives up after connect_timeout, once.
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    port = pgcluster.free_port(pgcluster.CLUSTER_PORTS)
    listener = await asyncio.start_server(silent, "127.0.0.1", port)
    try:
        async with SQLDriver(
            f"postgresql://postgres@127.0.0.1:{port}/sessions?connect_timeout=0.5"
        ) as driver:
            started = time.monotonic()
            with pytest.raises(OperationTimeoutError, match="timed out") as info:
                await driver.get_item("k")
            elapsed = time.monotonic() - started
    finally:
        done.set()
        listener.close()
        await listener.wait_closed()
        await asyncio.sleep(0.05)  # the handlers close their connections
    assert 0.4 < elapsed < 0.95, elapsed  # not retried into twice the time
    assert isinstance(info.value, SessionError)
