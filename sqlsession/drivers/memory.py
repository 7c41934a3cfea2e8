"""An in-process LRU driver with the same contract as the SQL driver, for tests and development.

Values are stored as JSON text, so the same values are refused and what comes back is a
fresh copy, exactly as with the SQL driver.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from .. import _codec, _metrics, _validate
from ..driver import Entry
from ..errors import ValueNotSerializableError
from ._base import (
    DEFAULT,
    Clock,
    ExpiryMixin,
    apply_merge,
    check_keys,
    check_text,
    encode_many,
    from_ms,
    prepare_merge,
)
from ._splice import Spliced, splice

__all__ = ["MemoryDriver", "create_driver"]


class MemoryDriver(ExpiryMixin):
    """Keeps at most `max` items in this process; the least recently used goes first.

    Args:
        max: the most items kept.
        ttl: default lifetime in seconds (None: no expiry).
        clock: returns seconds since the epoch; tests pass a fake one to move time.
    """

    def __init__(
        self, max: int = 500, *, ttl: float | None = None, clock: Clock | None = None
    ) -> None:
        super().__init__(ttl, clock)
        self.max = _validate.check_positive_int(max, what="max")
        self._items: OrderedDict[str, tuple[str, int | None]] = OrderedDict()
        # How merge_existing_text built an item's text, valid while that text is stored
        # (checked by identity); as many as there may be items, the least recent dropped.
        self._spliced: OrderedDict[str, Spliced] = OrderedDict()
        _metrics.instrument(self, system="memory")

    def _live(self, key: str) -> tuple[str, int | None] | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires_at = item[1]
        if expires_at is not None and expires_at <= self._now_ms():
            return None
        self._items.move_to_end(key)
        return item

    def _store(self, key: str, text: str, expires_at: int | None) -> None:
        self._items[key] = (text, expires_at)
        self._items.move_to_end(key)
        while len(self._items) > self.max:
            self._items.popitem(last=False)

    async def get_item(self, key: str) -> Any:
        """Return the value under `key`, or None when it is absent or expired."""
        item = self._live(_validate.check_key(key))
        return None if item is None else _codec.decode(item[0], key)

    async def set_item(self, key: str, value: Any, *, ttl: Any = DEFAULT) -> None:
        """Store `value` under `key`; `ttl` overrides the default (None: no expiry)."""
        _validate.check_key(key)
        expires_at = self._expires_at(ttl)
        self._store(key, _codec.encode(key, value), expires_at)

    async def remove_item(self, key: str) -> None:
        """Delete `key`; an absent key is not an error."""
        self._items.pop(_validate.check_key(key), None)

    async def get_entry(self, key: str, *, renew: float | None = None) -> Entry | None:
        """The live item `key` with its expiry (None: absent or expired).

        `renew` gives an item that has an expiry now + `renew` seconds first.
        """
        _validate.check_key(key)
        renewed = self._renewal(renew)
        item = self._live(key)
        if item is None:
            return None
        if renewed is not None and item[1] is not None:
            item = self._items[key] = (item[0], renewed)
        return Entry(_codec.decode(item[0], key), from_ms(item[1]))

    async def get_entries(self, keys: Iterable[str]) -> dict[str, Entry]:
        """The live items among `keys` with their expiries; absent ones are left out."""
        found = {}
        for key in check_keys(keys, what="get_entries"):
            item = self._live(key)
            if item is not None:
                found[key] = Entry(_codec.decode(item[0], key), from_ms(item[1]))
        return found

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of the live items among `keys`; absent ones are left out."""
        found = {}
        for key in check_keys(keys, what="get_many"):
            item = self._live(key)
            if item is not None:
                found[key] = _codec.decode(item[0], key)
        return found

    async def set_many(self, items: Mapping[str, Any], *, ttl: Any = DEFAULT) -> None:
        """Store every item of `items` (all or none), with one `ttl`."""
        encoded = encode_many(items)
        expires_at = self._expires_at(ttl)
        for key, text in encoded.items():
            self._store(key, text, expires_at)

    async def remove_many(self, keys: Iterable[str]) -> int:
        """Delete the live items among `keys`; returns how many were live."""
        live = [key for key in check_keys(keys, what="remove_many") if self._live(key)]
        for key in live:
            del self._items[key]
        return len(live)

    async def delete_item(self, key: str) -> bool:
        """Delete the live item `key`; True when it was there."""
        if self._live(_validate.check_key(key)) is None:
            return False
        del self._items[key]
        return True

    async def add_item(self, key: str, value: Any, *, ttl: Any = DEFAULT) -> bool:
        """Store `value` under `key` unless a live item is there; True when written."""
        _validate.check_key(key)
        text = _codec.encode(key, value)
        expires_at = self._expires_at(ttl)
        if self._live(key) is not None:
            return False
        self._store(key, text, expires_at)
        return True

    async def has_item(self, key: str) -> bool:
        """Whether a live item is stored under `key` (also when its value is None)."""
        return self._live(_validate.check_key(key)) is not None

    async def get_keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with `prefix`, sorted."""
        prefix = _check_prefix(prefix)
        now = self._now_ms()
        return sorted(
            key
            for key, (_, expires_at) in self._items.items()
            if key.startswith(prefix) and (expires_at is None or expires_at > now)
        )

    async def touch(self, key: str, ttl: Any = DEFAULT) -> bool:
        """Set the expiry of a live `key` to now + `ttl`; False when absent or expired."""
        item = self._live(_validate.check_key(key))
        expires_at = self._expires_at(ttl)
        if item is None:
            return False
        self._items[key] = (item[0], expires_at)
        return True

    async def merge_item(
        self,
        key: str,
        set: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: Any = DEFAULT,
    ) -> dict[str, Any]:
        """Apply `set` and `delete` to the dict stored under `key` in one step.

        An absent or expired key starts from an empty dict. Returns the merged dict.

        Raises:
            ValueNotSerializableError: the stored value is not a dict, or `set` holds a
                value that is not JSON.
        """
        merged = self._merge(key, set, delete, ttl, create=True)
        assert merged is not None  # an absent item starts from {}
        return merged

    async def merge_existing(
        self,
        key: str,
        set: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: Any = DEFAULT,
    ) -> dict[str, Any] | None:
        """`merge_item` for an item that must exist: returns None, writing nothing, if not."""
        return self._merge(key, set, delete, ttl, create=False)

    def _merge(
        self,
        key: str,
        set: Mapping[str, Any] | None,
        delete: Iterable[str],
        ttl: Any,
        *,
        create: bool,
    ) -> dict[str, Any] | None:
        changes, removals = prepare_merge(key, set, delete)
        expires_at = self._expires_at(ttl)
        item = self._live(key)
        if item is None and not create:
            return None
        merged = apply_merge(key, None if item is None else item[0], changes, removals)
        self._store(key, _codec.encode(key, merged), expires_at)
        return merged

    async def get_text(self, key: str) -> str | None:
        """The JSON text stored under `key`, or None when it is absent or expired."""
        item = self._live(_validate.check_key(key))
        return None if item is None else item[0]

    async def set_text(self, key: str, text: str, *, ttl: Any = DEFAULT) -> None:
        """Store JSON text `text` (sqlsession's own encoding) under `key`."""
        _validate.check_key(key)
        self._store(key, check_text(key, text), self._expires_at(ttl))

    async def merge_existing_text(
        self,
        key: str,
        set: Mapping[str, str] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: Any = DEFAULT,
    ) -> bool:
        """`merge_existing` with each value in `set` as JSON text; whether the item was live.

        The texts are spliced in as they are (see `_splice`): a session's next merge of
        the same keys decodes and encodes nothing.
        """
        _validate.check_key(key)
        changes = _check_texts(key, set)
        names = _check_names(key, delete)
        expires_at = self._expires_at(ttl)
        item = self._live(key)
        if item is None:
            return False
        spliced = splice(key, item[0], self._spliced.pop(key, None), changes, names)
        self._store(key, spliced.text, expires_at)
        self._spliced[key] = spliced
        while len(self._spliced) > self.max:
            self._spliced.popitem(last=False)
        return True

    async def clear(self, prefix: str = "") -> None:
        """Delete every item whose key starts with `prefix` (all items by default)."""
        prefix = _check_prefix(prefix)
        for key in [k for k in self._items if k.startswith(prefix)]:
            del self._items[key]

    async def cleanup(self, prefix: str = "") -> int:
        """Delete expired items whose key starts with `prefix`; returns how many."""
        prefix = _check_prefix(prefix)
        now = self._now_ms()
        expired = [
            k
            for k, (_, exp) in self._items.items()
            if exp is not None and exp <= now and k.startswith(prefix)
        ]
        for key in expired:
            del self._items[key]
        return len(expired)

    async def dispose(self) -> None:
        """Drop every item; the driver stays usable."""
        self._items.clear()
        self._spliced.clear()


def _check_texts(key: str, texts: Mapping[str, str] | None) -> dict[str, str]:
    """`merge_existing_text`'s `set`: str names (valid Unicode) to str JSON texts."""
    if texts is not None and not isinstance(texts, Mapping):
        raise ValueNotSerializableError(
            f"merge_existing_text(set=...) for session key {key!r} must be a mapping of str "
            f"names to JSON texts, got {type(texts).__name__}."
        )
    checked: dict[str, str] = {}
    for name, text in (texts or {}).items():
        if type(name) is not str or not (name.isascii() or _is_unicode(name)):
            raise ValueNotSerializableError(
                f"merge_existing_text(set=...) for session key {key!r} must have str names "
                "that are valid Unicode."
            )
        checked[name] = check_text(key, text)
    return checked


def _check_names(key: str, delete: Iterable[str]) -> list[str]:
    """`merge_existing_text`'s `delete`: a list of str names."""
    names = [] if isinstance(delete, str | bytes) else list(delete)
    if isinstance(delete, str | bytes) or any(type(n) is not str for n in names):
        raise ValueNotSerializableError(
            f"merge_existing_text(delete=...) for session key {key!r} must be a list of str names."
        )
    return names


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_prefix(prefix: Any) -> str:
    return "" if prefix == "" else _validate.check_key(prefix)


def create_driver(config: dict[str, Any]) -> MemoryDriver:
    """The factory `load_driver` calls: ``config`` holds ``max`` and ``ttl``."""
    return MemoryDriver(max=config.get("max", 500), ttl=config.get("ttl"))
