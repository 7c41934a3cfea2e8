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
