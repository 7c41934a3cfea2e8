"""The driver contract, and the optional capabilities a driver may add to it.

Any object with `get_item`, `set_item` and `remove_item` coroutines is a `SessionDriver`.
Everything else is optional and has its own protocol, so callers ask
``isinstance(driver, SupportsMerge)`` instead of probing attributes or signatures. The
built-in drivers implement them all; a third party's driver picks what it needs, and
none of them has to inherit from anything here.

``isinstance`` with these protocols checks only that the members exist, not their
signatures. That is why expiry is recognised by `touch`, a method only expiry-capable
drivers have, rather than by a ``ttl`` keyword on `set_item`, which every driver has.
The rule: a driver with ``touch`` accepts ``ttl=`` on ``set_item`` (and on ``merge_item``
if it has one); sqlsession never passes ``ttl=`` to a driver without ``touch``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "SessionDriver",
    "SupportsCleanup",
    "SupportsClear",
    "SupportsDispose",
    "SupportsExpiry",
    "SupportsHasItem",
    "SupportsKeys",
    "SupportsMerge",
    "SupportsMergeExisting",
]


@runtime_checkable
class SessionDriver(Protocol):
    """What sqlsession needs from a storage backend.

    Nothing has to inherit from this class: a third party's driver only needs these
    three coroutines. What a driver may add is described by the ``Supports*`` protocols
    of this module (`SupportsExpiry`, `SupportsMerge`, `SupportsHasItem`, `SupportsKeys`,
    `SupportsClear`, `SupportsCleanup`, `SupportsDispose`); the built-in drivers have
    all of them, and ``async with``.
    """

    async def get_item(self, key: str) -> Any:
        """Return the value stored under `key`, or None when it is absent or expired."""

    async def set_item(self, key: str, value: Any) -> None:
        """Store `value` under `key`, replacing what was there."""

    async def remove_item(self, key: str) -> None:
        """Delete `key`; deleting an absent key is not an error."""


@runtime_checkable
class SupportsExpiry(Protocol):
    """Per-item expiry: a ``ttl`` keyword on `set_item`, and `touch` to renew it.

    The rule: a driver is expiry-capable exactly when it has `touch`, because
    ``isinstance`` cannot see a keyword argument. Such a driver must accept ``ttl=`` on
    `set_item`, and on ``merge_item`` if it has one (`SupportsMerge`). A driver without
    `touch` is never passed ``ttl=``; the session layer then enforces its lifetimes by
    itself and leaves the rows to the driver.

    ``ttl`` is in seconds: omitted means the driver's default, None means no expiry, a
    number overrides the default.
    """

    async def set_item(self, key: str, value: Any, *, ttl: float | None = ...) -> None:
        """Store `value` under `key`, expiring after `ttl` seconds (None: never)."""

    async def touch(self, key: str, ttl: float | None = ...) -> bool:
        """Set the expiry of a live `key` to now + `ttl`; False when absent or expired."""


@runtime_checkable
class SupportsMerge(Protocol):
    """Atomic changes to some keys of a stored dict.

    The session layer commits a changed session with one `merge_item`, so two requests
    (or processes) that change different keys of one session both persist. Without it,
    the session re-reads the item and writes it back with `set_item`, and a change made
    in between is lost.

    ``ttl`` is passed only to a driver that is also `SupportsExpiry` (has ``touch``); a
    driver without expiry may leave the parameter out.
    """

    async def merge_item(
        self,
        key: str,
        set: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: float | None = ...,
    ) -> dict[str, Any]:
        """Apply `set` (keys to add or replace) and `delete` (keys to remove) in one step.

        An absent or expired item starts from an empty dict.

        Returns:
            The dict now stored.
        """


@runtime_checkable
class SupportsMergeExisting(Protocol):
    """`SupportsMerge` for an item that must already exist.

    The session layer writes a changed or refreshed session with it, so a session that
    another request ended meanwhile (a sign-out, a sign-in that replaced its id) is not
    brought back by a slower request that loaded it before. Without it, the session
    falls back to ``merge_item`` (which would re-create the item) or a re-read.

    ``ttl`` follows the rule of `SupportsMerge`.
    """

    async def merge_existing(
        self,
        key: str,
        set: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: float | None = ...,
    ) -> dict[str, Any] | None:
        """Apply `set` and `delete` as `merge_item` does, to a live item only.

        Returns:
            The dict now stored, or None when no live item `key` existed (nothing is
            written).
        """


@runtime_checkable
class SupportsHasItem(Protocol):
    """Existence checks that tell a stored None from an absent item."""

    async def has_item(self, key: str) -> bool:
        """Whether a live item is stored under `key` (also when its value is None)."""


@runtime_checkable
class SupportsKeys(Protocol):
    """Listing the live keys."""

    async def get_keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with `prefix`, sorted."""


@runtime_checkable
class SupportsClear(Protocol):
    """Deleting many items at once."""

    async def clear(self, prefix: str = "") -> None:
        """Delete every item whose key starts with `prefix` (all items by default)."""


@runtime_checkable
class SupportsCleanup(Protocol):
    """Deleting expired items, for drivers that keep them until told to."""

    async def cleanup(self) -> int:
        """Delete expired items; return how many."""


@runtime_checkable
class SupportsDispose(Protocol):
    """Releasing what the driver holds (connections, background tasks).

    `open_driver` and a `SessionMiddleware` that loaded its driver from a config call it
    on the way out.
    """

    async def dispose(self) -> None:
        """Release the driver's resources."""
