"""A third party's driver, as its author would write it: one JSON file, no base class of ours.

It keeps every item in one file, rewritten whole (and atomically, through a temporary
file) on each change: fine for a test or a single process, not for production. It
imports nothing from sqlsession but `Entry` (what `get_entry` returns) and the error it
raises for a stored value that is not a dict (what `merge_item` and `merge_existing` must
say), and it implements every optional capability of `sqlsession.driver`, so the whole of
`sqlsession.testing.DriverContract` applies to it (see `tests/test_example_driver.py`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlsession import Entry
from sqlsession.errors import ValueNotSerializableError

_DEFAULT: Any = object()


class JsonFileDriver:
    """Items in one JSON file: ``{key: [value, expires_at_ms or null]}``.

    Args:
        path: the file (created on the first write).
        ttl: the default lifetime in seconds (None: no expiry).
        clock: returns seconds since the epoch.
    """

    def __init__(
        self,
        path: Path,
        *,
        ttl: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.ttl = ttl
        self.clock = clock

    # The methods are coroutines, but none awaits between reading and writing the file,
    # so on one event loop each operation is atomic.
    def _read(self) -> dict[str, list[Any]]:
        if not self.path.exists():
            return {}
        items: dict[str, list[Any]] = json.loads(self.path.read_text(encoding="utf-8"))
        return items

    def _write(self, items: dict[str, list[Any]]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(items, allow_nan=False), encoding="utf-8")
        os.replace(temporary, self.path)

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    def _expires_at(self, ttl: Any) -> int | None:
        seconds = self.ttl if ttl is _DEFAULT else ttl
        return None if seconds is None else round((self.clock() + seconds) * 1000)

    def _live(self, items: dict[str, list[Any]], key: str) -> list[Any] | None:
        item = items.get(key)
        if item is None or (item[1] is not None and item[1] <= self._now_ms()):
            return None
        return item

    async def get_item(self, key: str) -> Any:
        item = self._live(self._read(), key)
        return None if item is None else item[0]

    async def set_item(self, key: str, value: Any, *, ttl: Any = _DEFAULT) -> None:
        items = self._read()
        items[key] = [value, self._expires_at(ttl)]
        self._write(items)

    async def remove_item(self, key: str) -> None:
        items = self._read()
        if items.pop(key, None) is not None:
            self._write(items)

    async def has_item(self, key: str) -> bool:
        return self._live(self._read(), key) is not None

    async def get_keys(self, prefix: str = "") -> list[str]:
        items = self._read()
        return sorted(k for k in items if k.startswith(prefix) and self._live(items, k))

    async def touch(self, key: str, ttl: Any = _DEFAULT) -> bool:
        items = self._read()
        item = self._live(items, key)
        if item is None:
            return False
        item[1] = self._expires_at(ttl)
        self._write(items)
        return True

    async def merge_item(
        self,
        key: str,
        set: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: Any = _DEFAULT,
    ) -> dict[str, Any]:
        merged = self._merge(key, set, delete, ttl, create=True)
        assert merged is not None  # an absent item starts from {}
        return merged

    async def merge_existing(
        self,
        key: str,
        set: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: Any = _DEFAULT,
    ) -> dict[str, Any] | None:
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
        items = self._read()
        item = self._live(items, key)
        if item is None and not create:
            return None  # absent, expired or removed: nothing is written
        current = {} if item is None else item[0]
        if not isinstance(current, dict):
            raise ValueNotSerializableError(
                f"merge_item needs a dict under {key!r}, found {type(current).__name__}."
            )
        for name in delete:
            current.pop(name, None)
        current.update(set or {})
        items[key] = [current, self._expires_at(ttl)]
        self._write(items)
        return dict(current)

    # JSON text: this driver stores decoded values, so text is decoded on the way in.
    async def get_text(self, key: str) -> str | None:
        item = self._live(self._read(), key)
        return None if item is None else json.dumps(item[0], allow_nan=False)

    async def set_text(self, key: str, text: str, *, ttl: Any = _DEFAULT) -> None:
        await self.set_item(key, json.loads(_text(key, text)), ttl=ttl)

    async def merge_existing_text(
        self,
        key: str,
        set: Mapping[str, str] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: Any = _DEFAULT,
    ) -> bool:
        values = {name: json.loads(_text(key, text)) for name, text in (set or {}).items()}
        return self._merge(key, values, delete, ttl, create=False) is not None

    async def clear(self, prefix: str = "") -> None:
        self._write({k: v for k, v in self._read().items() if not k.startswith(prefix)})

    async def cleanup(self, prefix: str = "") -> int:
        items = self._read()
        kept = {k: v for k, v in items.items() if not k.startswith(prefix) or self._live(items, k)}
        self._write(kept)
        return len(items) - len(kept)

    # -- the store operations ---------------------------------------------------------

    def _entry(self, item: list[Any]) -> Entry:
        return Entry(item[0], None if item[1] is None else item[1] / 1000)

    async def get_entry(self, key: str, *, renew: float | None = None) -> Entry | None:
        items = self._read()
        item = self._live(items, key)
        if item is None:
            return None
        if renew is not None and item[1] is not None:
            item[1] = self._expires_at(renew)
            self._write(items)
        return self._entry(item)

    async def get_entries(self, keys: Iterable[str]) -> dict[str, Entry]:
        items = self._read()
        found = {key: self._live(items, key) for key in keys}
        return {key: self._entry(item) for key, item in found.items() if item is not None}

    async def delete_item(self, key: str) -> bool:
        items = self._read()
        live = self._live(items, key) is not None
        if items.pop(key, None) is not None:
            self._write(items)
        return live

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return {key: entry.value for key, entry in (await self.get_entries(keys)).items()}

    async def set_many(self, values: Mapping[str, Any], *, ttl: Any = _DEFAULT) -> None:
        items = self._read()
        expires_at = self._expires_at(ttl)
        items.update({key: [value, expires_at] for key, value in values.items()})
        self._write(items)

    async def remove_many(self, keys: Iterable[str]) -> int:
        items = self._read()
        removed = 0
        for key in set(keys):
            removed += self._live(items, key) is not None
            items.pop(key, None)
        self._write(items)
        return removed

    async def add_item(self, key: str, value: Any, *, ttl: Any = _DEFAULT) -> bool:
        items = self._read()
        if self._live(items, key) is not None:
            return False
        items[key] = [value, self._expires_at(ttl)]
        self._write(items)
        return True

    async def dispose(self) -> None:
        self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)


def _text(key: str, text: Any) -> str:
    if type(text) is not str:
        raise ValueNotSerializableError(f"JSON text for {key!r} must be a str.")
    return text


def create_driver(config: dict[str, Any]) -> JsonFileDriver:
    """The factory `sqlsession.load_driver` calls: ``config`` holds ``path`` and ``ttl``."""
    return JsonFileDriver(Path(config.get("path", "sessions.json")), ttl=config.get("ttl"))
