"""The driver contract: any object with these three coroutines is a session driver."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["SessionDriver"]


@runtime_checkable
class SessionDriver(Protocol):
    """What sqlsession needs from a storage backend.

    Nothing has to inherit from this class: a third party's driver only needs these
    three coroutines. The built-in drivers offer more (`has_item`, `get_keys`, `touch`,
    `clear`, `cleanup`, `merge_item`, `dispose`, ``async with``); callers check for
    them with ``hasattr`` and each is optional for other drivers.
    """

    async def get_item(self, key: str) -> Any:
        """Return the value stored under `key`, or None when it is absent or expired."""

    async def set_item(self, key: str, value: Any) -> None:
        """Store `value` under `key`, replacing what was there."""

    async def remove_item(self, key: str) -> None:
        """Delete `key`; deleting an absent key is not an error."""
