"""`sqlsession.litestar.SQLSessionStore`: the behaviours Litestar documents for its stores,
and Litestar's own server-side session middleware end to end, on every backend."""

from __future__ import annotations

import string
import warnings
from datetime import timedelta
from typing import Any

import httpx
import pytest

with warnings.catch_warnings():
    # Litestar imports advanced-alchemy when it is installed (the [bench] extra), whose
    # import warns on SQLAlchemy 2.1; nothing here uses it.
    warnings.filterwarnings("ignore", "The declarative_mixin decorator", DeprecationWarning)
    from litestar import Litestar, Request, get, post
    from litestar.middleware.session.server_side import ServerSideSessionConfig

from sqlsession import ConfigError, InvalidKeyError, ValueNotSerializableError
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.litestar import SQLSessionStore

from .conftest import FakeClock


@pytest.fixture
def store(driver: Any, clock: FakeClock) -> SQLSessionStore:
    return SQLSessionStore(driver, clock=clock)


# -- the Store contract ------------------------------------------------------------------


async def test_get_and_set(store: SQLSessionStore) -> None:
    assert await store.get("foo") is None
    await store.set("key", b"value", 60)
    await store.set("text", "välue")
    assert await store.get("key") == b"value"
    assert await store.get("text") == "välue".encode()


@pytest.mark.parametrize("key", [*string.punctuation, "foo\xc3\xbc", "..", "a b"])
async def test_special_characters_in_keys(store: SQLSessionStore, key: str) -> None:
    await store.set(key, b"value")
    assert await store.get(key) == b"value"
    assert await store.exists(key)


async def test_values_expire_on_the_drivers_clock(store: SQLSessionStore, clock: FakeClock) -> None:
    await store.set("foo", b"bar", expires_in=1)
    await store.set("td", b"bar", expires_in=timedelta(seconds=2))
    await store.set("forever", b"bar", expires_in=0)  # 0 means no expiry, as in Litestar
    clock.advance(1)
    assert await store.get("foo") is None
    assert not await store.exists("foo")
    assert await store.get("td") == b"bar"
    clock.advance(1)
    assert await store.get("td") is None
    clock.advance(10**6)
    assert await store.get("forever") == b"bar"


@pytest.mark.parametrize("renew_for", [10, timedelta(seconds=10)])
async def test_get_renews_a_value_that_has_an_expiry(
    store: SQLSessionStore, clock: FakeClock, renew_for: int | timedelta
) -> None:
    await store.set("foo", b"bar", expires_in=1)
    assert await store.get("foo", renew_for=renew_for) == b"bar"
    assert await store.expires_in("foo") == 10
    clock.advance(9.5)
    assert await store.get("foo") == b"bar"
    clock.advance(0.5)
    assert await store.get("foo") is None


async def test_renew_is_a_no_op_without_expiry(store: SQLSessionStore) -> None:
    await store.set("foo", b"bar")
    assert await store.get("foo", renew_for=10) == b"bar"
    assert await store.expires_in("foo") == -1
    assert await store.get("absent", renew_for=10) is None


async def test_delete(store: SQLSessionStore) -> None:
    await store.set("key", b"value", 60)
    await store.delete("key")
    assert await store.get("key") is None
    await store.delete("never-there")  # no error


async def test_exists(store: SQLSessionStore) -> None:
    assert await store.exists("foo") is False
    await store.set("foo", b"bar")
    assert await store.exists("foo") is True


async def test_expires_in(store: SQLSessionStore, clock: FakeClock) -> None:
    assert await store.expires_in("foo") is None
    await store.set("foo", "bar")
    assert await store.expires_in("foo") == -1
    await store.set("foo", "bar", expires_in=10)
    assert await store.expires_in("foo") == 10
    clock.advance(0.4)
    assert await store.expires_in("foo") == 10  # rounded up, as Redis rounds its TTL
    clock.advance(9.5)
    assert await store.expires_in("foo") == 1  # never 0 while live
    clock.advance(0.1)
    assert await store.expires_in("foo") is None


async def test_expires_in_follows_a_touch_by_another_client(
    store: SQLSessionStore, driver: Any
) -> None:
    # The expiry is the driver's own, not a copy wrapped into the value.
    await store.set("foo", b"bar", expires_in=10)
    await driver.touch("litestar:foo", ttl=500)
    assert await store.expires_in("foo") == 500
    assert await driver.get_item("litestar:foo") == "bar"


async def test_delete_all(store: SQLSessionStore, driver: Any) -> None:
    await driver.set_item("other", 1)
    for i in range(10):
        await store.set(f"key-{i}", b"value", expires_in=10 if i % 2 else None)
    await store.delete_all()
    for i in range(10):
        assert await store.get(f"key-{i}") is None
    assert await driver.get_item("other") == 1  # outside the namespace


async def test_delete_all_without_a_namespace_is_refused(driver: Any) -> None:
    store = SQLSessionStore(driver, namespace=None)
    await store.set("k", b"v")
    assert await driver.get_item("k") == "v"
    with pytest.raises(ConfigError, match="namespace"):
        await store.delete_all()
    assert await store.get("k") == b"v"


# -- namespaces --------------------------------------------------------------------------


async def test_namespaces_are_isolated(store: SQLSessionStore) -> None:
    foo = store.with_namespace("foo")
    assert foo.namespace == "litestar:foo"
    await store.set("bar", b"litestar namespace")
    await foo.set("bar", b"foo namespace")
    assert await store.get("bar") == b"litestar namespace"
    assert await foo.get("bar") == b"foo namespace"


async def test_delete_all_does_not_propagate_up(store: SQLSessionStore) -> None:
    foo = store.with_namespace("FOO")
    await foo.set("foo", b"foo-value")
    await store.set("bar", b"bar-value")
    await foo.delete_all()
    assert await foo.get("foo") is None
    assert await store.get("bar") == b"bar-value"


async def test_delete_all_propagates_down(store: SQLSessionStore) -> None:
    foo = store.with_namespace("FOO").with_namespace("BAR")
    await foo.set("foo", b"foo-value")
    await store.set("bar", b"bar-value")
    await store.delete_all()
    assert await foo.get("foo") is None
    assert await store.get("bar") is None


async def test_delete_expired_stays_in_its_namespace(
    store: SQLSessionStore, driver: Any, clock: FakeClock
) -> None:
    sessions = store.with_namespace("sessions")
    cache = store.with_namespace("cache")
    for i in range(10):
        expires_in = 1 if i % 2 == 0 else None
        await sessions.set(f"key-{i}", b"value", expires_in=expires_in)
        await cache.set(f"key-{i}", b"value", expires_in=expires_in)
    await driver.set_item("sessions-not-litestar", 1, ttl=1)
    clock.advance(1)
    assert await sessions.delete_expired() == 5
    for i in range(10):
        assert (await sessions.get(f"key-{i}") is None) == (i % 2 == 0)
    # The other namespace's expired rows, and rows outside any, were left alone.
    assert await driver.cleanup(prefix="litestar:cache:") == 5
    assert await store.delete_expired() == 0
    assert await driver.cleanup() == 1


@pytest.mark.parametrize("namespace", ["", "a:b", 3])
async def test_a_bad_namespace_is_refused(store: SQLSessionStore, namespace: Any) -> None:
    with pytest.raises(InvalidKeyError):
        store.with_namespace(namespace)


# -- values ------------------------------------------------------------------------------


async def test_text_is_stored_as_a_json_string(store: SQLSessionStore, driver: Any) -> None:
    await store.set("k", b'{"user": 42}')
    assert await driver.get_item("litestar:k") == '{"user": 42}'  # no base64


async def test_binary_values_round_trip(store: SQLSessionStore, driver: Any) -> None:
    binary = bytes(range(256))
    await store.set("k", binary)
    assert await store.get("k") == binary
    stored = await driver.get_item("litestar:k")
    assert set(stored) == {"base64"}
    await store.set("nul", b"a\x00b")
    assert await store.get("nul") == b"a\x00b"


async def test_a_value_another_client_stored_reads_as_its_json(
    store: SQLSessionStore, driver: Any
) -> None:
    await driver.set_item("litestar:k", {"user": 42, "roles": ["a"]})
    assert await store.get("k") == b'{"user":42,"roles":["a"]}'
    await driver.set_item("litestar:b", {"base64": "not base64!"})
    assert await store.get("b") == b'{"base64":"not base64!"}'


async def test_a_value_that_is_not_bytes_is_refused(store: SQLSessionStore) -> None:
    with pytest.raises(ValueNotSerializableError):
        await store.set("k", 42)  # type: ignore[arg-type]
    assert not await store.exists("k")


async def test_a_driver_without_the_operations_is_refused() -> None:
    class Minimal:
        async def get_item(self, key: str) -> Any: ...
        async def set_item(self, key: str, value: Any) -> None: ...
        async def remove_item(self, key: str) -> None: ...

    with pytest.raises(ConfigError, match="get_entry"):
        SQLSessionStore(Minimal())

    class OldCleanup(MemoryDriver):
        async def cleanup(self) -> int:  # type: ignore[override]
            return 0

    with pytest.raises(ConfigError, match="prefix"):
        SQLSessionStore(OldCleanup())


# -- Litestar's server-side sessions, end to end -------------------------------------------


@post("/login/{user:str}")
async def login(request: Request[Any, Any, Any]) -> None:
    # Read by hand: how Litestar wants parameters declared differs between 2.x releases.
    request.set_session({"user": request.path_params["user"]})


@get("/me")
async def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return dict(request.session)


@post("/logout")
async def logout(request: Request[Any, Any, Any]) -> None:
    request.clear_session()


def _client(store: SQLSessionStore, **config: Any) -> httpx.AsyncClient:
    app = Litestar(
        route_handlers=[login, me, logout],
        middleware=[ServerSideSessionConfig(max_age=600, **config).middleware],
        stores={"sessions": store.with_namespace("sessions")},
    )
    # httpx's ASGI transport runs the app on the test's event loop, where the driver's
    # connections live (Litestar's AsyncTestClient runs it on a loop of its own).
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar types its scopes narrower
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_server_side_sessions_sign_in_read_expire_delete(
    store: SQLSessionStore, driver: Any, clock: FakeClock
) -> None:
    async with _client(store) as client:
        assert (await client.post("/login/ada")).status_code == 201
        session_id = client.cookies["session"]
        assert await driver.get_keys("litestar:sessions:") == [f"litestar:sessions:{session_id}"]
        assert await driver.get_item(f"litestar:sessions:{session_id}") == '{"user":"ada"}'

        assert (await client.get("/me")).json() == {"user": "ada"}
        entry = await driver.get_entry(f"litestar:sessions:{session_id}")
        assert entry.expires_at == clock.now + 600

        clock.advance(600)  # the row expires on the driver's clock
        assert await store.delete_expired() == 1
        assert (await client.get("/me")).json() == {}

        clock.advance(1)
        await client.post("/login/bob")
        second = f"litestar:sessions:{client.cookies['session']}"
        assert (await client.get("/me")).json() == {"user": "bob"}
        assert await driver.get_item(second) == '{"user":"bob"}'
        await client.post("/logout")
        assert await driver.get_item(second) is None  # the store deleted the row
        assert (await client.get("/me")).json() == {}


async def test_server_side_sessions_renew_on_access(
    store: SQLSessionStore, driver: Any, clock: FakeClock
) -> None:
    async with _client(store, renew_on_access=True) as client:
        await client.post("/login/ada")
        for _ in range(3):  # each read pushes the expiry on by max_age
            clock.advance(500)
            assert (await client.get("/me")).json() == {"user": "ada"}
        clock.advance(600)
        assert (await client.get("/me")).json() == {}
