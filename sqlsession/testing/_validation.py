"""`InputValidationContract`: bad keys, values and lifetimes are refused, and nothing is written."""

from __future__ import annotations

import datetime
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ..driver import (
    Entry,
    SupportsAddItem,
    SupportsCleanup,
    SupportsEntries,
    SupportsExpiry,
    SupportsHasItem,
    SupportsMany,
    SupportsMerge,
    SupportsMergeExisting,
)
from ..errors import InvalidKeyError, InvalidTTLError, SessionError, ValueNotSerializableError
from ._clock import FakeClock
from ._fixtures import DriverFixtures, MakeDriver, exists, keys_if_listed, needs

__all__ = ["BAD_KEYS", "BAD_TTLS", "BAD_VALUES", "InputValidationContract"]


def _cyclic() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


BAD_KEYS: list[Any] = ["", "x" * 256, "a\x00b", "\ud800", 1, None, b"key", ("k",)]
"""Keys every operation refuses with `InvalidKeyError`."""

BAD_VALUES: list[Any] = [
    datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    {"when": datetime.date(2026, 1, 1)},
    {1, 2},
    b"bytes",
    math.nan,
    [math.inf],
    {"x": -math.inf},
    _cyclic(),
    {1: "int key"},
    {"nested": {None: 1}},
    "\udc80 lone surrogate",
    {"\ud800": "surrogate key"},
    object(),
    10**5000,
]
"""Values that would not come back equal as JSON: refused with `ValueNotSerializableError`."""

BAD_TTLS: list[Any] = [
    0,
    -1,
    0.0001,
    1e300,
    10**12,
    math.nan,
    math.inf,
    -math.inf,
    "10",
    True,
    [10],
]
"""Lifetimes refused with `InvalidTTLError`: not 0.001 s to 100 years, or not a number."""


def has_expiry(driver: Any) -> bool:
    """Whether `driver` takes ``ttl=`` (`SupportsExpiry`); a bool, so `driver` stays Any."""
    return isinstance(driver, SupportsExpiry)


@pytest.mark.asyncio
class InputValidationContract(DriverFixtures):
    """sqlsession's rules for bad input, as the built-in drivers keep them.

    Keys are non-empty str of at most 255 characters without NUL or lone surrogates;
    values are exactly JSON (see `sqlsession.errors.ValueNotSerializableError`); a ttl
    is 0.001 s to 100 years or None. Anything else raises the error of sqlsession's tree
    that says so, before anything is written. Subclass it beside `DriverContract` (one
    ``driver_factory`` fixture serves both) when your driver promises the same.
    """

    @pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
    async def test_bad_keys_are_refused(self, driver: Any, key: Any) -> None:
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: driver.set_item(key, 1),
            lambda: driver.get_item(key),
            lambda: driver.remove_item(key),
        ]
        if isinstance(driver, SupportsHasItem):
            calls.append(lambda: driver.has_item(key))
        if isinstance(driver, SupportsExpiry):
            calls.append(lambda: driver.touch(key))
        if isinstance(driver, SupportsMerge):
            calls.append(lambda: driver.merge_item(key, set={"a": 1}))
        if isinstance(driver, SupportsMergeExisting):
            calls.append(lambda: driver.merge_existing(key, set={"a": 1}))
        for call in calls:
            with pytest.raises(InvalidKeyError) as info:
                await call()
            assert isinstance(info.value, ValueError)
            assert isinstance(info.value, SessionError)
        await keys_if_listed(driver, [])

    @pytest.mark.parametrize("value", BAD_VALUES, ids=lambda v: type(v).__name__)
    async def test_bad_values_are_refused(self, driver: Any, value: Any) -> None:
        await driver.set_item("k", "before")
        with pytest.raises(ValueNotSerializableError, match="'k'") as info:
            await driver.set_item("k", value)
        assert isinstance(info.value, TypeError)
        assert await driver.get_item("k") == "before"
        await driver.set_item("m", {"a": 1})
        if isinstance(driver, SupportsMerge):
            with pytest.raises(ValueNotSerializableError):
                await driver.merge_item("m", set={"b": value})
        if isinstance(driver, SupportsMergeExisting):
            with pytest.raises(ValueNotSerializableError):
                await driver.merge_existing("m", set={"b": value})
        assert await driver.get_item("m") == {"a": 1}
        await keys_if_listed(driver, ["k", "m"])

    async def test_bad_value_error_names_the_key_and_the_type(self, driver: Any) -> None:
        with pytest.raises(ValueNotSerializableError) as info:
            await driver.set_item("sess-1", {"cart": [1, {"at": datetime.time(12)}]})
        message = str(info.value)
        assert "'sess-1'" in message
        assert "datetime.time" in message
        assert "['cart'][1]['at']" in message

    @needs(SupportsExpiry)
    @pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
    async def test_bad_ttls_are_refused(self, driver: Any, ttl: Any) -> None:
        await driver.set_item("k", "before")
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: driver.set_item("k", "after", ttl=ttl),
            lambda: driver.set_item("new", "after", ttl=ttl),
            lambda: driver.touch("k", ttl),
        ]
        if isinstance(driver, SupportsMerge):
            calls.append(lambda: driver.merge_item("new", set={"a": 1}, ttl=ttl))
        if isinstance(driver, SupportsMergeExisting):
            calls.append(lambda: driver.merge_existing("new", set={"a": 1}, ttl=ttl))
        for call in calls:
            with pytest.raises(InvalidTTLError) as info:
                await call()
            assert isinstance(info.value, ValueError)
        await keys_if_listed(driver, ["k"])
        assert await driver.get_item("new") is None
        assert await driver.get_item("k") == "before"

    @needs(SupportsExpiry)
    @pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
    async def test_bad_default_ttl_is_refused(self, make_driver: MakeDriver, ttl: Any) -> None:
        with pytest.raises(InvalidTTLError):
            await make_driver(ttl=ttl)

    @needs(SupportsMerge)
    @pytest.mark.parametrize(
        ("changes", "delete"),
        [([("a", 1)], ()), ({"a": 1}, "a"), ({"a": 1}, [1]), ({1: "a"}, ())],
        ids=["set-not-mapping", "delete-a-str", "delete-non-str", "set-int-key"],
    )
    async def test_bad_merge_arguments(self, driver: Any, changes: Any, delete: Any) -> None:
        with pytest.raises(ValueNotSerializableError):
            await driver.merge_item("m", set=changes, delete=delete)
        await keys_if_listed(driver, [])
        assert await driver.get_item("m") is None

    @needs(SupportsMergeExisting)
    async def test_merge_existing_refuses_bad_input_and_writes_nothing(self, driver: Any) -> None:
        await driver.set_item("k", {"a": 1})
        with pytest.raises(ValueNotSerializableError):
            await driver.merge_existing("k", set={"a": {1, 2}})
        with pytest.raises(ValueNotSerializableError):
            await driver.merge_existing("k", delete="a")  # a str is not a list of names
        assert await driver.get_item("k") == {"a": 1}
        await keys_if_listed(driver, ["k"])

    # -- the store operations (see _operations.py) ----------------------------------------

    @needs(SupportsEntries)
    async def test_get_entry_rejects_a_bad_key(self, driver: Any) -> None:
        with pytest.raises(InvalidKeyError):
            await driver.get_entry("")

    @needs(SupportsEntries, SupportsExpiry)
    async def test_renew_rejects_a_bad_ttl_and_changes_nothing(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", "v", ttl=10)
        for bad in (0, -1, float("nan"), "10"):
            with pytest.raises(InvalidTTLError):
                await driver.get_entry("k", renew=bad)
        assert await driver.get_entry("k") == Entry("v", clock.now + 10)

    @needs(SupportsMany, SupportsEntries)
    async def test_bulk_reads_refuse_bad_keys(self, driver: Any) -> None:
        with pytest.raises(InvalidKeyError):
            await driver.get_many("ab")  # a str is not a list of keys
        with pytest.raises(InvalidKeyError):
            await driver.get_many(["a", ""])
        with pytest.raises(InvalidKeyError):
            await driver.get_entries([f"k{i}" for i in range(5001)])

    @needs(SupportsMany)
    async def test_set_many_is_all_or_nothing_on_bad_input(self, driver: Any) -> None:
        await driver.set_item("a", "kept")
        with pytest.raises(ValueNotSerializableError):
            await driver.set_many({"a": "changed", "b": {1, 2}})
        with pytest.raises(InvalidKeyError):
            await driver.set_many({"a": "changed", "": 1})
        if has_expiry(driver):
            with pytest.raises(InvalidTTLError):
                await driver.set_many({"a": "changed"}, ttl=0)
        with pytest.raises(ValueNotSerializableError):
            await driver.set_many([("a", "changed")])
        assert await driver.get_many(["a", "b"]) == {"a": "kept"}

    @needs(SupportsAddItem)
    async def test_add_item_refuses_bad_input_and_writes_nothing(self, driver: Any) -> None:
        with pytest.raises(ValueNotSerializableError):
            await driver.add_item("k", b"bytes")
        if has_expiry(driver):
            with pytest.raises(InvalidTTLError):
                await driver.add_item("k", 1, ttl=-5)
        assert not await exists(driver, "k")

    @needs(SupportsEntries, SupportsCleanup)
    async def test_cleanup_refuses_a_bad_prefix(self, driver: Any) -> None:
        with pytest.raises(InvalidKeyError):
            await driver.cleanup(prefix="a\x00")
