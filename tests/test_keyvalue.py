"""`sqlsession.keyvalue.SQLSessionKeyValue`: the semantics py-key-value documents for its
stores (its protocol's docstrings and its shared store tests), on every backend.

py-key-value's own ``BaseStoreTests`` are not in its wheel, so these are our own tests of
the same behaviours; expiry is tested by moving the clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from key_value.aio.protocols.key_value import (
    AsyncCullProtocol,
    AsyncDestroyCollectionProtocol,
    AsyncEnumerateKeysProtocol,
    AsyncKeyValue,
)

from sqlsession import ConfigError, InvalidKeyError, InvalidTTLError, ValueNotSerializableError
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.keyvalue import SQLSessionKeyValue

from .conftest import DriverFactory, FakeClock


@pytest.fixture
def store(driver: Any, clock: FakeClock) -> SQLSessionKeyValue:
    return SQLSessionKeyValue(driver, clock=clock)


async def test_it_is_a_py_key_value_store(store: SQLSessionKeyValue) -> None:
    for protocol in (
        AsyncKeyValue,
        AsyncCullProtocol,
        AsyncEnumerateKeysProtocol,
        AsyncDestroyCollectionProtocol,
    ):
        assert isinstance(store, protocol), protocol.__name__


async def test_get_put_delete(store: SQLSessionKeyValue) -> None:
    assert await store.get("test", collection="test") is None
    assert await store.ttl("test", collection="test") == (None, None)
    await store.put("test", {"test": "test"}, collection="test")
    assert await store.get("test", collection="test") == {"test": "test"}
    await store.put("test", {"test": "test_2"}, collection="test")
    assert await store.get("test", collection="test") == {"test": "test_2"}
    assert await store.delete("test", collection="test") is True
    assert await store.delete("test", collection="test") is False
    assert await store.get("test", collection="test") is None


async def test_values_round_trip(store: SQLSessionKeyValue) -> None:
    value = {"s": "é\u0000", "i": 2**70, "f": 1.5, "b": True, "n": None, "l": [1, {"a": []}]}
    await store.put("k", value)
    assert await store.get("k") == value
    large = {"blob": "x" * 1_000_000}
    await store.put("large", large)
    assert await store.get("large") == large


@pytest.mark.parametrize("value", [{"d": Decimal(1)}, {"s": {1, 2}}, {1: "int key"}, ["a"]])
async def test_a_value_that_is_not_json_is_refused(store: SQLSessionKeyValue, value: Any) -> None:
    with pytest.raises(ValueNotSerializableError):
        await store.put("k", value)
    assert await store.get("k") is None


async def test_collections_are_separate(store: SQLSessionKeyValue, driver: Any) -> None:
    await store.put("k", {"v": 1}, collection="a")
    await store.put("k", {"v": 2}, collection="b")
    await store.put("k", {"v": 3})
    assert await store.get("k", collection="a") == {"v": 1}
    assert await store.get("k", collection="b") == {"v": 2}
    assert await store.get("k") == {"v": 3}
    assert await driver.get_item("keyvalue:a:k") == {"v": 1}  # stored as it is, no envelope
    assert await store.keys("a") == ["k"]
    assert await store.keys() == ["k"]
    assert await store.destroy_collection("a") is True
    assert await store.get("k", collection="a") is None
    assert await store.get("k", collection="b") == {"v": 2}


async def test_special_characters_in_names(store: SQLSessionKeyValue) -> None:
    await store.put("test_key!@#$%^&*()", {"t": 1}, collection="test_collection!@#$%^&*()")
    assert await store.get("test_key!@#$%^&*()", collection="test_collection!@#$%^&*()") == {"t": 1}
    await store.put("a:b", {"t": 2}, collection="c")  # a key may hold the separator
    assert await store.keys("c") == ["a:b"]


async def test_bad_names_are_refused(store: SQLSessionKeyValue) -> None:
    for collection in ("", "a:b"):
        with pytest.raises(InvalidKeyError):
            await store.put("k", {}, collection=collection)
    with pytest.raises(InvalidKeyError):
        await store.put("k" * 300, {})  # past the 255 characters of a stored key
    with pytest.raises(InvalidKeyError):
        SQLSessionKeyValue(MemoryDriver(), namespace="a:b")


async def test_ttl_is_the_remaining_lifetime(store: SQLSessionKeyValue, clock: FakeClock) -> None:
    await store.put("k", {"t": 1}, ttl=100)
    assert await store.ttl("k") == ({"t": 1}, 100.0)
    clock.advance(30.5)
    assert await store.ttl("k") == ({"t": 1}, 69.5)
    await store.put("forever", {"t": 2})
    assert await store.ttl("forever") == ({"t": 2}, None)


async def test_ttl_follows_a_touch_by_another_client(
    store: SQLSessionKeyValue, driver: Any, clock: FakeClock
) -> None:
    await store.put("k", {"t": 1}, ttl=100)
    assert await driver.touch("keyvalue:default_collection:k", ttl=7)
    assert await store.ttl("k") == ({"t": 1}, 7.0)
    await driver.merge_item("keyvalue:default_collection:k", {"u": 2}, ttl=9)
    assert await store.ttl("k") == ({"t": 1, "u": 2}, 9.0)


async def test_items_expire(store: SQLSessionKeyValue, clock: FakeClock) -> None:
    await store.put("k", {"t": 1}, ttl=2)
    assert await store.get("k") is not None
    clock.advance(2)
    assert await store.get("k") is None
    assert await store.ttl("k") == (None, None)
    assert await store.delete("k") is False
    assert await store.keys() == []


@pytest.mark.parametrize("ttl", [-100, 0, True, "10"])
async def test_a_bad_ttl_is_refused(store: SQLSessionKeyValue, ttl: Any) -> None:
    with pytest.raises(InvalidTTLError):
        await store.put("k", {"t": 1}, ttl=ttl)
    assert await store.get("k") is None


async def test_many(store: SQLSessionKeyValue, clock: FakeClock) -> None:
    keys = [f"test_{i}" for i in range(10)]
    values = [{"test": f"test_{i}"} for i in range(10)]
    await store.put_many(keys, tuple(values), collection="c", ttl=50)
    assert await store.get_many([*keys, "missing"], collection="c") == [*values, None]
    clock.advance(20)
    assert await store.ttl_many(["test_0", "missing", "test_0"], collection="c") == [
        ({"test": "test_0"}, 30.0),
        (None, None),
        ({"test": "test_0"}, 30.0),
    ]
    assert await store.delete_many(["test_0", "test_1", "missing"], collection="c") == 2
    assert await store.delete_many(["test_0", "test_1"], collection="c") == 0
    assert await store.get_many(["test_0", "test_2"], collection="c") == [
        None,
        {"test": "test_2"},
    ]
    assert await store.get_many([], collection="c") == []


async def test_put_many_is_all_or_nothing(store: SQLSessionKeyValue) -> None:
    with pytest.raises(InvalidKeyError):
        await store.put_many(["a", "b"], [{"v": 1}])
    with pytest.raises(ValueNotSerializableError):
        await store.put_many(["a", "b"], [{"v": 1}, {"v": {1, 2}}])
    assert await store.get_many(["a", "b"]) == [None, None]


async def test_put_if_absent(store: SQLSessionKeyValue, clock: FakeClock) -> None:
    assert await store.put_if_absent("k", {"v": 1}, ttl=5) is True
    assert await store.put_if_absent("k", {"v": 2}) is False
    assert await store.get("k") == {"v": 1}
    clock.advance(5)
    assert await store.put_if_absent("k", {"v": 3}) is True
    assert await store.ttl("k") == ({"v": 3}, None)


async def test_concurrent_deletes_report_once(
    make_driver: DriverFactory, backend: str, clock: FakeClock
) -> None:
    shared = await make_driver()
    stores = [SQLSessionKeyValue(shared, clock=clock)] * 2
    if backend != "memory":
        stores += [SQLSessionKeyValue(await make_driver(), clock=clock) for _ in range(2)]
    await stores[0].put("k", {"v": 1})
    results = await asyncio.gather(*(s.delete("k") for s in stores for _ in range(2)))
    assert results.count(True) == 1


async def test_concurrent_operations(store: SQLSessionKeyValue) -> None:
    async def worker(worker_id: int) -> None:
        for i in range(5):
            key = f"test_{worker_id}_{i}"
            assert await store.get(key) is None
            await store.put(key, {"test": f"test_{i}"})
            assert await store.get(key) == {"test": f"test_{i}"}
            assert await store.delete(key)
            assert await store.get(key) is None

    await asyncio.gather(*(worker(n) for n in range(3)))


async def test_cull_stays_in_the_store(
    store: SQLSessionKeyValue, driver: Any, clock: FakeClock
) -> None:
    await store.put("a", {}, ttl=1, collection="x")
    await store.put("b", {}, ttl=1, collection="y")
    await store.put("c", {}, ttl=100)
    await driver.set_item("session", {}, ttl=1)
    clock.advance(1)
    await store.cull()
    assert await driver.cleanup() == 1  # only the row outside the store was left
    assert await store.keys() == ["c"]


async def test_a_value_of_another_kind_is_an_error(store: SQLSessionKeyValue, driver: Any) -> None:
    await driver.set_item("keyvalue:default_collection:k", [1, 2])
    with pytest.raises(ValueNotSerializableError, match="list"):
        await store.get("k")


async def test_a_driver_without_the_operations_is_refused() -> None:
    class Minimal:
        async def get_item(self, key: str) -> Any: ...
        async def set_item(self, key: str, value: Any) -> None: ...
        async def remove_item(self, key: str) -> None: ...

    with pytest.raises(ConfigError, match="delete_item"):
        SQLSessionKeyValue(Minimal())
