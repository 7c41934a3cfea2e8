"""A py-key-value `AsyncKeyValue` store over any sqlsession driver.

py-key-value (``pip install 'sqlsession-store[keyvalue]'``, package ``py-key-value-aio``)
gives libraries one async key-value interface with many backends; this is one more, in
the same table as sqlsession's own sessions, with migrations and expired-row cleanup::

    from sqlsession import load_driver, session_drivers
    from sqlsession.keyvalue import SQLSessionKeyValue

    store = SQLSessionKeyValue(load_driver(session_drivers.sql(url="sqlite:///kv.db")))
    await store.put("user-1", {"name": "Ada"}, collection="users", ttl=3600)
    value, ttl = await store.ttl("user-1", collection="users")

Every method is one call on the driver (one statement, or one short transaction, on the
SQL driver). The expiry is the driver's own, so `ttl` is exact after a ``touch`` or a
write by any other client, and values are stored as they are, with no envelope.

The store follows the protocol structurally; importing this module does not import
py-key-value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, SupportsFloat

from ._adapters import check_namespace, require
from .driver import (
    SupportsAddItem,
    SupportsClear,
    SupportsDeleteItem,
    SupportsEntries,
    SupportsExpiry,
    SupportsKeys,
    SupportsMany,
    SupportsPrefixCleanup,
)
from .errors import InvalidKeyError, InvalidTTLError, ValueNotSerializableError

__all__ = ["DEFAULT_COLLECTION", "SQLSessionKeyValue"]

DEFAULT_COLLECTION = "default_collection"
"""The collection of a call without one (py-key-value's own default name)."""
_SEPARATOR = ":"


class SQLSessionKeyValue:
    """py-key-value's `AsyncKeyValue` (and its keys, cull and destroy-collection
    segments) on a sqlsession driver.

    Items are stored under ``<namespace>:<collection>:<key>``, so collections are key
    prefixes of one table: the whole stored key is at most 255 characters (the driver
    refuses longer ones with `InvalidKeyError`), and a collection name may not contain
    ``:``. Values are dicts with str keys, stored as JSON; a value that is not JSON
    raises `ValueNotSerializableError` and writes nothing.

    Args:
        driver: a sqlsession driver with per-item expiry, entries, bulk operations,
            `delete_item`, `add_item`, `get_keys`, `clear` and ``cleanup(prefix=...)``
            (the built-in drivers have them all). The store does not dispose it.
        namespace: the key prefix of this store (None: keys start with the collection).
        default_collection: the collection of calls that name none.
        clock: seconds since the epoch, for the remaining ttl; pass the driver's own
            clock when it has one of its own (tests).

    Raises:
        ConfigError: the driver lacks an operation the store needs.
        InvalidKeyError: `namespace` or `default_collection` is empty or has a ``:``.
    """

    def __init__(
        self,
        driver: Any,
        *,
        namespace: str | None = "keyvalue",
        default_collection: str = DEFAULT_COLLECTION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        require(
            driver,
            "SQLSessionKeyValue",
            SupportsExpiry,
            SupportsEntries,
            SupportsMany,
            SupportsDeleteItem,
            SupportsAddItem,
            SupportsKeys,
            SupportsClear,
            SupportsPrefixCleanup,
        )
        if namespace is not None:
            check_namespace(namespace, what="key-value namespace", separator=_SEPARATOR)
        self._driver = driver
        self.namespace = namespace
        self._prefix = "" if namespace is None else namespace + _SEPARATOR
        self.default_collection = check_namespace(
            default_collection, what="collection", separator=_SEPARATOR
        )
        self._clock = clock

    # -- AsyncKeyValueProtocol ------------------------------------------------------------

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        """The value of `key` in `collection`, or None when absent or expired."""
        stored = await self._driver.get_item(self._key(collection, key))
        return _as_dict(key, stored)

    async def ttl(
        self, key: str, *, collection: str | None = None
    ) -> tuple[dict[str, Any] | None, float | None]:
        """The value of `key` and its remaining seconds (None: never expires);
        ``(None, None)`` when absent or expired."""
        entry = await self._driver.get_entry(self._key(collection, key))
        if entry is None:
            return None, None
        return _as_dict(key, entry.value), self._remaining(entry.expires_at)

    async def put(
        self,
        key: str,
        value: Mapping[str, Any],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """Store `value` under `key`, expiring after `ttl` seconds (None: never)."""
        await self._driver.set_item(
            self._key(collection, key), _to_dict(key, value), ttl=_seconds(ttl)
        )

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        """Delete `key`; True when it was there (of concurrent deletes, exactly one)."""
        return bool(await self._driver.delete_item(self._key(collection, key)))

    async def get_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[dict[str, Any] | None]:
        """The values of `keys`, in their order (None for absent or expired ones)."""
        stored = await self._driver.get_many(self._keys(collection, keys))
        return [_as_dict(key, stored.get(self._key(collection, key))) for key in keys]

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        """`ttl` for each of `keys`, in their order, read in one statement."""
        entries = await self._driver.get_entries(self._keys(collection, keys))
        result: list[tuple[dict[str, Any] | None, float | None]] = []
        for key in keys:
            entry = entries.get(self._key(collection, key))
            if entry is None:
                result.append((None, None))
            else:
                result.append((_as_dict(key, entry.value), self._remaining(entry.expires_at)))
        return result

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """Store every value under its key, all or none, with one `ttl`.

        Raises:
            InvalidKeyError: `keys` and `values` differ in length (nothing is written).
        """
        if len(keys) != len(values):
            raise InvalidKeyError(
                f"put_many got {len(keys)} keys and {len(values)} values; give one value per key."
            )
        items = {
            self._key(collection, key): _to_dict(key, value)
            for key, value in zip(keys, values, strict=True)
        }
        await self._driver.set_many(items, ttl=_seconds(ttl))

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        """Delete `keys`; return how many were there."""
        count: int = await self._driver.remove_many(self._keys(collection, keys))
        return count

    # -- beyond the base protocol ---------------------------------------------------------

    async def put_if_absent(
        self,
        key: str,
        value: Mapping[str, Any],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> bool:
        """Store `value` only when `key` is absent or expired, atomically.

        Returns:
            True when this call wrote (of concurrent calls, exactly one).
        """
        added: bool = await self._driver.add_item(
            self._key(collection, key), _to_dict(key, value), ttl=_seconds(ttl)
        )
        return added

    async def keys(self, collection: str | None = None, *, limit: int | None = None) -> list[str]:
        """The live keys of `collection`, sorted (at most `limit`)."""
        prefix = self._collection_prefix(collection)
        stored: list[str] = await self._driver.get_keys(prefix)
        found = [key[len(prefix) :] for key in stored]
        return found if limit is None else found[:limit]

    async def destroy_collection(self, collection: str) -> bool:
        """Delete every item of `collection`; returns True."""
        await self._driver.clear(self._collection_prefix(collection))
        return True

    async def cull(self) -> None:
        """Delete the expired rows of this store (every collection; nothing outside)."""
        if self._prefix:
            await self._driver.cleanup(prefix=self._prefix)
        else:
            await self._driver.cleanup()

    # -- internals ------------------------------------------------------------------------

    def _collection_prefix(self, collection: str | None) -> str:
        if collection is None:
            collection = self.default_collection
        else:
            check_namespace(collection, what="collection", separator=_SEPARATOR)
        return self._prefix + collection + _SEPARATOR

    def _key(self, collection: str | None, key: str) -> str:
        if type(key) is not str:
            raise InvalidKeyError(f"A key must be a str, got {type(key).__name__}.")
        return self._collection_prefix(collection) + key

    def _keys(self, collection: str | None, keys: Sequence[str]) -> list[str]:
        if isinstance(keys, str):
            raise InvalidKeyError("keys must be a sequence of str keys, got a single str.")
        return [self._key(collection, key) for key in keys]

    def _remaining(self, expires_at: float | None) -> float | None:
        return None if expires_at is None else expires_at - self._clock()

    def __repr__(self) -> str:
        return (
            f"SQLSessionKeyValue(namespace={self.namespace!r}, "
            f"driver={type(self._driver).__name__})"
        )


def _seconds(ttl: SupportsFloat | None) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not hasattr(ttl, "__float__"):
        raise InvalidTTLError(f"ttl must be a number of seconds or None, got {type(ttl).__name__}.")
    return float(ttl)


def _to_dict(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueNotSerializableError(
            f"A py-key-value value is a mapping of str keys, got {type(value).__name__}."
        )
    return dict(value)


def _as_dict(key: str, stored: Any) -> dict[str, Any] | None:
    if stored is None:
        return None
    if isinstance(stored, dict):
        return dict(stored)  # a list of results may name one key twice
    raise ValueNotSerializableError(
        f"The item under key {key!r} holds a {type(stored).__name__}, not the dict "
        "py-key-value reads; another client stored it."
    )
