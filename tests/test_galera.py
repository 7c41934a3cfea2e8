"""sqlsession on a real 3-node MariaDB Galera cluster (multi-primary), started for this module.

The cluster (``tests/galera.py``) listens on 127.0.0.1:3311-3313. The driver contract
runs against it through a multi-host URL; the other tests aim drivers at different
nodes, where a single-server design breaks: ``GET_LOCK`` and ``SELECT ... FOR UPDATE``
hold on one node only, and a write committed on one node is rolled back on another
(error 1213, at any statement or at COMMIT) when it touched the same row.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from sqlsession import ConflictError, SessionError, StorageError
from sqlsession.drivers.sql import SQLDriver
from sqlsession.drivers.sql.dialects.mysql import _claimed
from sqlsession.testing import DriverFactory

from .conftest import FakeClock, admin_mysql, migrate
from .galera import GaleraCluster
from .test_contract import BuiltInContract, sql_factory

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def galera() -> Iterator[GaleraCluster]:
    """Three synced nodes with a migrated ``test`` database; all stopped at the end."""
    cluster = GaleraCluster()
    cluster.start()
    try:
        cluster.execute(1, "CREATE DATABASE test CHARACTER SET utf8mb4")
        migrate(cluster.url(2))  # migrations run once, on any node
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def galera_url(galera: GaleraCluster) -> str:
    """The cluster as one multi-host URL, its table and lock table empty."""
    admin_mysql(galera.url(1), "DELETE FROM sqlsession", "DELETE FROM sqlsession_lock")
    return galera.multi_host_url()


class TestGaleraDriver(BuiltInContract):
    """The driver contract on the cluster, through a multi-host URL."""

    @pytest.fixture
    def driver_factory(self, galera_url: str) -> DriverFactory:
        return sql_factory(galera_url)


@pytest.fixture
def nodes(galera_url: str, galera: GaleraCluster) -> list[str]:
    """One URL per node, on the emptied table."""
    return [galera.url(n) for n in (1, 2, 3)]


@pytest.fixture
async def on_node(nodes: list[str], clock: FakeClock) -> AsyncIterator[Any]:
    """Build a driver on node 1, 2 or 3, on the test's clock; disposed at the end."""
    made: list[SQLDriver] = []

    def make(node: int, **options: Any) -> SQLDriver:
        options.setdefault("clock", clock)
        driver = SQLDriver(nodes[node - 1], **options)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        await driver.dispose()


class RetryCount(logging.Handler):
    """Counts the driver's conflict retries (its DEBUG records)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "running it again" in record.getMessage():
            self.count += 1


@pytest.fixture
def retries() -> Iterator[RetryCount]:
    handler = RetryCount()
    logger = logging.getLogger("sqlsession")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


# -- 2. correct under multi-primary ------------------------------------------------------


def overwrite_on(galera: GaleraCluster, node: int, key: str, value: str) -> None:
    """Commit a new value of `key` on another node, from a client of its own."""
    galera.execute(node, f"UPDATE test.sqlsession SET value = '{value}' WHERE `key` = '{key}'")


async def test_a_merge_that_fails_certification_runs_again_from_the_start(
    on_node: Any, galera: GaleraCluster, retries: RetryCount
) -> None:
    # Node 2 commits a change to the row while node 1's merge holds it: node 1's
    # transaction is rolled back (1213). Running the whole merge again reads node 2's
    # value; retrying only the failed statement, or not at all, would lose one side.
    driver = on_node(1)
    await driver.set_item("k", {"start": 0}, ttl=None)
    interfered = 0

    def interfere(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal interfered
        if statement.lstrip().startswith("UPDATE") and interfered < 2:
            interfered += 1
            overwrite_on(galera, 2, "k", f'{{"other": {interfered}}}')

    event.listen(driver.engine.sync_engine, "before_cursor_execute", interfere)
    merged = await driver.merge_item("k", {"mine": 1})
    event.remove(driver.engine.sync_engine, "before_cursor_execute", interfere)
    assert interfered == 2
    assert retries.count >= 2
    assert merged == {"other": 2, "mine": 1}
    assert await on_node(3).get_item("k") == {"other": 2, "mine": 1}


async def test_a_merge_that_keeps_failing_certification_raises_conflict_error(
    on_node: Any, galera: GaleraCluster, retries: RetryCount
) -> None:
    driver = on_node(1)
    key = "sess-7f3a9c"
    await driver.set_item(key, {"start": 0}, ttl=None)
    tries = 0

    def interfere(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal tries
        if statement.lstrip().startswith("UPDATE"):
            tries += 1
            overwrite_on(galera, 2, key, f'{{"other": {tries}}}')

    event.listen(driver.engine.sync_engine, "before_cursor_execute", interfere)
    with pytest.raises(ConflictError, match="9 times in a row") as caught:
        await driver.merge_item(key, {"mine": 1})
    event.remove(driver.engine.sync_engine, "before_cursor_execute", interfere)
    assert isinstance(caught.value, StorageError)
    assert key not in str(caught.value)
    assert tries == 9
    assert retries.count == 8
    # Nothing of the merge was written; the other node's last write stands.
    assert await driver.get_item(key) == {"other": 9}


MERGER = """
import asyncio, random, sys
from sqlsession.drivers.sql import SQLDriver

async def main(url, name, count):
    async with SQLDriver(url) as driver:
        for i in range(count):
            await driver.merge_item("shared", {f"{name}{i}": i})
            await driver.merge_item(f"own-{name}-{i % 5}", {"n": i})
            await asyncio.sleep(random.uniform(0, 0.005))  # requests come spread out
    print("done", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_processes_on_two_nodes_merging_into_one_session_both_persist(
    on_node: Any, nodes: list[str]
) -> None:
    count = 60
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            MERGER,
            nodes[node - 1],
            name,
            str(count),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for node, name in ((1, "a"), (2, "b"))
    ]
    outcomes = await asyncio.wait_for(asyncio.gather(*(r.communicate() for r in runs)), 120)
    for run, (out, err) in zip(runs, outcomes, strict=True):
        assert (run.returncode, out.decode().strip()) == (0, "done"), err.decode()[-2000:]
    stored = await on_node(3, read_your_writes=True).get_item("shared")
    expected = {f"{name}{i}": i for name in "ab" for i in range(count)}
    assert stored == expected


async def test_same_key_writes_from_two_nodes_never_raise(
    on_node: Any, galera: GaleraCluster, retries: RetryCount
) -> None:
    # Without Galera's own retry of autocommit statements, 4 % of these conflict (issue
    # 14's measurement); the driver's retry must absorb them.
    for node in (1, 2):
        galera.execute(node, "SET GLOBAL wsrep_retry_autocommit = 0")
    try:
        first, second = on_node(1, pool_size=4), on_node(2, pool_size=4)

        async def write(driver: SQLDriver, tag: str) -> None:
            for i in range(150):
                await driver.set_item(f"hot{i % 3}", {"by": tag, "i": i}, ttl=60)
                await driver.touch(f"hot{(i + 1) % 3}", ttl=60)

        await asyncio.gather(*(write(d, t) for d, t in ((first, "a"), (second, "b")) * 2))
    finally:
        for node in (1, 2):
            galera.execute(node, "SET GLOBAL wsrep_retry_autocommit = 1")
    for i in range(3):
        assert (await first.get_item(f"hot{i}"))["by"] in ("a", "b")


async def test_one_statement_merges_from_two_nodes_into_one_session_all_persist(
    on_node: Any, galera: GaleraCluster, retries: RetryCount
) -> None:
    # merge_existing_text is one autocommit UPDATE: with Galera's own retry of those off,
    # the certification failures between the nodes reach the driver, which runs the
    # statement again; no member of either side may be lost.
    for node in (1, 2):
        galera.execute(node, "SET GLOBAL wsrep_retry_autocommit = 0")
    try:
        first, second = on_node(1, pool_size=4), on_node(2, pool_size=4)
        await first.set_item("shared", {"start": True}, ttl=None)

        async def merge(driver: SQLDriver, tag: str) -> None:
            for i in range(40):
                assert await driver.merge_existing_text("shared", {f"{tag}{i}": str(i)})

        tags = [(first, "a"), (second, "b"), (first, "c"), (second, "d")]
        await asyncio.gather(*(merge(driver, tag) for driver, tag in tags))
    finally:
        for node in (1, 2):
            galera.execute(node, "SET GLOBAL wsrep_retry_autocommit = 1")
    stored = await on_node(3, read_your_writes=True).get_item("shared")
    assert stored == {"start": True, **{f"{t}{i}": i for _, t in tags for i in range(40)}}


async def test_cleanup_never_deletes_a_session_refreshed_on_another_node(
    on_node: Any, clock: FakeClock
) -> None:
    cleaner = on_node(1, cleanup_batch_size=50)
    refresher = on_node(2, pool_size=8)
    keys = [f"s{i:04}" for i in range(1200)]
    for start in range(0, len(keys), 100):
        await asyncio.gather(
            *(cleaner.set_item(k, {"v": 1}, ttl=1) for k in keys[start : start + 100])
        )
    clock.advance(2)  # every row is expired
    refreshed = keys[::3]

    async def refresh() -> None:
        for start in range(0, len(refreshed), 8):
            batch = refreshed[start : start + 8]
            await asyncio.gather(*(refresher.merge_item(k, {"back": True}, ttl=600) for k in batch))

    deleted, _ = await asyncio.gather(cleaner.cleanup(), refresh())
    assert deleted > 0
    await cleaner.cleanup()
    reader = on_node(3, read_your_writes=True)
    assert await reader.stats() == {"live": len(refreshed), "expired": 0}
    assert await reader.get_keys("s") == refreshed
    assert await reader.get_item(refreshed[-1]) == {"back": True}


async def test_a_cleanup_lease_taken_on_one_node_holds_on_another(
    on_node: Any, clock: FakeClock
) -> None:
    # GET_LOCK would be granted on node 2 as well: both nodes would clean at once.
    first, second = on_node(1, ttl=1), on_node(2, ttl=1)
    await first.set_item("old", 1)
    clock.advance(2)
    async with first.engine.connect() as conn:
        now = int(clock.now * 1000)
        assert await _claimed(conn, first._dialect._cleanup_lock, now, now + 60_000)
    assert await second.cleanup() == 0
    assert second.last_cleanup_skipped is True
    assert await first.cleanup() == 1  # the holder itself may go on
    assert first.last_cleanup_skipped is False


async def test_two_cleanup_runners_on_two_nodes_take_turns(on_node: Any, clock: FakeClock) -> None:
    writer = on_node(1, pool_size=8)
    for start in range(0, 3000, 200):
        await asyncio.gather(
            *(writer.set_item(f"e{i}", i, ttl=1) for i in range(start, start + 200))
        )
    clock.advance(2)
    first, second = on_node(1, cleanup_batch_size=100), on_node(2, cleanup_batch_size=100)
    running = 0
    overlap = False

    def watch(driver: SQLDriver) -> None:
        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            nonlocal running, overlap
            if statement.lstrip().startswith("DELETE"):
                running += 1
                overlap = overlap or running > 1

        def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            nonlocal running
            if statement.lstrip().startswith("DELETE"):
                running -= 1

        event.listen(driver.engine.sync_engine, "before_cursor_execute", before)
        event.listen(driver.engine.sync_engine, "after_cursor_execute", after)

    watch(first)
    watch(second)
    counts = await asyncio.gather(first.cleanup(), second.cleanup())
    assert sorted(counts) == [0, 3000]
    assert first.last_cleanup_skipped != second.last_cleanup_skipped
    assert not overlap


DEAD_RUNNER = """
import asyncio, os, sys
from sqlsession.drivers.sql import SQLDriver
from sqlsession.drivers.sql.dialects.mysql import _claimed

async def main(url, now):
    driver = SQLDriver(url, pool_size=1)
    async with driver.engine.connect() as conn:
        held = await _claimed(conn, driver._dialect._cleanup_lock, now, now + 60_000)
        print("held" if held else "no-lock", flush=True)
        os._exit(9)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_a_dead_runners_cleanup_lease_expires(
    on_node: Any, nodes: list[str], clock: FakeClock
) -> None:
    driver = on_node(2, ttl=1)
    await driver.set_item("old", 1)
    clock.advance(2)
    runner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DEAD_RUNNER,
        nodes[0],
        str(int(clock.now * 1000)),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(runner.communicate(), 60)
    assert (out.decode().strip(), runner.returncode) == ("held", 9)
    assert await driver.cleanup() == 0
    assert driver.last_cleanup_skipped is True
    clock.advance(59)
    assert await driver.cleanup() == 0
    clock.advance(2)  # the dead runner's 60 s lease has passed
    assert await driver.cleanup() == 1
    assert driver.last_cleanup_skipped is False


def test_two_migrations_on_two_nodes_take_turns(galera: GaleraCluster) -> None:
    # Both create the table: without a lock that holds across nodes, one of them fails
    # ("table already exists") or records its revision twice.
    table = f"m_{uuid.uuid4().hex[:10]}"
    script = (
        "import sys; from sqlsession import _migrate; "
        "_migrate.upgrade(sys.argv[1], table=sys.argv[2])"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, galera.url(node), table],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (1, 3)
    ]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-2000:]
    assert galera.query(2, f"SELECT COUNT(*) FROM test.{table}_alembic_version") == "1"
    assert galera.query(2, f"SHOW TABLES FROM test LIKE '{table}'") == table
    # Back to base on another node: nothing of sqlsession's is left, lock table included.
    from sqlsession import _migrate

    _migrate.downgrade(galera.url(2), table=table, revision="base")
    assert galera.query(1, f"SHOW TABLES FROM test LIKE '{table}%'") is None


# -- the session layer ---------------------------------------------------------------------


def test_the_example_app_served_from_two_nodes_merges_one_visitors_requests(
    galera: GaleraCluster, nodes: list[str], tmp_path: Path
) -> None:
    # Two app processes, one per node, as behind a load balancer; every read waits for
    # the cluster (the app's own driver has no option set, so the nodes' default is).
    from .test_e2e import World, browser, example_server, replay, session_cookie, sign_in, state

    (tmp_path / "barriers").mkdir()
    (tmp_path / "clock-offset").write_text("0")
    for node in (1, 2):
        galera.execute(node, "SET GLOBAL wsrep_sync_wait = 1")
    try:
        with (
            example_server(World(nodes[0], tmp_path), "first") as first,
            example_server(World(nodes[1], tmp_path), "second") as second,
            browser(first) as client,
        ):
            sign_in(client, "ada")
            cookie = {"cookie": f"session={session_cookie(client)}"}
            assert replay(second, str(session_cookie(client)))["user"] == "ada"
            held = {**cookie, "x-e2e-barrier": "pair"}
            with ThreadPoolExecutor(2) as pool:
                counter = pool.submit(httpx.post, first + "/counter", headers=held, timeout=30)
                cart = pool.submit(
                    httpx.post, second + "/cart", data={"item": "apple"}, headers=held, timeout=30
                )
                assert counter.result().status_code == 303
                assert cart.result().status_code == 303
            assert replay(second, str(session_cookie(client))) == {
                "user": "ada",
                "count": 1,
                "cart": ["apple"],
            }
            assert state(client) == {"user": "ada", "count": 1, "cart": ["apple"]}
    finally:
        for node in (1, 2):
            galera.execute(node, "SET GLOBAL wsrep_sync_wait = 0")


# -- 3. read-your-writes across nodes ----------------------------------------------------


async def test_read_your_writes_sees_a_write_made_on_another_node(on_node: Any) -> None:
    writer, reader = on_node(1), on_node(3, read_your_writes=True)
    stale = 0
    for i in range(200):
        await writer.set_item("page", i, ttl=None)
        stale += await reader.get_item("page") != i
    assert stale == 0


# -- 4. node failure ----------------------------------------------------------------------


async def test_killing_a_node_under_load_loses_no_acknowledged_write(
    galera: GaleraCluster, galera_url: str
) -> None:
    # Runs last: it kills node 1 (the one the multi-host URL prefers), then lets it rejoin.
    acked: dict[str, int] = {}
    errors: list[BaseException] = []
    stamps: list[float] = []
    stop = asyncio.Event()

    async with SQLDriver(galera_url, pool_size=8) as driver:

        async def load(worker: int) -> None:
            i = 0
            while not stop.is_set():
                key = f"w{worker}-{i}"
                try:
                    await driver.set_item(key, i, ttl=None)
                    await driver.merge_item(f"m{worker}", {"last": i})
                except SessionError as exc:
                    errors.append(exc)
                    await asyncio.sleep(0.05)
                else:
                    acked[key] = i
                    stamps.append(time.monotonic())
                i += 1

        workers = [asyncio.ensure_future(load(w)) for w in range(4)]
        await asyncio.sleep(1.5)
        killed_at = time.monotonic()
        await asyncio.to_thread(galera.kill, 1)
        # Commits on the other nodes wait until they have voted node 1 out: Galera's
        # evs.suspect_timeout, 5 s by default.
        await asyncio.sleep(8)
        stop.set()
        await asyncio.gather(*workers)

        after = [t for t in stamps if t > killed_at]
        assert after, f"no write succeeded after the kill; errors: {errors[:3]}"
        outage = after[0] - killed_at
        assert outage < 10
        stored = {k: await driver.get_item(k) for k in acked}
        lost = [k for k, v in stored.items() if v != acked[k]]
        assert lost == []
        assert len(errors) <= 4  # at most the writes each worker had in flight
    # The node comes back and catches up with what it missed.
    galera.start_node(1)
    await asyncio.to_thread(galera.wait_ready, 1)
    await asyncio.to_thread(galera.wait_size, 3, 2)
    last = max(acked, key=lambda k: acked[k])
    assert galera.query(1, f"SELECT value FROM test.sqlsession WHERE `key` = '{last}'") == str(
        acked[last]
    )
