"""The optional driver capabilities: which protocols each driver satisfies, and what follows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sqlsession import (
    SessionDriver,
    SessionDriverConfig,
    SupportsCleanup,
    SupportsClear,
    SupportsDispose,
    SupportsExpiry,
    SupportsHasItem,
    SupportsKeys,
    SupportsMerge,
    open_driver,
    session_drivers,
)
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.web import SessionStore, end_user_sessions
from tests.conftest import FakeClock

CAPABILITIES: list[type] = [
    SupportsCleanup,
    SupportsClear,
    SupportsDispose,
    SupportsExpiry,
    SupportsHasItem,
    SupportsKeys,
    SupportsMerge,
]


class Minimal:
    """A third party's driver: the three required coroutines and nothing else."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}
        self.calls: list[str] = []

    async def get_item(self, key: str) -> Any:
        self.calls.append("get_item")
        return self.items.get(key)

    async def set_item(self, key: str, value: Any) -> None:
        self.calls.append("set_item")
        self.items[key] = value

    async def remove_item(self, key: str) -> None:
        self.calls.append("remove_item")
        self.items.pop(key, None)


def test_the_built_in_drivers_have_every_capability(driver: Any) -> None:
    assert isinstance(driver, SessionDriver)
    for capability in CAPABILITIES:
        assert isinstance(driver, capability), capability.__name__


def test_a_minimal_driver_is_only_a_session_driver() -> None:
    driver = Minimal()
    assert isinstance(driver, SessionDriver)
    assert [c.__name__ for c in CAPABILITIES if isinstance(driver, c)] == []


def test_a_ttl_keyword_alone_does_not_make_a_driver_expiry_capable() -> None:
    class KeywordOnly(Minimal):
        async def set_item(self, key: str, value: Any, **options: Any) -> None:
            await super().set_item(key, value)

    # isinstance cannot see a keyword; only `touch` marks a driver that takes ttl=.
    assert not isinstance(KeywordOnly(), SupportsExpiry)


def test_a_method_set_to_none_is_not_a_capability() -> None:
    driver = Minimal()
    driver.merge_item = None  # type: ignore[attr-defined]
    assert not isinstance(driver, SupportsMerge)


def _conforms(driver: MemoryDriver | SQLDriver) -> None:
    """Never called: mypy checks here that the built-in signatures match the protocols,
    which isinstance cannot."""
    expiry: SupportsExpiry = driver
    merge: SupportsMerge = driver
    has: SupportsHasItem = driver
    keys: SupportsKeys = driver
    clear: SupportsClear = driver
    cleanup: SupportsCleanup = driver
    dispose: SupportsDispose = driver
    required: SessionDriver = driver
    del expiry, merge, has, keys, clear, cleanup, dispose, required


async def test_open_driver_disposes_only_what_can_be_disposed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disposed: list[MemoryDriver] = []

    async def dispose(self: MemoryDriver) -> None:
        disposed.append(self)

    monkeypatch.setattr(MemoryDriver, "dispose", dispose)
    async with open_driver(session_drivers.memory()) as driver:
        assert isinstance(driver, MemoryDriver)
    assert disposed == [driver]

    runtime = tmp_path / "minimal.py"
    runtime.write_text(
        "class Minimal:\n"
        "    async def get_item(self, key): return None\n"
        "    async def set_item(self, key, value): return None\n"
        "    async def remove_item(self, key): return None\n"
        "def create_driver(config): return Minimal()\n"
    )
    async with open_driver(SessionDriverConfig(entrypoint=runtime)) as plain:
        assert not isinstance(plain, SupportsDispose)


# -- what the session store makes of them ---------------------------------------------------


class KeywordRecording(Minimal):
    """Takes keywords on set_item without being expiry-capable (no touch): records them."""

    def __init__(self) -> None:
        super().__init__()
        self.options: list[dict[str, Any]] = []

    async def set_item(self, key: str, value: Any, **options: Any) -> None:
        self.options.append(options)
        await super().set_item(key, value)


class MergeRecording(KeywordRecording):
    """Atomic merge without expiry: merge_item is used, and passed no ttl."""

    async def merge_item(
        self, key: str, set: Any = None, delete: Any = (), **options: Any
    ) -> dict[str, Any]:
        self.calls.append("merge_item")
        self.options.append(options)
        current = dict(self.items.get(key) or {})
        for name in delete:
            current.pop(name, None)
        current.update(set or {})
        self.items[key] = current
        return current


class ExpiryRecording(KeywordRecording):
    """Expiry without merge: set_item is passed the session's ttl."""

    async def touch(self, key: str, ttl: Any = None) -> bool:
        return key in self.items


async def change_twice(store: SessionStore) -> str:
    """Start a session, then change it in a second request; return its id."""
    session = await store.load([])
    session["user"] = "ada"
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    session = await store.load([change.session_id])
    session["cart"] = [1]
    await store.commit(session)
    return change.session_id


async def test_a_minimal_driver_gets_a_re_read_and_set_item_without_ttl(
    clock: FakeClock,
) -> None:
    driver = Minimal()  # a ttl keyword would raise TypeError in its set_item
    store = SessionStore(driver, max_age=60, clock=clock)
    sid = await change_twice(store)
    # The first commit is one set_item; the change is a re-read and a set_item.
    assert driver.calls == ["set_item", "get_item", "get_item", "set_item"]
    assert dict(await store.load([sid])) == {"user": "ada", "cart": [1]}


async def test_a_driver_without_touch_is_never_passed_ttl(clock: FakeClock) -> None:
    driver = KeywordRecording()
    store = SessionStore(driver, max_age=60, clock=clock)
    sid = await change_twice(store)
    session = await store.load([sid])
    session.bind_user("ada")
    session.sign_out_everywhere()
    await store.commit(session)
    await end_user_sessions(driver, "ada")
    assert len(driver.options) == 4
    assert driver.options == [{}] * 4


async def test_merge_without_expiry_is_used_without_ttl(clock: FakeClock) -> None:
    driver = MergeRecording()
    store = SessionStore(driver, max_age=60, clock=clock)
    sid = await change_twice(store)
    assert driver.calls == ["set_item", "get_item", "merge_item"]
    assert driver.options == [{}, {}]
    assert dict(await store.load([sid])) == {"user": "ada", "cart": [1]}


async def test_an_expiry_capable_driver_is_passed_the_sessions_ttl(clock: FakeClock) -> None:
    driver = ExpiryRecording()
    store = SessionStore(driver, max_age=60, clock=clock)
    await change_twice(store)
    # Not merge-capable: the change is a re-read and a set_item, both with the row's ttl.
    assert driver.calls == ["set_item", "get_item", "get_item", "set_item"]
    assert driver.options == [{"ttl": 60.0}, {"ttl": 60.0}]
