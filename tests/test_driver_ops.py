"""The store operations of issue 11, on every backend: entries with their expiry,
get-and-renew, delete that reports, bulk reads/writes/deletes, put-if-absent, and
cleanup/clear limited to a key prefix.

One class, written against the shared ``driver``/``make_driver``/``clock`` fixtures, so it
can move into the importable contract suite as it is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sqlsession import (
    Entry,
    InvalidKeyError,
    InvalidTTLError,
    SupportsAddItem,
    SupportsDeleteItem,
    SupportsEntries,
    SupportsMany,
    SupportsPrefixCleanup,
    ValueNotSerializableError,
)
from sqlsession.drivers.sql import SQLDriver

from .conftest import DriverFactory, FakeClock, admin_mysql, admin_sql


async def _clients(make_driver: DriverFactory, backend: str) -> list[Any]:
    """Four drivers on one store: separate pools on a database, one object in memory."""
    if backend == "memory":
        return [await make_driver()] * 4
    return [await make_driver() for _ in range(4)]


class TestDriverOps:
    async def test_the_built_in_drivers_have_every_capability(self, driver: Any) -> None:
        for protocol in (
            SupportsEntries,
            SupportsDeleteItem,
            SupportsMany,
            SupportsAddItem,
            SupportsPrefixCleanup,
        ):
            assert isinstance(driver, protocol), protocol.__name__

    # -- get_entry: the value with its expiry ---------------------------------------

    async def test_get_entry_returns_the_value_and_its_expiry(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", {"a": 1}, ttl=30)
        await driver.set_item("forever", [1, 2], ttl=None)
        await driver.set_item("none", None, ttl=10.5)
        assert await driver.get_entry("k") == Entry({"a": 1}, clock.now + 30)
        assert await driver.get_entry("forever") == Entry([1, 2], None)
        assert await driver.get_entry("none") == Entry(None, clock.now + 10.5)
        assert await driver.get_entry("absent") is None

    async def test_get_entry_uses_the_default_ttl(
        self, make_driver: DriverFactory, clock: FakeClock
    ) -> None:
        driver = await make_driver(ttl=60)
        await driver.set_item("k", 1)
        entry = await driver.get_entry("k")
        assert entry is not None
        assert entry.expires_at == clock.now + 60

    async def test_get_entry_of_an_expired_item_is_none(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", 1, ttl=5)
        clock.advance(4.999)
        assert await driver.get_entry("k") == Entry(1, clock.now + 0.001)
        clock.advance(0.001)
        assert await driver.get_entry("k") is None

    async def test_get_entry_is_exact_after_touch_and_merge(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", {"a": 1}, ttl=30)
        clock.advance(10)
        assert await driver.touch("k", ttl=100)
        assert await driver.get_entry("k") == Entry({"a": 1}, clock.now + 100)
        clock.advance(1.25)
        await driver.merge_item("k", {"b": 2}, ttl=7)
        assert await driver.get_entry("k") == Entry({"a": 1, "b": 2}, clock.now + 7)
        await driver.touch("k", ttl=None)
        assert await driver.get_entry("k") == Entry({"a": 1, "b": 2}, None)

    async def test_get_entry_rejects_a_bad_key(self, driver: Any) -> None:
        with pytest.raises(InvalidKeyError):
            await driver.get_entry("")

    # -- get_entry(renew=): get-and-renew --------------------------------------------

    async def test_renew_extends_an_item_that_has_an_expiry(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", "v", ttl=10)
        clock.advance(8)
        assert await driver.get_entry("k", renew=60) == Entry("v", clock.now + 60)
        clock.advance(59)
        assert await driver.get_entry("k") == Entry("v", clock.now + 1)
        assert await driver.get_item("k") == "v"

    async def test_renew_leaves_an_item_without_expiry_without_one(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", "v", ttl=None)
        assert await driver.get_entry("k", renew=60) == Entry("v", None)
        assert await driver.get_entry("k") == Entry("v", None)

    async def test_renew_does_not_revive_an_expired_item(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", "v", ttl=10)
        clock.advance(10)
        assert await driver.get_entry("k", renew=60) is None
        assert await driver.get_entry("absent", renew=60) is None
        assert not await driver.has_item("k")

    async def test_renew_rejects_a_bad_ttl_and_changes_nothing(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", "v", ttl=10)
        for bad in (0, -1, float("nan"), "10"):
            with pytest.raises(InvalidTTLError):
                await driver.get_entry("k", renew=bad)
        assert await driver.get_entry("k") == Entry("v", clock.now + 10)

    # -- delete_item: a delete that reports -------------------------------------------

    async def test_delete_item_reports_whether_it_deleted(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", None)
        assert await driver.delete_item("k") is True
        assert await driver.delete_item("k") is False
        assert not await driver.has_item("k")
        await driver.set_item("short", 1, ttl=1)
        clock.advance(1)
        assert await driver.delete_item("short") is False  # expired counts as absent
        await driver.set_item("short", 2)  # and the key is free to use
        assert await driver.get_item("short") == 2

    async def test_exactly_one_of_concurrent_deletes_is_told_it_deleted(
        self, make_driver: DriverFactory, backend: str
    ) -> None:
        drivers = await _clients(make_driver, backend)
        for round_ in range(5):
            await drivers[0].set_item(f"k{round_}", {"round": round_})
            results = await asyncio.gather(
                *(d.delete_item(f"k{round_}") for d in drivers for _ in range(2))
            )
            assert results.count(True) == 1, results
            assert await drivers[0].get_item(f"k{round_}") is None

    # -- get_many / get_entries / set_many / remove_many ------------------------------

    async def test_get_many_returns_only_live_items(self, driver: Any, clock: FakeClock) -> None:
        await driver.set_item("a", 1)
        await driver.set_item("b", None, ttl=100)
        await driver.set_item("c", 3, ttl=1)
        clock.advance(1)
        assert await driver.get_many(["a", "b", "c", "d", "a"]) == {"a": 1, "b": None}
        assert await driver.get_many([]) == {}
        assert await driver.get_entries(("a", "b", "c", "d")) == {
            "a": Entry(1, None),
            "b": Entry(None, clock.now + 99),
        }
        assert await driver.get_entries([]) == {}

    async def test_bulk_reads_refuse_bad_keys(self, driver: Any) -> None:
        with pytest.raises(InvalidKeyError):
            await driver.get_many("ab")  # a str is not a list of keys
        with pytest.raises(InvalidKeyError):
            await driver.get_many(["a", ""])
        with pytest.raises(InvalidKeyError):
            await driver.get_entries([f"k{i}" for i in range(5001)])

    async def test_set_many_writes_every_item_with_one_ttl(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("b", "old", ttl=None)
        await driver.set_many({"a": {"x": [1]}, "b": "new", "c": None}, ttl=20)
        assert await driver.get_entries(["a", "b", "c"]) == {
            "a": Entry({"x": [1]}, clock.now + 20),
            "b": Entry("new", clock.now + 20),
            "c": Entry(None, clock.now + 20),
        }
        await driver.set_many({"a": 1, "b": 2}, ttl=None)
        assert await driver.get_entries(["a", "b"]) == {"a": Entry(1, None), "b": Entry(2, None)}
        await driver.set_many({})

    async def test_set_many_is_all_or_nothing_on_bad_input(self, driver: Any) -> None:
        await driver.set_item("a", "kept")
        with pytest.raises(ValueNotSerializableError):
            await driver.set_many({"a": "changed", "b": {1, 2}})
        with pytest.raises(InvalidKeyError):
            await driver.set_many({"a": "changed", "": 1})
        with pytest.raises(InvalidTTLError):
            await driver.set_many({"a": "changed"}, ttl=0)
        with pytest.raises(ValueNotSerializableError):
            await driver.set_many([("a", "changed")])
        assert await driver.get_many(["a", "b"]) == {"a": "kept"}

    async def test_set_many_of_many_items(self, make_driver: DriverFactory, backend: str) -> None:
        driver = await make_driver(**({"max": 5000} if backend == "memory" else {}))
        items = {f"key-{i:04}": {"i": i, "text": "é" * 50} for i in range(2000)}
        await driver.set_many(items, ttl=None)
        assert await driver.get_many(list(items)) == items

    async def test_remove_many_counts_the_live_items_it_deleted(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_many({"a": 1, "b": 2, "c": 3}, ttl=None)
        await driver.set_item("gone", 4, ttl=1)
        clock.advance(1)
        assert await driver.remove_many(["a", "c", "gone", "absent"]) == 2
        assert await driver.get_many(["a", "b", "c", "gone"]) == {"b": 2}
        assert await driver.remove_many([]) == 0

    # -- add_item: put-if-absent ------------------------------------------------------

    async def test_add_item_writes_only_when_absent(self, driver: Any, clock: FakeClock) -> None:
        assert await driver.add_item("k", {"first": True}, ttl=30) is True
        assert await driver.add_item("k", {"second": True}, ttl=90) is False
        assert await driver.get_entry("k") == Entry({"first": True}, clock.now + 30)
        await driver.set_item("none", None)
        assert await driver.add_item("none", 1) is False  # a stored None is present
        assert await driver.get_entry("none") == Entry(None, None)

    async def test_add_item_replaces_an_expired_item(self, driver: Any, clock: FakeClock) -> None:
        await driver.set_item("k", "old", ttl=5)
        clock.advance(5)
        assert await driver.add_item("k", "new", ttl=None) is True
        assert await driver.get_entry("k") == Entry("new", None)

    async def test_add_item_refuses_bad_input_and_writes_nothing(self, driver: Any) -> None:
        with pytest.raises(ValueNotSerializableError):
            await driver.add_item("k", b"bytes")
        with pytest.raises(InvalidTTLError):
            await driver.add_item("k", 1, ttl=-5)
        assert not await driver.has_item("k")

    async def test_exactly_one_of_concurrent_adds_writes(
        self, make_driver: DriverFactory, backend: str, clock: FakeClock
    ) -> None:
        drivers = await _clients(make_driver, backend)
        for round_, expired_first in enumerate((False, True, False, True)):
            key = f"k{round_}"
            if expired_first:
                await drivers[0].set_item(key, "expired", ttl=1)
                clock.advance(1)
            results = await asyncio.gather(
                *(
                    d.add_item(key, {"writer": n * 2 + i}, ttl=None)
                    for n, d in enumerate(drivers)
                    for i in range(2)
                )
            )
            assert results.count(True) == 1, results
            assert await drivers[0].get_item(key) == {"writer": results.index(True)}

    # -- cleanup(prefix=) and clear(prefix=) ------------------------------------------

    async def test_cleanup_with_a_prefix_deletes_only_its_expired_items(
        self, make_driver: DriverFactory, backend: str, clock: FakeClock
    ) -> None:
        options = {} if backend == "memory" else {"cleanup_batch_size": 2}
        driver = await make_driver(**options)
        keys = ["ns1:a", "ns1:b", "ns1:c", "ns1:d", "ns1:e", "ns10:x", "ns2:a", "ns%:a", "ns_:a"]
        await driver.set_many(dict.fromkeys(keys, 1), ttl=5)
        await driver.set_item("ns1:live", 2, ttl=50)
        await driver.set_item("ns1:forever", 3, ttl=None)
        clock.advance(5)
        assert await driver.cleanup(prefix="ns1:") == 5  # several batches
        assert await driver.cleanup(prefix="ns1:") == 0
        assert await driver.cleanup(prefix="ns%") == 1  # % and _ match themselves
        assert await driver.cleanup(prefix="ns_") == 1
        assert await driver.get_keys("ns1") == ["ns1:forever", "ns1:live"]
        assert await driver.cleanup() == 2  # ns10:x and ns2:a were left
        assert await driver.get_keys() == ["ns1:forever", "ns1:live"]

    async def test_cleanup_with_a_prefix_of_the_highest_code_point(
        self, driver: Any, clock: FakeClock
    ) -> None:
        top = "\U0010ffff"
        await driver.set_many({top: 1, top + "a": 2, "a": 3}, ttl=1)
        clock.advance(1)
        assert await driver.cleanup(prefix=top) == 2
        assert await driver.cleanup() == 1

    async def test_cleanup_refuses_a_bad_prefix(self, driver: Any) -> None:
        with pytest.raises(InvalidKeyError):
            await driver.cleanup(prefix="a\x00")

    async def test_clear_with_a_prefix_matches_it_literally(self, driver: Any) -> None:
        keys = ["a%b", "axb", "a_b", "ayb", "b"]
        await driver.set_many(dict.fromkeys(keys, 0), ttl=None)
        await driver.clear("a%")
        assert await driver.get_keys() == ["a_b", "axb", "ayb", "b"]
        await driver.clear("a_")
        assert await driver.get_keys() == ["axb", "ayb", "b"]
        await driver.clear("a")
        assert await driver.get_keys() == ["b"]


# -- the new operations after the server dropped every pooled connection -----------------


async def _drop_pooled_connections(driver: SQLDriver, url: str) -> None:
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
