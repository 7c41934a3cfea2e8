"""`DriverContract`: what every sqlsession driver does, written once for any driver to run.

The tests of an optional capability (`SupportsExpiry`, `SupportsMerge`,
`SupportsMergeExisting`, ...) run only when the driver has it. Checks that merely use a
capability on the way (listing the keys to see that nothing else was written) are made
when the driver has it and left out otherwise.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..driver import (
    SessionDriver,
    SupportsCleanup,
    SupportsClear,
    SupportsExpiry,
    SupportsHasItem,
    SupportsJSONText,
    SupportsKeys,
    SupportsMerge,
    SupportsMergeExisting,
)
from ..errors import ValueNotSerializableError
from ._clock import FakeClock
from ._fixtures import DriverFixtures, MakeDriver, exists, keys_if_listed, needs
from ._operations import StoreOperationTests

__all__ = ["JSON_VALUES", "ROUND_TRIPS", "DriverContract"]

ROUND_TRIPS: list[Any] = [
    {"user": 42, "cart": [], "name": "Zoë", "ok": True, "pi": 3.14159},
    [1, "two", 3.0, None, False, {"nested": [[]]}],
    "plain string with \x00 NUL and \u2028 separators",
    "",
    0,
    -1,
    2**70,
    -(2**100),
    1e16,
    1.5e-300,
    -0.0,
    True,
    False,
    {"big": 2**64 + 1, "float": 1e16, "exp": 1e300, "tiny": 5e-324},
    {"": "empty key", "\x00": "NUL key", "emoji \U0001f600": "\U0001f600"},
]
"""JSON values that must come back equal and with the same Python types."""

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e16, 1e-7, 2.0**53 + 2, -0.0, 5e-324, 1.7976931348623157e308])
    | _text
)
JSON_VALUES = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5),
    max_leaves=25,
)
"""A hypothesis strategy for the values a driver must store exactly."""


@pytest.mark.asyncio
class DriverContract(StoreOperationTests, DriverFixtures):
    """The driver contract as tests: subclass it and provide a ``driver_factory`` fixture.

    Example::

        class TestMyDriver(DriverContract):
            @pytest.fixture
            def driver_factory(self, tmp_path):
                def make(clock, **options):
                    return MyDriver(tmp_path / "store", clock=clock, **options)

                return make

    The factory is called as ``factory(clock, **options)`` and returns a new driver (or
    an awaitable of one); drivers with ``dispose`` are disposed after each test. An
    expiry-capable driver must read the time only from `clock` (the tests move it) and
    take ``ttl=`` as its default lifetime. Set ``drivers_share_storage = False`` on the
    subclass when two drivers from the factory do not see each other's items (an
    in-process store): the concurrency tests then share one. The tests are coroutines run by
    pytest-asyncio. A capability's tests are skipped, with a reason, for a driver
    without it; `InputValidationContract` adds sqlsession's rules for bad input.
    """

    async def test_satisfies_protocol(self, driver: Any) -> None:
        assert isinstance(driver, SessionDriver)

    @pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: repr(v)[:30])
    async def test_round_trip_keeps_value_and_types(self, driver: Any, value: Any) -> None:
        await driver.set_item("k", value)
        got = await driver.get_item("k")
        assert got == value
        assert repr(got) == repr(value)  # same types all the way down: 1e16 stays a float

    async def test_tuples_are_stored_as_lists(self, driver: Any) -> None:
        await driver.set_item("k", {"pair": (1, (2, 3))})
        assert await driver.get_item("k") == {"pair": [1, [2, 3]]}

    async def test_values_of_a_megabyte(self, driver: Any) -> None:
        value = {"blob": "x" * 1_100_000, "list": list(range(20_000))}
        await driver.set_item("big", value)
        assert await driver.get_item("big") == value

    async def test_get_returns_a_copy(self, driver: Any) -> None:
        value = {"cart": [1]}
        await driver.set_item("k", value)
        value["cart"].append(2)
        got = await driver.get_item("k")
        got["cart"].append(3)
        assert await driver.get_item("k") == {"cart": [1]}

    async def test_absent_key(self, driver: Any) -> None:
        assert await driver.get_item("nope") is None
        if isinstance(driver, SupportsHasItem):
            assert await driver.has_item("nope") is False
        await driver.remove_item("nope")  # no error

    @needs(SupportsHasItem)
    async def test_none_is_stored_and_exists(self, driver: Any) -> None:
        await driver.set_item("k", None)
        assert await driver.has_item("k") is True
        assert await driver.get_item("k") is None
        await keys_if_listed(driver, ["k"])

    async def test_set_replaces_and_remove_deletes(self, driver: Any) -> None:
        await driver.set_item("k", 1)
        await driver.set_item("k", {"a": 2})
        assert await driver.get_item("k") == {"a": 2}
        await driver.remove_item("k")
        assert await driver.get_item("k") is None
        assert await exists(driver, "k") is False

    async def test_keys_of_every_allowed_shape(self, driver: Any) -> None:
        keys = ["a", "x" * 255, "sess:ü:\U0001f600", " spaced ", "%_\\"]
        for i, key in enumerate(keys):
            await driver.set_item(key, i)
        for i, key in enumerate(keys):
            assert await driver.get_item(key) == i
        await keys_if_listed(driver, sorted(keys))

    async def test_keys_are_compared_exactly_and_ordered_by_code_point(self, driver: Any) -> None:
        # Case, trailing spaces and Unicode normalisation all make different keys, on every
        # backend (a case-insensitive or PAD SPACE collation would merge some of these).
        keys = ["a", "A", "a ", "é", "e\u0301", "\U0001f600", "\uffff", "z", "Z"]
        for i, key in enumerate(keys):
            await driver.set_item(key, i)
        for i, key in enumerate(keys):
            assert await driver.get_item(key) == i
        if isinstance(driver, SupportsKeys):
            assert await driver.get_keys() == sorted(keys)  # Python orders str by code point
            assert await driver.get_keys("a") == ["a", "a "]

    @needs(SupportsKeys, SupportsClear)
    async def test_get_keys_and_clear_by_prefix(self, driver: Any) -> None:
        for key in ["user:1", "user:2", "user_3", "user%4", "userX", "cart:1", "usex"]:
            await driver.set_item(key, key)
        assert await driver.get_keys("user:") == ["user:1", "user:2"]
        # % and _ match only themselves, not as LIKE wildcards.
        assert await driver.get_keys("user_") == ["user_3"]
        assert await driver.get_keys("user%") == ["user%4"]
        assert await driver.get_keys("user") == ["user%4", "user:1", "user:2", "userX", "user_3"]
        await driver.clear("user:")
        assert await driver.get_keys() == ["cart:1", "user%4", "userX", "user_3", "usex"]
        await driver.clear()
        assert await driver.get_keys() == []

    @needs(SupportsKeys)
    async def test_prefix_at_the_top_of_unicode(self, driver: Any) -> None:
        top = "\U0010ffff"
        await driver.set_item("a" + top, 1)
        await driver.set_item("a" + top + top, 2)
        await driver.set_item("b", 3)
        assert await driver.get_keys("a" + top) == ["a" + top, "a" + top + top]
        assert await driver.get_keys(top) == []

    # -- expiry: the clock is moved, never slept on ---------------------------------------

    @needs(SupportsExpiry)
    async def test_default_ttl_expires_items(
        self, make_driver: MakeDriver, clock: FakeClock
    ) -> None:
        driver = await make_driver(ttl=10)
        await driver.set_item("k", "v")
        clock.advance(9.999)
        assert await driver.get_item("k") == "v"
        clock.advance(0.001)  # expired from the very moment of expiry
        assert await driver.get_item("k") is None
        assert await exists(driver, "k") is False
        await keys_if_listed(driver, [])

    @needs(SupportsExpiry)
    async def test_ttl_none_stores_forever(self, make_driver: MakeDriver, clock: FakeClock) -> None:
        driver = await make_driver(ttl=10)
        await driver.set_item("forever", 1, ttl=None)
        await driver.set_item("short", 2, ttl=0.5)
        await driver.set_item("long", 3, ttl=100)
        clock.advance(50)
        assert await driver.get_item("forever") == 1
        assert await driver.get_item("short") is None
        assert await driver.get_item("long") == 3
        clock.advance(10**9)
        await keys_if_listed(driver, ["forever"])
        assert await driver.get_item("long") is None

    @needs(SupportsExpiry)
    async def test_millisecond_precision(self, make_driver: MakeDriver, clock: FakeClock) -> None:
        driver = await make_driver()
        await driver.set_item("k", 1, ttl=0.25)
        clock.advance(0.249)
        assert await exists(driver, "k")
        clock.advance(0.001)
        assert not await exists(driver, "k")

    @needs(SupportsExpiry)
    async def test_overwrite_renews_expiry(self, make_driver: MakeDriver, clock: FakeClock) -> None:
        driver = await make_driver(ttl=10)
        await driver.set_item("k", 1)
        clock.advance(8)
        await driver.set_item("k", 2)
        clock.advance(8)
        assert await driver.get_item("k") == 2

    @needs(SupportsExpiry)
    async def test_touch(self, make_driver: MakeDriver, clock: FakeClock) -> None:
        driver = await make_driver(ttl=10)
        await driver.set_item("k", 1)
        clock.advance(8)
        assert await driver.touch("k") is True  # now + default ttl
        clock.advance(8)
        assert await driver.get_item("k") == 1
        assert await driver.touch("k", 100) is True
        clock.advance(99)
        assert await driver.get_item("k") == 1
        assert await driver.touch("k", None) is True
        clock.advance(10**6)
        assert await driver.get_item("k") == 1
        assert await driver.touch("absent") is False
        await keys_if_listed(driver, ["k"])

    @needs(SupportsExpiry)
    async def test_touch_does_not_revive_an_expired_item(
        self, make_driver: MakeDriver, clock: FakeClock
    ) -> None:
        driver = await make_driver(ttl=1)
        await driver.set_item("k", 1)
        clock.advance(1)
        assert await driver.touch("k", 100) is False
        assert await driver.get_item("k") is None

    @needs(SupportsExpiry, SupportsCleanup)
    async def test_expired_rows_are_kept_until_cleanup(
        self, make_driver: MakeDriver, clock: FakeClock
    ) -> None:
        driver = await make_driver(ttl=5)
        for i in range(7):
            await driver.set_item(f"old{i}", i)
        await driver.set_item("live", "x", ttl=None)
        clock.advance(5)
        await driver.set_item("fresh", "y")
        await keys_if_listed(driver, ["fresh", "live"])
        assert await driver.cleanup() == 7
        assert await driver.cleanup() == 0
        await keys_if_listed(driver, ["fresh", "live"])
        assert await driver.get_item("fresh") == "y"
        assert await driver.get_item("live") == "x"

    @needs(SupportsExpiry)
    async def test_an_expired_key_can_be_set_again(
        self, make_driver: MakeDriver, clock: FakeClock
    ) -> None:
        driver = await make_driver(ttl=5)
        await driver.set_item("k", 1)
        clock.advance(6)
        await driver.set_item("k", 2)
        assert await driver.get_item("k") == 2

    # -- merge_item ------------------------------------------------------------------------

    @needs(SupportsMerge, SupportsExpiry)
    async def test_merge_item(self, make_driver: MakeDriver, clock: FakeClock) -> None:
        driver = await make_driver(ttl=10)
        assert await driver.merge_item("m", set={"a": 1, "b": [1]}) == {"a": 1, "b": [1]}
        assert await driver.merge_item("m", set={"c": None}, delete=["a", "zz"]) == {
            "b": [1],
            "c": None,
        }
        assert await driver.get_item("m") == {"b": [1], "c": None}
        clock.advance(10)
        assert await driver.merge_item("m", set={"d": 4}, ttl=None) == {"d": 4}
        clock.advance(10**6)
        assert await driver.get_item("m") == {"d": 4}

    @needs(SupportsMerge)
    async def test_merge_refuses_a_value_that_is_not_a_dict(self, driver: Any) -> None:
        await driver.set_item("k", [1, 2])
        with pytest.raises(ValueNotSerializableError, match="'k'"):
            await driver.merge_item("k", set={"a": 1})
        assert await driver.get_item("k") == [1, 2]

    @needs(SupportsMerge)
    async def test_concurrent_merges_of_different_fields_all_win(self, driver: Any) -> None:
        await asyncio.gather(*(driver.merge_item("m", set={f"f{i}": i}) for i in range(40)))
        assert await driver.get_item("m") == {f"f{i}": i for i in range(40)}

    # -- merge_existing: merge_item for an item that must already exist ----------------------

    @needs(SupportsMergeExisting)
    async def test_merge_existing_merges_a_live_item(self, driver: Any) -> None:
        await driver.set_item("k", {"a": 1, "b": 2})
        merged = await driver.merge_existing("k", set={"c": [3]}, delete=["a", "absent"])
        assert merged == {"b": 2, "c": [3]}
        assert await driver.get_item("k") == {"b": 2, "c": [3]}

    @needs(SupportsMergeExisting)
    async def test_merge_existing_does_not_create_an_absent_item(self, driver: Any) -> None:
        assert await driver.merge_existing("k", set={"a": 1}) is None
        assert await exists(driver, "k") is False
        await keys_if_listed(driver, [])

    @needs(SupportsMergeExisting)
    async def test_merge_existing_leaves_a_removed_item_removed(self, driver: Any) -> None:
        await driver.set_item("k", {"a": 1})
        await driver.remove_item("k")
        assert await driver.merge_existing("k", set={"seen": 2}) is None
        assert await exists(driver, "k") is False

    @needs(SupportsMergeExisting, SupportsExpiry)
    async def test_merge_existing_neither_revives_nor_changes_an_expired_item(
        self, driver: Any, clock: FakeClock
    ) -> None:
        keeps_expired_rows = isinstance(driver, SupportsCleanup)  # a bool: driver stays Any
        await driver.set_item("k", {"a": 1}, ttl=10)
        clock.advance(10)
        assert await driver.merge_existing("k", set={"a": 2}, ttl=60) is None
        assert await driver.get_item("k") is None
        if keeps_expired_rows:
            # Expired rows are kept until cleanup: back before its expiry, the row is as
            # it was, so the merge wrote nothing.
            clock.advance(-5)
            assert await driver.get_item("k") == {"a": 1}

    @needs(SupportsMergeExisting, SupportsExpiry)
    async def test_merge_existing_applies_its_ttl_to_the_item(
        self, driver: Any, clock: FakeClock
    ) -> None:
        await driver.set_item("k", {"a": 1})
        await driver.merge_existing("k", set={"b": 2}, ttl=5)
        clock.advance(4.999)
        assert await driver.get_item("k") == {"a": 1, "b": 2}
        clock.advance(0.001)
        assert await driver.get_item("k") is None

    @needs(SupportsMergeExisting)
    async def test_merge_existing_refuses_a_value_that_is_not_a_dict(self, driver: Any) -> None:
        await driver.set_item("scalar", 1)
        with pytest.raises(ValueNotSerializableError, match="dict"):
            await driver.merge_existing("scalar", set={"a": 1})
        assert await driver.get_item("scalar") == 1

    # -- SupportsJSONText: values as text the caller encoded ---------------------------------

    @needs(SupportsJSONText)
    async def test_json_text_round_trips_through_the_item(self, driver: Any) -> None:
        await driver.set_text("k", '{"a":[1,"\u00e9"],"b":null}')
        assert json.loads(await driver.get_text("k")) == {"a": [1, "\u00e9"], "b": None}
        assert await driver.get_item("k") == {"a": [1, "\u00e9"], "b": None}
        assert await driver.get_text("absent") is None

    @needs(SupportsJSONText)
    async def test_merge_existing_text_merges_a_live_item_only(self, driver: Any) -> None:
        await driver.set_item("k", {"a": 1, "b": 2})
        assert await driver.merge_existing_text("k", set={"c": '{"v":[3]}'}, delete=["a"]) is True
        assert await driver.get_item("k") == {"b": 2, "c": {"v": [3]}}
        assert await driver.merge_existing_text("absent", set={"a": "1"}) is False
        assert await exists(driver, "absent") is False

    @needs(SupportsJSONText, SupportsExpiry)
    async def test_json_text_honours_ttl(self, driver: Any, clock: FakeClock) -> None:
        await driver.set_text("k", '{"a":1}', ttl=5)
        assert await driver.merge_existing_text("k", set={"b": "2"}, ttl=10) is True
        clock.advance(9.999)
        assert await driver.get_item("k") == {"a": 1, "b": 2}
        clock.advance(0.001)
        assert await driver.get_text("k") is None
        assert await driver.merge_existing_text("k", set={"b": "3"}) is False

    @needs(SupportsJSONText)
    async def test_json_text_refuses_what_is_not_text(self, driver: Any) -> None:
        with pytest.raises(ValueNotSerializableError, match="str"):
            await driver.set_text("k", {"a": 1})
        with pytest.raises(ValueNotSerializableError, match="str"):
            await driver.merge_existing_text("k", set={"a": 1})
        assert await exists(driver, "k") is False

    @needs(SupportsMergeExisting)
    async def test_concurrent_merge_existing_of_different_fields_all_win(self, driver: Any) -> None:
        # One driver: a driver with a pool runs the merges on several connections at once.
        await driver.set_item("k", {})
        results = await asyncio.gather(
            *(driver.merge_existing("k", set={f"n{i}": i}) for i in range(8))
        )
        assert all(result is not None for result in results)
        assert await driver.get_item("k") == {f"n{i}": i for i in range(8)}

    @needs(SupportsMergeExisting)
    async def test_merge_existing_racing_a_remove_never_leaves_the_item_behind(
        self, driver: Any
    ) -> None:
        for round_ in range(10):
            key = f"k{round_}"
            await driver.set_item(key, {"a": 1})
            merged, _ = await asyncio.gather(
                driver.merge_existing(key, set={"seen": round_}), driver.remove_item(key)
            )
            # Whichever ran first, the removal wins: the item is gone either way.
            assert merged in (None, {"a": 1, "seen": round_})
            assert await exists(driver, key) is False

    # -- concurrency -------------------------------------------------------------------------

    async def test_fifty_concurrent_writers_on_one_key(self, driver: Any) -> None:
        values = [{"writer": i, "pad": "x" * 500} for i in range(50)]
        await asyncio.gather(*(driver.set_item("hot", v) for v in values))
        assert await driver.get_item("hot") in values
        await keys_if_listed(driver, ["hot"])

    async def test_concurrent_mixed_operations(self, driver: Any) -> None:
        async def worker(n: int) -> None:
            for i in range(10):
                await driver.set_item(f"w{n}", i)
                assert await driver.get_item(f"w{n}") == i
            await driver.remove_item(f"w{n}")

        await asyncio.gather(*(worker(n) for n in range(20)))
        await keys_if_listed(driver, [])
        assert [await driver.get_item(f"w{n}") for n in range(20)] == [None] * 20

    # -- generated values --------------------------------------------------------------------

    @settings(
        max_examples=60,
        deadline=None,
        # The driver is made once per test, not per example: each example overwrites one
        # key. Every subclass (one per driver) runs this method on its own instances.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(value=JSON_VALUES)
    async def test_generated_values_round_trip_exactly(self, driver: Any, value: Any) -> None:
        await driver.set_item("generated", value)
        got = await driver.get_item("generated")
        assert got == value
        assert repr(got) == repr(value)
