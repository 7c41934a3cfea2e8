"""The driver contract, written once and run on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlsession import (
    InvalidKeyError,
    InvalidTTLError,
    SessionDriver,
    SessionError,
    ValueNotSerializableError,
)

from .conftest import DriverFactory, FakeClock


def cyclic() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


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


async def test_satisfies_protocol(driver: Any) -> None:
    assert isinstance(driver, SessionDriver)


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: repr(v)[:30])
async def test_round_trip_keeps_value_and_types(driver: Any, value: Any) -> None:
    await driver.set_item("k", value)
    got = await driver.get_item("k")
    assert got == value
    assert repr(got) == repr(value)  # same types all the way down: 1e16 stays a float


async def test_tuples_are_stored_as_lists(driver: Any) -> None:
    await driver.set_item("k", {"pair": (1, (2, 3))})
    assert await driver.get_item("k") == {"pair": [1, [2, 3]]}


async def test_values_of_a_megabyte(driver: Any) -> None:
    value = {"blob": "x" * 1_100_000, "list": list(range(20_000))}
    await driver.set_item("big", value)
    assert await driver.get_item("big") == value


async def test_get_returns_a_copy(driver: Any) -> None:
    value = {"cart": [1]}
    await driver.set_item("k", value)
    value["cart"].append(2)
    got = await driver.get_item("k")
    got["cart"].append(3)
    assert await driver.get_item("k") == {"cart": [1]}


async def test_absent_key(driver: Any) -> None:
    assert await driver.get_item("nope") is None
    assert await driver.has_item("nope") is False
    await driver.remove_item("nope")  # no error


async def test_none_is_stored_and_exists(driver: Any) -> None:
    await driver.set_item("k", None)
    assert await driver.has_item("k") is True
    assert await driver.get_item("k") is None
    assert await driver.get_keys() == ["k"]


async def test_set_replaces_and_remove_deletes(driver: Any) -> None:
    await driver.set_item("k", 1)
    await driver.set_item("k", {"a": 2})
    assert await driver.get_item("k") == {"a": 2}
    await driver.remove_item("k")
    assert await driver.get_item("k") is None
    assert await driver.has_item("k") is False


async def test_keys_of_every_allowed_shape(driver: Any) -> None:
    keys = ["a", "x" * 255, "sess:ü:\U0001f600", " spaced ", "%_\\"]
    for i, key in enumerate(keys):
        await driver.set_item(key, i)
    for i, key in enumerate(keys):
        assert await driver.get_item(key) == i
    assert await driver.get_keys() == sorted(keys)


async def test_keys_are_compared_exactly_and_ordered_by_code_point(driver: Any) -> None:
    # Case, trailing spaces and Unicode normalisation all make different keys, on every
    # backend (a case-insensitive or PAD SPACE collation would merge some of these).
    keys = ["a", "A", "a ", "é", "e\u0301", "\U0001f600", "\uffff", "z", "Z"]
    for i, key in enumerate(keys):
        await driver.set_item(key, i)
    for i, key in enumerate(keys):
        assert await driver.get_item(key) == i
    assert await driver.get_keys() == sorted(keys)  # Python orders str by code point
    assert await driver.get_keys("a") == ["a", "a "]


async def test_get_keys_and_clear_by_prefix(driver: Any) -> None:
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


async def test_prefix_at_the_top_of_unicode(driver: Any) -> None:
    top = "\U0010ffff"
    await driver.set_item("a" + top, 1)
    await driver.set_item("a" + top + top, 2)
    await driver.set_item("b", 3)
    assert await driver.get_keys("a" + top) == ["a" + top, "a" + top + top]
    assert await driver.get_keys(top) == []


# -- expiry: the clock is moved, never slept on -------------------------------------------


async def test_default_ttl_expires_items(make_driver: DriverFactory, clock: FakeClock) -> None:
    driver = await make_driver(ttl=10)
    await driver.set_item("k", "v")
    clock.advance(9.999)
    assert await driver.get_item("k") == "v"
    clock.advance(0.001)  # expired from the very moment of expiry
    assert await driver.get_item("k") is None
    assert await driver.has_item("k") is False
    assert await driver.get_keys() == []


async def test_ttl_none_stores_forever(make_driver: DriverFactory, clock: FakeClock) -> None:
    driver = await make_driver(ttl=10)
    await driver.set_item("forever", 1, ttl=None)
    await driver.set_item("short", 2, ttl=0.5)
    await driver.set_item("long", 3, ttl=100)
    clock.advance(50)
    assert await driver.get_item("forever") == 1
    assert await driver.get_item("short") is None
    assert await driver.get_item("long") == 3
    clock.advance(10**9)
    assert await driver.get_keys() == ["forever"]


async def test_millisecond_precision(make_driver: DriverFactory, clock: FakeClock) -> None:
    driver = await make_driver()
    await driver.set_item("k", 1, ttl=0.25)
    clock.advance(0.249)
    assert await driver.has_item("k")
    clock.advance(0.001)
    assert not await driver.has_item("k")


async def test_overwrite_renews_expiry(make_driver: DriverFactory, clock: FakeClock) -> None:
    driver = await make_driver(ttl=10)
    await driver.set_item("k", 1)
    clock.advance(8)
    await driver.set_item("k", 2)
    clock.advance(8)
    assert await driver.get_item("k") == 2


async def test_touch(make_driver: DriverFactory, clock: FakeClock) -> None:
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
    assert await driver.get_keys() == ["k"]


async def test_touch_does_not_revive_an_expired_item(
    make_driver: DriverFactory, clock: FakeClock
) -> None:
    driver = await make_driver(ttl=1)
    await driver.set_item("k", 1)
    clock.advance(1)
    assert await driver.touch("k", 100) is False
    assert await driver.get_item("k") is None


async def test_expired_rows_are_kept_until_cleanup(
    make_driver: DriverFactory, clock: FakeClock
) -> None:
    driver = await make_driver(ttl=5)
    for i in range(7):
        await driver.set_item(f"old{i}", i)
    await driver.set_item("live", "x", ttl=None)
    clock.advance(5)
    await driver.set_item("fresh", "y")
    assert await driver.get_keys() == ["fresh", "live"]
    assert await driver.cleanup() == 7
    assert await driver.cleanup() == 0
    assert await driver.get_keys() == ["fresh", "live"]
    assert await driver.get_item("fresh") == "y"


async def test_an_expired_key_can_be_set_again(
    make_driver: DriverFactory, clock: FakeClock
) -> None:
    driver = await make_driver(ttl=5)
    await driver.set_item("k", 1)
    clock.advance(6)
    await driver.set_item("k", 2)
    assert await driver.get_item("k") == 2


# -- merge_item --------------------------------------------------------------------------


async def test_merge_item(make_driver: DriverFactory, clock: FakeClock) -> None:
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


async def test_merge_refuses_a_value_that_is_not_a_dict(driver: Any) -> None:
    await driver.set_item("k", [1, 2])
    with pytest.raises(ValueNotSerializableError, match="'k'"):
        await driver.merge_item("k", set={"a": 1})
    assert await driver.get_item("k") == [1, 2]


async def test_concurrent_merges_of_different_fields_all_win(driver: Any) -> None:
    await asyncio.gather(*(driver.merge_item("m", set={f"f{i}": i}) for i in range(40)))
    assert await driver.get_item("m") == {f"f{i}": i for i in range(40)}


# -- concurrency -------------------------------------------------------------------------


async def test_fifty_concurrent_writers_on_one_key(driver: Any) -> None:
    values = [{"writer": i, "pad": "x" * 500} for i in range(50)]
    await asyncio.gather(*(driver.set_item("hot", v) for v in values))
    assert await driver.get_item("hot") in values
    assert await driver.get_keys() == ["hot"]


async def test_concurrent_mixed_operations(driver: Any) -> None:
    async def worker(n: int) -> None:
        for i in range(10):
            await driver.set_item(f"w{n}", i)
            assert await driver.get_item(f"w{n}") == i
        await driver.remove_item(f"w{n}")

    await asyncio.gather(*(worker(n) for n in range(20)))
    assert await driver.get_keys() == []


# -- bad input: a clear error from our tree, and nothing written ---------------------------

BAD_KEYS: list[Any] = ["", "x" * 256, "a\x00b", "\ud800", 1, None, b"key", ("k",)]
BAD_VALUES: list[Any] = [
    datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    {"when": datetime.date(2026, 1, 1)},
    {1, 2},
    b"bytes",
    math.nan,
    [math.inf],
    {"x": -math.inf},
    cyclic(),
    {1: "int key"},
    {"nested": {None: 1}},
    "\udc80 lone surrogate",
    {"\ud800": "surrogate key"},
    object(),
    10**5000,
]
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


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
async def test_bad_keys_are_refused(driver: Any, key: Any) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: driver.set_item(key, 1),
        lambda: driver.get_item(key),
        lambda: driver.has_item(key),
        lambda: driver.remove_item(key),
        lambda: driver.touch(key),
        lambda: driver.merge_item(key, set={"a": 1}),
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError) as info:
            await call()
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, SessionError)
    assert await driver.get_keys() == []


@pytest.mark.parametrize("value", BAD_VALUES, ids=lambda v: type(v).__name__)
async def test_bad_values_are_refused(driver: Any, value: Any) -> None:
    await driver.set_item("k", "before")
    with pytest.raises(ValueNotSerializableError, match="'k'") as info:
        await driver.set_item("k", value)
    assert isinstance(info.value, TypeError)
    assert await driver.get_item("k") == "before"
    await driver.set_item("m", {"a": 1})
    with pytest.raises(ValueNotSerializableError):
        await driver.merge_item("m", set={"b": value})
    assert await driver.get_item("m") == {"a": 1}
    assert await driver.get_keys() == ["k", "m"]


async def test_bad_value_error_names_the_key_and_the_type(driver: Any) -> None:
    with pytest.raises(ValueNotSerializableError) as info:
        await driver.set_item("sess-1", {"cart": [1, {"at": datetime.time(12)}]})
    message = str(info.value)
    assert "'sess-1'" in message
    assert "datetime.time" in message
    assert "['cart'][1]['at']" in message


@pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
async def test_bad_ttls_are_refused(driver: Any, ttl: Any) -> None:
    await driver.set_item("k", "before")
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: driver.set_item("k", "after", ttl=ttl),
        lambda: driver.set_item("new", "after", ttl=ttl),
        lambda: driver.touch("k", ttl),
        lambda: driver.merge_item("new", set={"a": 1}, ttl=ttl),
    ]
    for call in calls:
        with pytest.raises(InvalidTTLError) as info:
            await call()
        assert isinstance(info.value, ValueError)
    assert await driver.get_keys() == ["k"]
    assert await driver.get_item("k") == "before"


@pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
async def test_bad_default_ttl_is_refused(make_driver: DriverFactory, ttl: Any) -> None:
    with pytest.raises(InvalidTTLError):
        await make_driver(ttl=ttl)


@pytest.mark.parametrize(
    ("changes", "delete"),
    [([("a", 1)], ()), ({"a": 1}, "a"), ({"a": 1}, [1]), ({1: "a"}, ())],
    ids=["set-not-mapping", "delete-a-str", "delete-non-str", "set-int-key"],
)
async def test_bad_merge_arguments(driver: Any, changes: Any, delete: Any) -> None:
    with pytest.raises(ValueNotSerializableError):
        await driver.merge_item("m", set=changes, delete=delete)
    assert await driver.get_keys() == []


# -- generated values ----------------------------------------------------------------------

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


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=JSON_VALUES)
async def test_generated_values_round_trip_exactly(driver: Any, value: Any) -> None:
    await driver.set_item("generated", value)
    got = await driver.get_item("generated")
    assert got == value
    assert repr(got) == repr(value)
