"""Corrupt stored data and absurd inputs: typed errors from our tree, nothing written.

A row someone else wrote (invalid JSON, JSON nested deeper than Python's decoder
follows, NaN, an int longer than Python's int/str limit) is a `CorruptValueError`, on
every backend; absurd ttls and ints are refused before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import pytest
from sqlalchemy import update

from sqlsession import (
    CorruptValueError,
    InvalidTTLError,
    SessionError,
    StorageError,
    ValueNotSerializableError,
    session_drivers,
)
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.drivers.sql.dialects import key_param
from sqlsession.web import SessionMiddleware, SessionStore, end_user_sessions
from tests.conftest import FakeClock
from tests.test_session import reopen, start

HUGE_TTL = 10**400  # no float can hold it: math.isfinite raised OverflowError
HUGE_INT = 10**5000  # over Python's 4,300-digit int/str conversion limit

CORRUPT = {
    "invalid": '{"cart": [1, 2',
    "deep": "[" * 10_000 + "]" * 10_000,
    "nan": '{"x": NaN}',
    "long-int": "1" * 5000,
}


async def store_raw(driver: Any, key: str, stored: str) -> None:
    """Put `stored` as the JSON text of `key`, as something other than sqlsession would."""
    await driver.set_item(key, "placeholder")
    if isinstance(driver, MemoryDriver):
        driver._items[key] = (stored, None)
        return
    table = driver._table
    async with driver.engine.connect() as conn:
        where = table.c.key == key_param("k")  # a str, also against MySQL's VARBINARY key
        await conn.execute(update(table).where(where).values(value=stored), {"k": key})


@pytest.mark.parametrize("stored", CORRUPT.values(), ids=CORRUPT.keys())
async def test_a_corrupt_row_is_a_corrupt_value_error_naming_the_key(
    driver: Any, stored: str
) -> None:
    await store_raw(driver, "corrupt-key", stored)
    with pytest.raises(CorruptValueError) as info:
        await driver.get_item("corrupt-key")
    assert isinstance(info.value, StorageError)
    message = str(info.value)
    assert "'corrupt-key'" in message
    assert stored[:12] not in message  # the value never reaches a message
    assert info.value.__cause__ is None  # a JSONDecodeError carries the text in .doc
    # merge_item reads the row too: the same error, and the row is left as it was.
    with pytest.raises(CorruptValueError):
        await driver.merge_item("corrupt-key", set={"a": 1})
    assert await driver.has_item("corrupt-key") is True
    with pytest.raises(CorruptValueError):
        await driver.get_item("corrupt-key")
    # The way out the message names works.
    await driver.set_item("corrupt-key", {"fixed": True})
    assert await driver.get_item("corrupt-key") == {"fixed": True}
    await store_raw(driver, "corrupt-key", stored)
    await driver.remove_item("corrupt-key")
    assert await driver.get_item("corrupt-key") is None


async def test_a_ttl_no_float_can_hold_is_an_invalid_ttl_error(driver: Any) -> None:
    await driver.set_item("k", 1)
    attempts: list[Awaitable[Any]] = [
        driver.set_item("k", 2, ttl=HUGE_TTL),
        driver.set_item("k", 2, ttl=-HUGE_TTL),
        driver.touch("k", ttl=HUGE_TTL),
        driver.merge_item("k2", set={"a": 1}, ttl=HUGE_TTL),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidTTLError) as info:
            await attempt
        assert "1329 bits" in str(info.value)  # described, not written out
    assert await driver.get_item("k") == 1
    assert await driver.has_item("k2") is False


@pytest.mark.parametrize("ttl", [HUGE_TTL, HUGE_INT], ids=["10**400", "10**5000"])
def test_huge_ttls_in_configs_and_the_session_layer_are_invalid_ttl_errors(ttl: int) -> None:
    with pytest.raises(InvalidTTLError):
        session_drivers.sql(url="sqlite:///x.db", ttl=ttl)
    with pytest.raises(InvalidTTLError):
        session_drivers.memory(ttl=ttl)
    with pytest.raises(InvalidTTLError):
        MemoryDriver(ttl=ttl)
    with pytest.raises(InvalidTTLError):
        SQLDriver("sqlite:///x.db", ttl=ttl)
    with pytest.raises(InvalidTTLError):
        SQLDriver("sqlite:///x.db", cleanup_interval=ttl)
    with pytest.raises(InvalidTTLError):
        SessionStore(MemoryDriver(), max_age=ttl)
    with pytest.raises(InvalidTTLError):
        SessionMiddleware(app, MemoryDriver(), idle_timeout=ttl)


async def test_a_session_key_with_a_huge_ttl_is_refused(clock: FakeClock) -> None:
    store = SessionStore(MemoryDriver(clock=clock), clock=clock)
    session = await store.load([])
    with pytest.raises(InvalidTTLError):
        session.set("flash", "hi", ttl=HUGE_TTL)
    assert dict(session) == {}


async def test_an_int_over_the_conversion_limit_is_refused_naming_where(driver: Any) -> None:
    with pytest.raises(ValueNotSerializableError) as info:
        await driver.set_item("k", {"a": [1, HUGE_INT]})
    message = str(info.value)
    assert "value['a'][1]" in message
    assert "4300 digits" in message
    assert await driver.has_item("k") is False
    with pytest.raises(ValueNotSerializableError):
        await driver.merge_item("k", set={"a": HUGE_INT})
    assert await driver.has_item("k") is False
    # Up to the limit, ints of any size come back exactly.
    longest = 10**4299  # 4300 digits
    await driver.set_item("k", {"a": [longest, -longest]})
    assert await driver.get_item("k") == {"a": [longest, -longest]}


async def app(scope: Any, receive: Any, send: Any) -> None:
    pass


# -- the session layer: a corrupt row never means a 500 for that visitor -----------------------


async def test_a_corrupt_session_row_is_a_new_session_on_every_backend(
    driver: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, cart=[1])
    (key,) = await driver.get_keys("s:")
    await store_raw(driver, key, CORRUPT["deep"])
    with caplog.at_level(logging.WARNING, logger="sqlsession"):
        session = await reopen(store, sid)
    assert dict(session) == {}
    assert "cannot be decoded" in caplog.text
    await store.commit(session)
    assert await driver.has_item(key) is False  # removed, so it cannot fail again


async def test_a_corrupt_sign_out_record_ends_the_users_sessions_instead_of_failing(
    driver: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SessionStore(driver, clock=clock)
    await end_user_sessions(driver, "ada")  # writes the user's sign-out record
    session = await store.load([])
    session.bind_user("ada")
    session["cart"] = [1]
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    sid = change.session_id
    (user_key,) = await driver.get_keys("u:")
    await store_raw(driver, user_key, CORRUPT["invalid"])
    with caplog.at_level(logging.WARNING, logger="sqlsession"):
        again = await reopen(store, sid)  # raised JSONDecodeError (a 500) on every request
    assert dict(again) == {}
    assert "sign-out record cannot be decoded" in caplog.text
    assert "ada" not in caplog.text
    # The record was replaced, so the user can sign in again.
    assert isinstance(await driver.get_item(user_key), dict)
    fresh = await store.load([])
    fresh.bind_user("ada")
    change = await store.commit(fresh)
    assert change is not None
    assert change.session_id is not None
    assert (await reopen(store, change.session_id)).session_id == change.session_id


def test_corrupt_value_error_is_a_session_error() -> None:
    assert issubclass(CorruptValueError, StorageError)
    assert issubclass(CorruptValueError, SessionError)
