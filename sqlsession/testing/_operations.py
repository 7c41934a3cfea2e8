"""The store operations of the contract: entries with their expiry, get-and-renew, a delete
that reports, bulk reads, writes and deletes, put-if-absent, and cleanup and clear limited
to a key prefix. `DriverContract` includes these tests; each runs only on a driver with the
capabilities it names.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from ..driver import (
    Entry,
    SupportsAddItem,
    SupportsCleanup,
    SupportsClear,
    SupportsDeleteItem,
    SupportsEntries,
    SupportsExpiry,
    SupportsKeys,
    SupportsMany,
    SupportsMerge,
)
from ._clock import FakeClock
from ._fixtures import MakeDriver, exists, needs

__all__ = ["StoreOperationTests", "forever"]


def forever(driver: Any) -> dict[str, Any]:
    """``ttl=None`` for a driver with expiry; nothing for one without (it never gets ``ttl=``)."""
    return {"ttl": None} if isinstance(driver, SupportsExpiry) else {}


class StoreOperationTests:
    """The tests of the optional store operations (a part of `DriverContract`)."""

    drivers_share_storage: ClassVar[bool] = True
    """Whether two drivers from the factory see the same items (as on a database).

    The concurrency tests then run their callers on separate drivers; otherwise (an
    in-process store such as the memory driver) on one driver.
    """

    async def _clients(self, make_driver: MakeDriver) -> list[Any]:
        """Four callers of one store."""
        if not self.drivers_share_storage:
            return [await make_driver()] * 4
        return [await make_driver() for _ in range(4)]

    # -- get_entry: the value with its expiry ---------------------------------------------

    @needs(SupportsEntries, SupportsExpiry)
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

    @needs(SupportsEntries, SupportsExpiry)
    async def test_get_entry_uses_the_default_ttl(
        self, make_driver: MakeDriver, clock: FakeClock
    ) -> None:
        driver = await make_driver(ttl=60)
        await driver.set_item("k", 1)
        entry = await driver.get_entry("k")
        assert entry is not None
        assert entry.expires_at == clock.now + 60

    @needs(SupportsEntries, SupportsExpiry)
    async def test_get_entry_of_an_expired_item_is_none(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", 1, ttl=5)
        clock.advance(4.999)
        assert await driver.get_entry("k") == Entry(1, clock.now + 0.001)
        clock.advance(0.001)
        assert await driver.get_entry("k") is None

    @needs(SupportsEntries, SupportsExpiry, SupportsMerge)
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

    # -- get_entry(renew=): get-and-renew ---------------------------------------------------

    @needs(SupportsEntries, SupportsExpiry)
    async def test_renew_extends_an_item_that_has_an_expiry(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", "v", ttl=10)
        clock.advance(8)
        assert await driver.get_entry("k", renew=60) == Entry("v", clock.now + 60)
        clock.advance(59)
        assert await driver.get_entry("k") == Entry("v", clock.now + 1)
        assert await driver.get_item("k") == "v"

    @needs(SupportsEntries, SupportsExpiry)
    async def test_renew_leaves_an_item_without_expiry_without_one(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", "v", ttl=None)
        assert await driver.get_entry("k", renew=60) == Entry("v", None)
        assert await driver.get_entry("k") == Entry("v", None)

    @needs(SupportsEntries, SupportsExpiry)
    async def test_renew_does_not_revive_an_expired_item(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", "v", ttl=10)
        clock.advance(10)
        assert await driver.get_entry("k", renew=60) is None
        assert await driver.get_entry("absent", renew=60) is None
        assert not await exists(driver, "k")

    # -- delete_item: a delete that reports ---------------------------------------------------

    @needs(SupportsDeleteItem, SupportsExpiry)
    async def test_delete_item_reports_whether_it_deleted(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", None)
        assert await driver.delete_item("k") is True
        assert await driver.delete_item("k") is False
        assert not await exists(driver, "k")
        await driver.set_item("short", 1, ttl=1)
        clock.advance(1)
        assert await driver.delete_item("short") is False  # expired counts as absent
        await driver.set_item("short", 2)  # and the key is free to use
        assert await driver.get_item("short") == 2

    @needs(SupportsDeleteItem)
    async def test_exactly_one_of_concurrent_deletes_is_told_it_deleted(
        self, make_driver: MakeDriver
    ) -> None:
        drivers = await self._clients(make_driver)
        for round_ in range(5):
            await drivers[0].set_item(f"k{round_}", {"round": round_})
            results = await asyncio.gather(
                *(d.delete_item(f"k{round_}") for d in drivers for _ in range(2))
            )
            assert results.count(True) == 1, results
            assert await drivers[0].get_item(f"k{round_}") is None

    # -- get_many / get_entries / set_many / remove_many --------------------------------------

    @needs(SupportsMany, SupportsEntries, SupportsExpiry)
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

    @needs(SupportsMany, SupportsEntries, SupportsExpiry)
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

    @needs(SupportsMany)
    async def test_set_many_of_many_items(self, driver: Any) -> None:
        items = {f"key-{i:04}": {"i": i, "text": "é" * 50} for i in range(2000)}
        await driver.set_many(items, **forever(driver))
        assert await driver.get_many(list(items)) == items

    @needs(SupportsMany, SupportsExpiry)
    async def test_remove_many_counts_the_live_items_it_deleted(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_many({"a": 1, "b": 2, "c": 3}, ttl=None)
        await driver.set_item("gone", 4, ttl=1)
        clock.advance(1)
        assert await driver.remove_many(["a", "c", "gone", "absent"]) == 2
        assert await driver.get_many(["a", "b", "c", "gone"]) == {"b": 2}
        assert await driver.remove_many([]) == 0

    # -- add_item: put-if-absent --------------------------------------------------------------

    @needs(SupportsAddItem, SupportsEntries, SupportsExpiry)
    async def test_add_item_writes_only_when_absent(self, driver: Any, clock: FakeClock) -> None:
        assert await driver.add_item("k", {"first": True}, ttl=30) is True
        assert await driver.add_item("k", {"second": True}, ttl=90) is False
        assert await driver.get_entry("k") == Entry({"first": True}, clock.now + 30)
        await driver.set_item("none", None)
        assert await driver.add_item("none", 1) is False  # a stored None is present
        assert await driver.get_entry("none") == Entry(None, None)

    @needs(SupportsAddItem, SupportsEntries, SupportsExpiry)
    async def test_add_item_replaces_an_expired_item(self, driver: Any, clock: FakeClock) -> None:
        await driver.set_item("k", "old", ttl=5)
        clock.advance(5)
        assert await driver.add_item("k", "new", ttl=None) is True
        assert await driver.get_entry("k") == Entry("new", None)

    @needs(SupportsAddItem, SupportsExpiry)
    async def test_exactly_one_of_concurrent_adds_writes(
        self, make_driver: MakeDriver, clock: FakeClock
    ) -> None:
        drivers = await self._clients(make_driver)
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

    # -- cleanup(prefix=) and clear(prefix=) --------------------------------------------------
    # isinstance cannot tell cleanup(prefix=) from cleanup(): by the rule of
    # SupportsPrefixCleanup, a driver that has get_entry (SupportsEntries) has it.

    @needs(SupportsEntries, SupportsCleanup, SupportsMany, SupportsExpiry, SupportsKeys)
    async def test_cleanup_with_a_prefix_deletes_only_its_expired_items(
        self, driver: Any, clock: FakeClock
    ) -> None:
        keys = ["ns1:a", "ns1:b", "ns1:c", "ns1:d", "ns1:e", "ns10:x", "ns2:a", "ns%:a", "ns_:a"]
        await driver.set_many(dict.fromkeys(keys, 1), ttl=5)
        await driver.set_item("ns1:live", 2, ttl=50)
        await driver.set_item("ns1:forever", 3, ttl=None)
        clock.advance(5)
        assert await driver.cleanup(prefix="ns1:") == 5  # several batches on a small batch size
        assert await driver.cleanup(prefix="ns1:") == 0
        assert await driver.cleanup(prefix="ns%") == 1  # % and _ match themselves
        assert await driver.cleanup(prefix="ns_") == 1
        assert await driver.get_keys("ns1") == ["ns1:forever", "ns1:live"]
        assert await driver.cleanup() == 2  # ns10:x and ns2:a were left
        assert await driver.get_keys() == ["ns1:forever", "ns1:live"]

    @needs(SupportsEntries, SupportsCleanup, SupportsMany, SupportsExpiry)
    async def test_cleanup_with_a_prefix_of_the_highest_code_point(
        self, driver: Any, clock: FakeClock
    ) -> None:
        top = "\U0010ffff"
        await driver.set_many({top: 1, top + "a": 2, "a": 3}, ttl=1)
        clock.advance(1)
        assert await driver.cleanup(prefix=top) == 2
        assert await driver.cleanup() == 1

    @needs(SupportsClear, SupportsKeys, SupportsMany)
    async def test_clear_with_a_prefix_matches_it_literally(self, driver: Any) -> None:
        keys = ["a%b", "axb", "a_b", "ayb", "b"]
        await driver.set_many(dict.fromkeys(keys, 0), **forever(driver))
        await driver.clear("a%")
        assert await driver.get_keys() == ["a_b", "axb", "ayb", "b"]
        await driver.clear("a_")
        assert await driver.get_keys() == ["axb", "ayb", "b"]
        await driver.clear("a")
        assert await driver.get_keys() == ["b"]
