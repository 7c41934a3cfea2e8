"""What the built-in drivers share: the ttl default marker, clock and expiry arithmetic."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, TypeVar

from .. import _codec, _validate
from ..errors import InvalidKeyError, ValueNotSerializableError

Clock = Callable[[], float]
"""Returns the current time as seconds since the Unix epoch (``time.time``)."""


class _Default:
    """The type of `DEFAULT`: "use the driver's configured ttl"."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default()


def to_ms(seconds: float) -> int:
    """Seconds since the epoch as whole milliseconds, the unit stored in ``expires_at``."""
    return round(seconds * 1000)


_D = TypeVar("_D", bound="Disposable")


class Disposable:
    """``async with driver:`` disposes the driver on the way out."""

    async def dispose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: _D) -> _D:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()


class ExpiryMixin(Disposable):
    """Default ttl and clock handling for a driver; `expires_at` is in milliseconds."""

    def __init__(self, ttl: float | None, clock: Clock | None) -> None:
        self.ttl = _validate.check_ttl(ttl)
        self._clock: Clock = clock if clock is not None else time.time

    def _now_ms(self) -> int:
        return to_ms(self._clock())

    def _renewal(self, renew: Any) -> int | None:
        """The new expiry `get_entry(renew=...)` gives an item that has one (None: no renewal)."""
        seconds = None if renew is None else _validate.check_ttl(renew, what="renew")
        return None if seconds is None else to_ms(self._clock() + seconds)

    def _expires_at(self, ttl: Any) -> int | None:
        """The expiry instant for a write with `ttl` (DEFAULT: the driver's own)."""
        seconds = self.ttl if ttl is DEFAULT else _validate.check_ttl(ttl)
        return None if seconds is None else to_ms(self._clock() + seconds)


MAX_MANY: Final = 5000
"""The most keys one bulk operation takes (databases cap the parameters of a statement)."""


def check_keys(keys: Any, *, what: str) -> list[str]:
    """Validate the keys of a bulk operation; duplicates are dropped, order is kept."""
    if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
        raise InvalidKeyError(
            f"{what} takes an iterable of str keys, got {type(keys).__name__}; wrap a "
            "single key in a list."
        )
    checked = list(dict.fromkeys(_validate.check_key(key) for key in keys))
    if len(checked) > MAX_MANY:
        raise InvalidKeyError(
            f"{what} takes at most {MAX_MANY} keys per call, got {len(checked)}; split "
            "them into several calls."
        )
    return checked


def encode_many(items: Any) -> dict[str, str]:
    """Validate and encode the items of `set_many` before anything is written."""
    if not isinstance(items, Mapping):
        raise ValueNotSerializableError(
            f"set_many takes a mapping of keys to values, got {type(items).__name__}."
        )
    check_keys(items.keys(), what="set_many")
    return {key: _codec.encode(key, value) for key, value in items.items()}


def from_ms(expires_at: int | None) -> float | None:
    """A stored ``expires_at`` (ms, NULL: never) as `Entry.expires_at` (seconds or None)."""
    return None if expires_at is None else expires_at / 1000


def check_text(key: str, text: Any) -> str:
    """`text` if it is a str: `SupportsJSONText` takes JSON text its caller encoded."""
    if type(text) is not str:
        raise ValueNotSerializableError(
            f"JSON text for session key {key!r} must be a str, got {type(text).__name__}."
        )
    return text


def prepare_merge(
    key: str, changes: Mapping[str, Any] | None, delete: Iterable[str]
) -> tuple[dict[str, Any], list[str]]:
    """Validate `merge_item`'s arguments before anything is read or written."""
    _validate.check_key(key)
    if changes is not None and not isinstance(changes, Mapping):
        raise ValueNotSerializableError(
            f"merge_item(set=...) for session key {key!r} must be a mapping of str keys, got "
            f"{type(changes).__name__}."
        )
    removals = check_removals(key, delete)
    changed = dict(changes or {})
    _codec.encode(key, changed)
    return changed, removals


def check_removals(key: str, delete: Iterable[str]) -> list[str]:
    """A merge's `delete` argument as a list of str names, or `ValueNotSerializableError`."""
    if isinstance(delete, str | bytes):
        raise ValueNotSerializableError(
            f"merge_item(delete=...) for session key {key!r} must be a list of str keys, got "
            f"the single {type(delete).__name__} {delete!r}; wrap it in a list."
        )
    removals = list(delete)
    for name in removals:
        if type(name) is not str:
            raise ValueNotSerializableError(
                f"merge_item(delete=...) for session key {key!r} must hold str keys, got "
                f"{type(name).__name__}: {name!r}."
            )
    return removals


def apply_merge(
    key: str, stored: str | None, changes: dict[str, Any], removals: list[str]
) -> dict[str, Any]:
    """The value `merge_item` writes, given the stored JSON text (None: absent or expired)."""
    current = {} if stored is None else _codec.decode(stored, key)
    if not isinstance(current, dict):
        raise ValueNotSerializableError(
            f"merge_item needs a dict stored under session key {key!r}, found "
            f"{type(current).__name__}; use set_item to replace it."
        )
    for name in removals:
        current.pop(name, None)
    current.update(changes)
    return current
