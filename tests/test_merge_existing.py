"""The driver contract of `merge_existing` (`SupportsMergeExisting`), on every backend.

`merge_item` for an item that must already exist: it never re-creates an item that is
absent, expired or removed meanwhile, and says whether there was one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sqlsession import SupportsMergeExisting, ValueNotSerializableError
from tests.conftest import FakeClock


async def test_the_built_in_drivers_have_it(driver: Any) -> None:
    assert isinstance(driver, SupportsMergeExisting)


async def test_a_live_item_is_merged_and_returned(driver: Any) -> None:
    await driver.set_item("k", {"a": 1, "b": 2})
    merged = await driver.merge_existing("k", set={"c": [3]}, delete=["a", "absent"])
    assert merged == {"b": 2, "c": [3]}
    assert await driver.get_item("k") == {"b": 2, "c": [3]}


async def test_an_absent_item_is_not_created(driver: Any) -> None:
    assert await driver.merge_existing("k", set={"a": 1}) is None
    assert await driver.has_item("k") is False
    assert await driver.get_keys() == []


async def test_a_removed_item_stays_removed(driver: Any) -> None:
    await driver.set_item("k", {"a": 1})
    await driver.remove_item("k")
    assert await driver.merge_existing("k", set={"seen": 2}) is None
    assert await driver.has_item("k") is False


async def test_an_expired_item_is_neither_revived_nor_changed(
    driver: Any, clock: FakeClock
) -> None:
    await driver.set_item("k", {"a": 1}, ttl=10)
    clock.advance(10)
    assert await driver.merge_existing("k", set={"a": 2}, ttl=60) is None
    assert await driver.get_item("k") is None
    # Back before its expiry, the row is as it was: the merge wrote nothing.
    clock.advance(-5)
    assert await driver.get_item("k") == {"a": 1}


async def test_ttl_applies_to_the_merged_item(driver: Any, clock: FakeClock) -> None:
    await driver.set_item("k", {"a": 1})
    await driver.merge_existing("k", set={"b": 2}, ttl=5)
    clock.advance(4.999)
    assert await driver.get_item("k") == {"a": 1, "b": 2}
    clock.advance(0.001)
    assert await driver.get_item("k") is None


async def test_bad_input_is_refused_and_nothing_written(driver: Any) -> None:
    await driver.set_item("k", {"a": 1})
    with pytest.raises(ValueNotSerializableError):
        await driver.merge_existing("k", set={"a": {1, 2}})
    with pytest.raises(ValueNotSerializableError):
        await driver.merge_existing("k", delete="a")
    await driver.set_item("scalar", 1)
    with pytest.raises(ValueNotSerializableError, match="dict"):
        await driver.merge_existing("scalar", set={"a": 1})
    assert await driver.get_item("k") == {"a": 1}
    assert await driver.get_item("scalar") == 1


async def test_concurrent_merges_of_different_keys_all_persist(driver: Any) -> None:
    # One driver: its pool runs the merges on several connections at once.
    await driver.set_item("k", {})
    results = await asyncio.gather(
        *(driver.merge_existing("k", set={f"n{i}": i}) for i in range(8))
    )
    assert all(result is not None for result in results)
    assert await driver.get_item("k") == {f"n{i}": i for i in range(8)}


async def test_a_merge_racing_a_remove_never_leaves_the_item_behind(driver: Any) -> None:
    for round_ in range(10):
        key = f"k{round_}"
        await driver.set_item(key, {"a": 1})
        merged, _ = await asyncio.gather(
            driver.merge_existing(key, set={"seen": round_}), driver.remove_item(key)
        )
        # Whichever ran first, the removal wins: the item is gone either way.
        assert merged in (None, {"a": 1, "seen": round_})
        assert await driver.has_item(key) is False
