"""A Litestar `Store` over any sqlsession driver: server-side sessions, caching, rate limits.

Each store call is one driver call, and each such call is one statement (or one short
transaction) on the SQL driver, so a namespace shares one table with the app's other
stores and with sqlsession's own sessions::

    from litestar import Litestar
    from litestar.middleware.session.server_side import ServerSideSessionConfig
    from sqlsession import load_driver, session_drivers
    from sqlsession.litestar import SQLSessionStore

    driver = load_driver(session_drivers.sql(url="postgresql://app@db/app"))
    root = SQLSessionStore(driver)
    app = Litestar(
        middleware=[ServerSideSessionConfig().middleware],
        stores={"sessions": root.with_namespace("sessions")},
        on_shutdown=[driver.dispose],
    )

Needs ``pip install 'sqlsession-store[litestar]'``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ._adapters import check_namespace, missing_extra, require
from .driver import (
    SupportsClear,
    SupportsEntries,
    SupportsExpiry,
    SupportsHasItem,
    SupportsPrefixCleanup,
)
from .errors import ConfigError, ValueNotSerializableError

try:
    from litestar.stores.base import NamespacedStore
except ImportError as exc:  # pragma: no cover - the extra is part of [dev]
    raise missing_extra(exc, "litestar", "litestar") from exc

__all__ = ["SQLSessionStore"]

_SEPARATOR = ":"
_BINARY = "base64"


class SQLSessionStore(NamespacedStore):
    """Litestar's `NamespacedStore` on a sqlsession driver.

    Keys are stored as ``<namespace>:<key>``; `with_namespace` gives a child store whose
    namespace is ``<namespace>:<child>``, so `delete_all` and `delete_expired` on a
    store reach its children too, and nothing outside. As with Litestar's `RedisStore`,
    a key of the parent that itself looks like ``<child>:<key>`` is the child's key.

    Values: Litestar hands stores bytes. Bytes that are UTF-8 text (what Litestar's
    session middleware and response cache write: JSON, msgpack aside) are stored as a
    JSON string, readable by any sqlsession client; other bytes are stored as
    ``{"base64": "..."}``. A value another client stored (a dict, a number) reads as
    its compact JSON encoding.

    Args:
        driver: a sqlsession driver with per-item expiry, `get_entry`, `has_item`,
            `clear` and ``cleanup(prefix=...)`` (the built-in drivers have them all).
            The store does not dispose it.
        namespace: the key prefix of this store; None stores keys as they are (and
            then `delete_all` is refused: it would empty the whole table).
        clock: seconds since the epoch, for `expires_in`; pass the driver's own clock
            when it has one of its own (tests).

    Raises:
        ConfigError: the driver lacks an operation the store needs.
        InvalidKeyError: `namespace` is empty or contains ``:``.
    """

    __slots__ = ("_clock", "_driver", "_prefix")

    def __init__(
        self,
        driver: Any,
        namespace: str | None = "litestar",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        require(
            driver,
            "SQLSessionStore",
            SupportsExpiry,
            SupportsEntries,
            SupportsHasItem,
            SupportsClear,
            SupportsPrefixCleanup,
        )
        if namespace is not None:
            for part in namespace.split(_SEPARATOR):
                check_namespace(part, what="Litestar store namespace", separator=_SEPARATOR)
        self._driver = driver
        self.namespace = namespace
        self._prefix = "" if namespace is None else namespace + _SEPARATOR
        self._clock = clock

    def with_namespace(self, namespace: str) -> SQLSessionStore:
        """A store for the child namespace `namespace` on the same driver."""
        check_namespace(namespace, what="Litestar store namespace", separator=_SEPARATOR)
        child = namespace if self.namespace is None else self._prefix + namespace
        return SQLSessionStore(self._driver, child, clock=self._clock)

    async def set(
        self, key: str, value: str | bytes, expires_in: int | timedelta | None = None
    ) -> None:
        """Store `value` under `key`, expiring after `expires_in` (None or 0: never)."""
        await self._driver.set_item(self._key(key), _encode(value), ttl=_seconds(expires_in))

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        """The value of `key`, or None when absent or expired.

        With `renew_for`, a value that has an expiry gets now + `renew_for`, in the same
        statement as the read.
        """
        renew = _seconds(renew_for)
        if renew is None:
            stored = await self._driver.get_item(self._key(key))
            return None if stored is None else _decode(stored)
        entry = await self._driver.get_entry(self._key(key), renew=renew)
        return None if entry is None else _decode(entry.value)

    async def delete(self, key: str) -> None:
        """Delete `key`; an absent key is not an error."""
        await self._driver.remove_item(self._key(key))

    async def delete_all(self) -> None:
        """Delete every value of this namespace and its children.

        Raises:
            ConfigError: the store has no namespace (it would empty the whole table).
        """
        if self.namespace is None:
            raise ConfigError(
                "delete_all() on a SQLSessionStore without a namespace would delete every "
                "row of the table; give the store a namespace."
            )
        await self._driver.clear(self._prefix)

    async def delete_expired(self) -> int:
        """Delete the expired values of this namespace and its children; return how many."""
        count: int = await self._driver.cleanup(prefix=self._prefix)
        return count

    async def exists(self, key: str) -> bool:
        """Whether a live value is stored under `key`."""
        return bool(await self._driver.has_item(self._key(key)))

    async def expires_in(self, key: str) -> int | None:
        """Seconds until `key` expires, rounded up; -1 when it never expires; None when
        there is no live `key`."""
        entry = await self._driver.get_entry(self._key(key))
        if entry is None:
            return None
        if entry.expires_at is None:
            return -1
        # Rounded up, so a live value never reports 0 (or the -1 of "no expiry").
        remaining: float = entry.expires_at - self._clock()
        return max(1, math.ceil(remaining))

    def _key(self, key: str) -> str:
        return self._prefix + key

    def __repr__(self) -> str:
        return (
            f"SQLSessionStore(namespace={self.namespace!r}, driver={type(self._driver).__name__})"
        )


def _seconds(value: int | float | timedelta | None) -> float | None:
    """Litestar's ``expires_in``/``renew_for`` as seconds; None and 0 mean none."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return value or None


def _encode(value: str | bytes) -> Any:
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ValueNotSerializableError(
            f"A Litestar store value is str or bytes, got {type(value).__name__}."
        )
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return {_BINARY: base64.b64encode(value).decode("ascii")}


def _decode(stored: Any) -> bytes:
    if isinstance(stored, str):
        return stored.encode("utf-8")
    if isinstance(stored, dict) and len(stored) == 1 and isinstance(stored.get(_BINARY), str):
        try:
            return base64.b64decode(stored[_BINARY], validate=True)
        except binascii.Error:
            pass  # not ours: read it as the JSON it is
    return json.dumps(stored, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
