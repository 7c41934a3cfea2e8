"""A primary and its synchronous hot standby, made here: read-only writes, and failover.

The driver is given both hosts with ``target_session_attrs=read-write``; the primary
is stopped under load and the standby promoted; the same driver carries on, and with a
synchronous standby no acknowledged write is lost. Run with ``-s`` for the figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sqlsession.drivers.sql import SQLDriver
from sqlsession.errors import DatabaseUnavailableError, ReadOnlyDatabaseError

from . import pgcluster
from .conftest import migrate
from .pgload import Load

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[pgcluster.Cluster, pgcluster.Cluster]]:
    with pgcluster.cluster("primary") as primary:
        primary.psql("CREATE DATABASE sessions")
        migrate(primary.url_for("sessions"))
        port = pgcluster.free_port(range(primary.port + 1, pgcluster.CLUSTER_PORTS.stop))
        # Not hot at first: it refuses connections as a server still starting does.
        standby = primary.standby("standby", port, hot_standby="off")
        try:
            standby.start(wait=False)
            primary.wait_streaming()
            # Every commit now waits for the standby to have it: a failover loses nothing
            # acknowledged. (The standby's copy of the settings predates this.)
            primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
            primary.psql("SELECT pg_reload_conf()")
            yield primary, standby
        finally:
            standby.kill()


async def test_a_standby_that_is_not_hot_is_unavailable(
    pair: tuple[pgcluster.Cluster, pgcluster.Cluster],
) -> None:
    _, standby = pair
    async with SQLDriver(standby.url_for("sessions")) as driver:
        with pytest.raises(DatabaseUnavailableError, match="not accepting connections") as info:
            await driver.get_item("k")
    assert "migrate" not in str(info.value)


async def test_a_write_on_a_standby_is_a_read_only_error(
    pair: tuple[pgcluster.Cluster, pgcluster.Cluster],
) -> None:
    primary, standby = pair
    standby.stop()
    standby.configure(hot_standby="on")
    standby.start()
    await asyncio.to_thread(primary.wait_streaming)
    async with SQLDriver(primary.url_for("sessions")) as writer:
        await writer.set_item("replicated", 1)
    async with SQLDriver(standby.url_for("sessions")) as driver:
        assert await driver.get_item("replicated") == 1  # reads are served
        for write in (
            lambda: driver.set_item("k", 1),
            lambda: driver.merge_item("k", {"a": 1}),
            lambda: driver.clear(),
        ):
            with pytest.raises(ReadOnlyDatabaseError, match="read-only"):
                await write()


async def test_failover_to_the_promoted_standby_under_load(
    pair: tuple[pgcluster.Cluster, pgcluster.Cluster],
) -> None:
    primary, standby = pair
    if not standby.running():
        standby.start()
    hosts = f"127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
    url = f"postgresql://postgres@{hosts}/sessions?target_session_attrs=read-write"

    async def failover() -> None:
        await asyncio.to_thread(primary.stop, "fast")
        await asyncio.to_thread(standby.promote)

    async with SQLDriver(url, connect_timeout=2) as driver:
        report = await Load(driver).fault("failover (promote)", failover, verify_url=url)
        print(report.line())
        assert report.foreign == [], report.foreign
        assert report.lost == 0
        assert report.acknowledged > 50
        assert report.outage < 15
        # The same driver writes to the new primary.
        await driver.set_item("after", 1)
    assert standby.psql("SELECT pg_is_in_recovery()") == "f"
