"""`merge_existing_text` and `merge_existing` as one UPDATE on the SQL fast path.

Each guarantee of the locked merge is checked on SQLite, PostgreSQL and MariaDB against
the one-statement merge, and the round trips are counted on the real connections: the
bytes a driver writes to the server's socket (PostgreSQL, MariaDB: one write per round
trip) and the calls into aiosqlite's connection thread (SQLite).
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import event

from sqlsession import CorruptValueError, ValueNotSerializableError
from sqlsession.drivers.sql import SQLDriver
from tests.conftest import SQL_BACKENDS, FakeClock


@pytest.fixture(params=SQL_BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
async def driver(url: str, clock: FakeClock) -> Any:
    async with SQLDriver(url, clock=clock) as made:
        yield made


class Trips:
    """Counts what the driver sends: socket writes (servers) and aiosqlite thread calls."""

    def __init__(self) -> None:
        self.count = 0

    def watch(self, driver: SQLDriver) -> None:
        @event.listens_for(driver.engine.sync_engine, "checkout")
        def _wrap(_dbapi: Any, record: Any, _proxy: Any) -> None:
            transport = getattr(record.driver_connection, "_transport", None)
            if transport is None or getattr(transport, "_sqlsession_counted", False):
                return
            write = transport.write

            def counted(data: Any) -> Any:
                self.count += 1
                return write(data)

            transport.write = counted
            transport._sqlsession_counted = True


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Trips:
    counter = Trips()
    execute: Any = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        counter.count += 1
        return await execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return counter


# -- round trips ---------------------------------------------------------------------------


async def test_a_changed_session_is_one_round_trip(driver: SQLDriver, trips: Trips) -> None:
    trips.watch(driver)
    await driver.set_item("s", {"user": 7, "cart": [1], "n": 1})
    # Warm: PostgreSQL prepares each statement once per connection.
    assert await driver.get_text("s") is not None
    assert await driver.merge_existing_text("s", {"n": "2"}, ["gone"])
    trips.count = 0
    assert await driver.merge_existing_text("s", {"cart": "[1,2]", "n": "3"}, ["user"])
    assert trips.count == 1
    assert await driver.get_item("s") == {"cart": [1, 2], "n": 3}


async def test_a_changed_request_is_at_most_two_thread_trips_on_sqlite(
    sqlite_url: str, trips: Trips
) -> None:
    async with SQLDriver(sqlite_url) as driver:
        await driver.set_item("s", {"n": 0})
        await driver.merge_existing_text("s", {"n": "1"})
        trips.count = 0
        # A request: load the session, then write what changed.
        assert json.loads(await driver.get_text("s") or "") == {"n": 1}
        assert await driver.merge_existing_text("s", {"n": "2", "new": '"x"'})
        assert trips.count <= 2
        assert await driver.get_item("s") == {"n": 2, "new": "x"}


# MariaDB's UPDATE returns nothing: its merge_existing is the locked merge.
@pytest.mark.parametrize("url", ["sqlite", "postgres"], indirect=True)
async def test_merge_existing_returns_the_merged_dict_from_its_one_statement(
    url: str, trips: Trips
) -> None:
    async with SQLDriver(url) as driver:
        trips.watch(driver)
        await driver.set_item("s", {"a": 1})
        await driver.merge_existing("s", set={"b": 1})
        trips.count = 0
        assert await driver.merge_existing("s", set={"b": 2.5}, delete=["a"]) == {"b": 2.5}
        assert trips.count == 1
        assert await driver.get_item("s") == {"b": 2.5}


# -- the guarantees ------------------------------------------------------------------------


async def test_concurrent_text_merges_of_different_members_all_persist(driver: SQLDriver) -> None:
    await driver.set_item("s", {"base": True})
    results = await asyncio.gather(
        *(driver.merge_existing_text("s", {f"m{i}": str(i)}) for i in range(24))
    )
    assert results == [True] * 24
    assert await driver.get_item("s") == {"base": True, **{f"m{i}": i for i in range(24)}}


async def test_concurrent_text_merges_that_delete_and_set_all_persist(driver: SQLDriver) -> None:
    await driver.set_item("s", {f"old{i}": i for i in range(12)})
    await asyncio.gather(
        *(driver.merge_existing_text("s", {f"new{i}": f"[{i}]"}, [f"old{i}"]) for i in range(12))
    )
    assert await driver.get_item("s") == {f"new{i}": [i] for i in range(12)}


MERGER = textwrap.dedent(
    """
    import asyncio, sys
    from sqlsession.drivers.sql import SQLDriver

    async def main(url, name, count):
        async with SQLDriver(url) as driver:
            for i in range(count):
                assert await driver.merge_existing_text("shared", {f"{name}{i}": str(i)})

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_two_processes_merging_different_members_both_persist(url: str) -> None:
    count = 60
    async with SQLDriver(url) as driver:
        await driver.set_item("shared", {})
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", MERGER, url, name, str(count)
            )
            for name in ("a", "b")
        ]
        assert [await p.wait() for p in procs] == [0, 0]
        value = await driver.get_item("shared")
    assert value == {f"{n}{i}": i for n in ("a", "b") for i in range(count)}


async def test_a_merge_never_creates_an_absent_removed_or_expired_item(
    driver: SQLDriver, clock: FakeClock
) -> None:
    assert await driver.merge_existing_text("absent", {"a": "1"}) is False
    assert await driver.merge_existing("absent", set={"a": 1}) is None
    await driver.set_item("removed", {"a": 1})
    await driver.remove_item("removed")
    assert await driver.merge_existing_text("removed", {"a": "2"}) is False
    await driver.set_item("expired", {"a": 1}, ttl=10)
    clock.advance(10)
    assert await driver.merge_existing_text("expired", {"a": "2"}, ttl=100) is False
    assert await driver.merge_existing("expired", set={"a": 2}, ttl=100) is None
    assert await driver.stats() == {"live": 0, "expired": 1}
    clock.advance(-1)  # the expired row is as it was
    assert await driver.get_item("expired") == {"a": 1}
    assert await driver.get_keys() == ["expired"]


@pytest.mark.parametrize("stored", [[1, 2], 7, "text", None, True])
async def test_a_value_that_is_not_a_dict_is_refused_and_left_alone(
    driver: SQLDriver, stored: Any
) -> None:
    await driver.set_item("s", stored, ttl=50)
    expiry = await driver.get_expiry("s")
    with pytest.raises(ValueNotSerializableError, match="dict"):
        await driver.merge_existing_text("s", {"a": "1"}, ttl=500)
    with pytest.raises(ValueNotSerializableError, match="dict"):
        await driver.merge_existing("s", set={"a": 1}, ttl=500)
    assert await driver.get_item("s") == stored
    assert await driver.get_expiry("s") == expiry


async def test_a_stored_value_that_is_not_json_is_reported_and_left_alone(
    driver: SQLDriver,
) -> None:
    await driver.set_text("s", '{"a": nope}')
    with pytest.raises(CorruptValueError, match="'s'"):
        await driver.merge_existing_text("s", {"a": "1"})
    assert await driver.get_text("s") == '{"a": nope}'


async def test_ttl_applies_to_the_whole_item(driver: SQLDriver, clock: FakeClock) -> None:
    await driver.set_item("s", {"a": 1}, ttl=5)
    assert await driver.merge_existing_text("s", {"b": "2"}, ttl=60)
    clock.advance(59.999)
    assert await driver.get_item("s") == {"a": 1, "b": 2}
    assert await driver.merge_existing("s", set={"c": 3}, ttl=None) == {"a": 1, "b": 2, "c": 3}
    clock.advance(10**6)
    assert await driver.get_item("s") == {"a": 1, "b": 2, "c": 3}


@pytest.mark.parametrize(
    ("texts", "delete", "error"),
    [
        ({"a": "nope"}, [], CorruptValueError),
        ({"a": "1", "b": "[1,"}, ["keep"], CorruptValueError),
        ({"a": 1}, [], ValueNotSerializableError),
        ({"a": "1"}, "keep", ValueNotSerializableError),
        ({"a": "1"}, [1], ValueNotSerializableError),
        ({1: "1"}, [], ValueNotSerializableError),
        (["a"], [], ValueNotSerializableError),
    ],
)
async def test_bad_input_writes_nothing(
    driver: SQLDriver, texts: Any, delete: Any, error: type[Exception]
) -> None:
    await driver.set_item("s", {"keep": 1}, ttl=50)
    expiry = await driver.get_expiry("s")
    with pytest.raises(error):
        await driver.merge_existing_text("s", texts, delete, ttl=500)
    assert await driver.get_item("s") == {"keep": 1}
    assert await driver.get_expiry("s") == expiry


async def test_members_keep_their_types_and_nulls(driver: SQLDriver) -> None:
    # 1e+20 stays a float (jsonb would write it as an integer); a null member stays;
    # a nested object is replaced, not merged; a member deleted and set is set.
    await driver.set_item("s", {"big": 1e20, "small": 1e-7, "obj": {"x": 1}, "z": None})
    await driver.merge_existing_text(
        "s", {"obj": '{"y":null}', "z": "null", "n": "null", "big": "1e+20"}, ["z", "small"]
    )
    value = await driver.get_item("s")
    assert value == {"big": 1e20, "obj": {"y": None}, "z": None, "n": None}
    assert type(value["big"]) is float
    assert await driver.merge_existing("s", set={"small": 2e-7}) == {**value, "small": 2e-7}


@pytest.mark.parametrize(
    "name", ["", "a.b", 'q"uote', "back\\slash", "tab\there", "é 中 😀", "$[0]", "*", "\x00"]
)
async def test_any_member_name_is_merged(driver: SQLDriver, name: str) -> None:
    await driver.set_item("s", {"other": 1, name: "old"})
    assert await driver.merge_existing_text("s", {name: '"new"'})
    assert await driver.get_item("s") == {"other": 1, name: "new"}
    assert await driver.merge_existing_text("s", {}, [name])
    assert await driver.get_item("s") == {"other": 1}


async def test_deep_values_are_merged(driver: SQLDriver) -> None:
    # Deeper than MariaDB's JSON functions go (32): the locked merge takes those.
    deep: Any = 1
    for _ in range(60):
        deep = [deep]
    await driver.set_item("s", {"a": 1})
    assert await driver.merge_existing_text("s", {"deep": json.dumps(deep)})
    assert await driver.merge_existing_text("s", {"b": "2"})
    assert await driver.get_item("s") == {"a": 1, "deep": deep, "b": 2}


async def test_many_shapes_of_merge(driver: SQLDriver) -> None:
    # More statement shapes than the cache keeps: each is still built and run.
    await driver.set_item("s", {})
    expected: dict[str, Any] = {}
    for sets in range(12):
        for deletes in range(0, 12, 2):
            texts = {f"m{sets}_{deletes}_{i}": str(i) for i in range(sets)}
            gone = [f"m{sets}_{deletes - 2}_{i}" for i in range(deletes)]
            assert await driver.merge_existing_text("s", texts, gone)
            for name in gone:
                expected.pop(name, None)
            expected.update({name: int(text) for name, text in texts.items()})
    assert await driver.get_item("s") == expected


# -- merge_item: the same merge as one upsert (PostgreSQL, SQLite) -------------------------


@pytest.mark.parametrize("url", ["sqlite", "postgres"], indirect=True)
async def test_merge_item_is_one_round_trip(url: str, trips: Trips) -> None:
    async with SQLDriver(url) as driver:
        trips.watch(driver)
        await driver.merge_item("s", set={"a": 1})
        await driver.merge_item("new-a", set={"a": 1})
        trips.count = 0
        assert await driver.merge_item("s", set={"b": [2]}, delete=["a"]) == {"b": [2]}
        assert await driver.merge_item("new-b", set={"b": 2}) == {"b": 2}
        assert trips.count == 2


async def test_merge_item_starts_an_absent_or_expired_item_from_an_empty_dict(
    driver: SQLDriver, clock: FakeClock
) -> None:
    assert await driver.merge_item("s", set={"a": 1}, delete=["x"], ttl=10) == {"a": 1}
    assert await driver.merge_item("s", set={"b": None}, ttl=10) == {"a": 1, "b": None}
    clock.advance(10)
    assert await driver.merge_item("s", set={"c": 3}, ttl=20) == {"c": 3}
    clock.advance(19.999)
    assert await driver.get_item("s") == {"c": 3}
    clock.advance(0.001)
    assert await driver.get_item("s") is None
    assert await driver.merge_item("empty") == {}
    assert await driver.get_item("empty") == {}


@pytest.mark.parametrize("stored", [[1, 2], 7, None])
async def test_merge_item_refuses_a_live_value_that_is_not_a_dict(
    driver: SQLDriver, stored: Any
) -> None:
    await driver.set_item("s", stored, ttl=50)
    expiry = await driver.get_expiry("s")
    with pytest.raises(ValueNotSerializableError, match="dict"):
        await driver.merge_item("s", set={"a": 1}, ttl=500)
    assert await driver.get_item("s") == stored
    assert await driver.get_expiry("s") == expiry


async def test_concurrent_merge_items_of_a_new_item_all_persist(driver: SQLDriver) -> None:
    merged = await asyncio.gather(*(driver.merge_item("s", set={f"m{i}": i}) for i in range(24)))
    assert all(f"m{i}" in merged[i] for i in range(24))
    assert await driver.get_item("s") == {f"m{i}": i for i in range(24)}


@pytest.mark.parametrize("name", ["plain", 'q"uote'])
async def test_delete_may_be_any_iterable_on_either_path(driver: SQLDriver, name: str) -> None:
    # A quote in a member name takes the locked merge on SQLite and MariaDB: the names
    # to delete, read once by the one-statement attempt, must still reach it.
    await driver.set_item("s", {"a": 1, "b": 2})
    merged = await driver.merge_existing("s", set={name: 1}, delete=(n for n in ["a"]))
    assert merged == {"b": 2, name: 1}
    assert await driver.merge_item("s", set={name: 2}, delete=iter(["b"])) == {name: 2}
    assert await driver.merge_existing_text("s", {"c": "3"}, (n for n in [name]))
    assert await driver.get_item("s") == {"c": 3}


# -- through the session layer: a changed request -------------------------------------------


async def test_a_changed_request_is_a_load_and_one_write(
    url: str, trips: Trips, clock: FakeClock
) -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from sqlsession.web import SessionMiddleware

    async def change(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        request.session.pop("flash", None)
        return PlainTextResponse(str(request.session["n"]))

    async with SQLDriver(url, clock=clock) as driver:
        trips.watch(driver)
        app = Starlette(
            routes=[Route("/change", change, methods=["POST"])],
            middleware=[Middleware(SessionMiddleware, driver=driver, clock=clock)],
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as client:
            assert (await client.post("/change")).text == "1"  # a new session
            assert (await client.post("/change")).text == "2"  # warm
            trips.count = 0
            assert (await client.post("/change")).text == "3"
            # SQLite: at most two trips to aiosqlite's thread; PostgreSQL and MariaDB:
            # two round trips, the load and the one-statement merge.
            assert trips.count <= 2 if url.startswith("sqlite") else trips.count == 2
            assert (await client.post("/change")).text == "4"  # the write persisted
        assert len(await driver.get_keys()) == 1


async def test_the_texts_are_neither_decoded_nor_encoded_in_python(
    driver: SQLDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlsession import _codec

    await driver.set_item("s", {"a": 1, "cart": [1]})
    calls: list[str] = []
    for name in ("decode", "encode", "encode_trusted", "encodes_to"):
        if hasattr(_codec, name):
            real = getattr(_codec, name)

            def counted(*args: Any, _name: str = name, _real: Any = real, **kw: Any) -> Any:
                calls.append(_name)
                return _real(*args, **kw)

            monkeypatch.setattr(_codec, name, counted)
    monkeypatch.setattr(json, "loads", lambda *a, **k: calls.append("loads"))
    assert await driver.merge_existing_text("s", {"cart": "[1,2]", "b": '{"x":null}'}, ["a"])
    assert calls == []
    monkeypatch.undo()
    assert await driver.get_item("s") == {"cart": [1, 2], "b": {"x": None}}
