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
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "Entry",
    "SessionDriver",
    "SupportsAddItem",
    "SupportsCleanup",
    "SupportsClear",
    "SupportsDeleteItem",
    "SupportsDispose",
    "SupportsEntries",
    "SupportsExpiry",
    "SupportsHasItem",
    "SupportsJSONText",
    "SupportsKeys",
    "SupportsMany",
    "SupportsMerge",
    "SupportsMergeExisting",
    "SupportsPrefixCleanup",
]


class Entry(NamedTuple):
    """A live item with its expiry, as `SupportsEntries.get_entry` returns it."""

    value: Any
    """The stored value (a fresh copy)."""
    expires_at: float | None
    """When the item expires, in seconds since the epoch (millisecond precision); None
    when it never expires."""


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
class SupportsJSONText(Protocol):
    """Values as JSON text, for a caller that encodes and decodes them itself.

    The session layer validates each value when the app assigns it, so it can hand the
    driver text it already holds, and decode what it reads only when the app reads it:
    each request then encodes and decodes a session once at most. The texts passed in
    must be JSON the caller produced with sqlsession's own encoder (``_codec.encode``):
    the driver stores them as they are. ``ttl`` follows the rule of `SupportsMerge`.
    """

    async def get_text(self, key: str) -> str | None:
        """The JSON text of the live item `key` (None when absent or expired).

        The text is what the database returns for it: equal as JSON to what was
        written, not always byte for byte (PostgreSQL's jsonb, say, reorders keys).
        """

    async def set_text(self, key: str, text: str, *, ttl: float | None = ...) -> None:
        """Store the JSON text `text` under `key`, as `set_item` stores a value."""

    async def merge_existing_text(
        self,
        key: str,
        set: Mapping[str, str] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: float | None = ...,
    ) -> bool:
        """`SupportsMergeExisting.merge_existing` with each value in `set` as JSON text.

        Applies `set` (a name to the JSON text of its new value) and `delete` to the
        live dict stored under `key`, atomically, as ``merge_existing`` does.

        Returns:
            Whether a live item `key` existed (False: nothing was written).
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


@runtime_checkable
class SupportsEntries(Protocol):
    """Reading an item together with its expiry, optionally renewing it in the same step.

    What a key-value store needs for its ``ttl(key)`` or ``expires_in(key)``: the
    expiry is the one the driver stores, so it is exact after `touch`, ``merge_item``
    and ``set_item`` by any client, and nothing is wrapped around the value.
    """

    async def get_entry(self, key: str, *, renew: float | None = None) -> Entry | None:
        """The live item `key` with its expiry; None when absent or expired.

        Args:
            key: the key.
            renew: when given, an item that has an expiry gets now + `renew` seconds in
                the same atomic step (an item without expiry keeps none), and the
                returned entry carries the new expiry. Litestar's ``renew_for``.
        """

    async def get_entries(self, keys: Iterable[str]) -> dict[str, Entry]:
        """The live items among `keys` with their expiries; absent ones are left out."""


@runtime_checkable
class SupportsDeleteItem(Protocol):
    """Deleting an item and learning whether it was there.

    ``remove_item`` of the base contract returns None, so a driver that reports stays
    compatible with it by offering this second method.
    """

    async def delete_item(self, key: str) -> bool:
        """Delete the live item `key`; True when this call deleted it.

        Of several concurrent calls for one live item, exactly one returns True. An
        expired item counts as absent (False); its row is left to cleanup.
        """


@runtime_checkable
class SupportsMany(Protocol):
    """Reading, writing and deleting several items in one step each.

    A driver that is also `SupportsExpiry` accepts ``ttl=`` on `set_many`.
    """

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of the live items among `keys`; absent ones are left out."""

    async def set_many(self, items: Mapping[str, Any], *, ttl: float | None = ...) -> None:
        """Store every item of `items` atomically (all or none), with one `ttl`."""

    async def remove_many(self, keys: Iterable[str]) -> int:
        """Delete the live items among `keys`; return how many were live.

        Expired rows count as absent and are left to cleanup.
        """


@runtime_checkable
class SupportsAddItem(Protocol):
    """Put-if-absent."""

    async def add_item(self, key: str, value: Any, *, ttl: float | None = ...) -> bool:
        """Store `value` under `key` only when no live item is there, atomically.

        An expired item counts as absent and is replaced.

        Returns:
            True when this call wrote; of concurrent calls for one absent key, exactly
            one does.
        """


@runtime_checkable
class SupportsPrefixCleanup(Protocol):
    """`SupportsCleanup` limited to keys with a prefix (one namespace of a shared table).

    ``isinstance`` cannot tell it from `SupportsCleanup` (same method name); the
    built-in drivers have it, and so does every driver that is `SupportsEntries`.
    """

    async def cleanup(self, prefix: str = "") -> int:
        """Delete the expired items whose key starts with `prefix`; return how many."""
