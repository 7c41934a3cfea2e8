"""The stored format: a session's row, and a user's generation token, as driver values.

A session is one driver item under ``"s:" + sha256(id)``, a dict laid out flat so that
an atomic ``merge_item`` can change one session key without rewriting the others::

    {
        "created": 1700000000000,          # ms since the epoch; max_age counts from here
        "seen": 1700000100000,             # ms; last write, idle_timeout counts from here
        "user": ["u:<sha256>", "<token>"], # optional, see Session.bind_user()
        "dev": {"l": "<label>", "ua": "...", "ip": "203.0.113.0/24"},  # bound only, see devices
        "ma": 86400000,                    # optional, ms: Session.set_max_age() (0: browser)
        "k:cart": {"v": [1, 2]},           # one entry per session key ...
        "k:flash": {"v": "hi", "e": 1700000130000},  # ... "e": per-key expiry in ms
    }

A user bound with ``bind_user`` has one item under ``"u:" + sha256(user id)``,
``{"g": "<token>"}``: replacing the token ends every session bound to the old one.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import _codec
from ..errors import InvalidKeyError, ValueNotSerializableError

Entry = tuple[str, "int | None"]
"""One session key's value as JSON text, and its expiry in ms since the epoch (or None)."""

_KEY = "k:"
# How many containers the row adds around a value: the row itself and the entry.
_ROW_DEPTH = 2
VALUE_MAX_DEPTH = _codec.MAX_DEPTH - _ROW_DEPTH
"""How deeply a session value may nest, so that its row stays within `_codec.MAX_DEPTH`."""


def check_name(name: str) -> str:
    """Return the session key `name` if its row can hold it, else raise `InvalidKeyError`."""
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidKeyError(
                "Session key contains a lone surrogate, which is not valid Unicode text and "
                f"cannot be stored: {name!r}."
            ) from None
    return name


def encode_value(name: str, value: Any) -> str:
    """`value` as JSON text, refused by the rules its row will be written by at commit."""
    return _codec.encode(name, value, max_depth=VALUE_MAX_DEPTH)


def _byte_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def size(entries: Mapping[str, Entry]) -> int:
    """The bytes of a session's key names and JSON values (what ``max_size`` bounds)."""
    return sum(_byte_length(name) + _byte_length(text) for name, (text, _) in entries.items())


# No repr: the entries are the visitor's data, and reprs end up in logs.
@dataclass(frozen=True, repr=False)
class Row:
    """A stored session row, parsed."""

    created: int
    seen: int
    user: list[str] | None
    entries: dict[str, Entry]
    device: dict[str, str] | None = None
    """The session's device label and, opt-in, user agent and client network."""
    max_age: int | None = None
    """This session's own lifetime in ms (`Session.set_max_age`); 0: a browser session."""


def _is_int(value: Any) -> bool:
    return type(value) is int


def parse(raw: Any) -> Row | None:
    """The stored session row `raw`, or None if it is not one sqlsession wrote."""
    if not isinstance(raw, dict) or not _is_int(raw.get("created")) or not _is_int(raw.get("seen")):
        return None
    user = raw.get("user")
    if user is not None and not (
        isinstance(user, list) and len(user) == 2 and all(type(u) is str for u in user)
    ):
        return None
    entries: dict[str, Entry] = {}
    for name, entry in raw.items():
        if not name.startswith(_KEY):
            continue
        if not isinstance(entry, dict) or "v" not in entry:
            return None
        expires = entry.get("e")
        if expires is not None and not _is_int(expires):
            return None
        try:
            text = _codec.encode(name, entry["v"])
        except ValueNotSerializableError:  # NaN or Infinity: decodable, but not ours
            return None
        entries[name[len(_KEY) :]] = (text, expires)
    extras = _extras(raw)
    if extras is None:
        return None
    return Row(raw["created"], raw["seen"], user, entries, *extras)


def _extras(raw: dict[str, Any]) -> tuple[dict[str, str] | None, int | None] | None:
    """The row's "dev" and "ma" (see `Row`), or None when either is not ours."""
    device = raw.get("dev")
    if device is not None and not (
        isinstance(device, dict) and all(type(v) is str for v in device.values())
    ):
        return None
    max_age = raw.get("ma")
    if max_age is not None and not (_is_int(max_age) and max_age >= 0):
        return None
    return device, max_age


def _entry_value(entry: Entry) -> dict[str, Any]:
    value: dict[str, Any] = {"v": _codec.decode(entry[0])}
    if entry[1] is not None:
        value["e"] = entry[1]
    return value


def build(
    created: int,
    seen: int,
    user: list[str] | None,
    entries: Mapping[str, Entry],
    *,
    device: dict[str, str] | None = None,
    max_age: int | None = None,
) -> dict[str, Any]:
    """The whole row to store for a session."""
    row: dict[str, Any] = {"created": created, "seen": seen}
    if user is not None:
        row["user"] = user
    if device is not None:
        row["dev"] = device
    if max_age is not None:
        row["ma"] = max_age
    for name, entry in entries.items():
        row[_KEY + name] = _entry_value(entry)
    return row


def changes(
    seen: int, changed: Mapping[str, Entry], deleted: Iterable[str]
) -> tuple[dict[str, Any], list[str]]:
    """The row's items to set and the names to delete, for ``merge_item(set=, delete=)``."""
    updates: dict[str, Any] = {_KEY + n: _entry_value(e) for n, e in changed.items()}
    # Every write is activity: "seen" and the row's expiry always move together.
    updates["seen"] = seen
    return updates, sorted(_KEY + n for n in deleted)


def new_generation() -> dict[str, Any]:
    """A user's generation item with a fresh token.

    A random token, not a counter: no read-increment race, and a session bound to an
    older token can never match again.
    """
    return {"g": secrets.token_urlsafe(16)}


def generation_token(value: Any) -> str | None:
    """The token in a user's generation item (None when there is none).

    No item means no `sign_out_everywhere` is in force for the user: every session
    bound to them is valid. An item lives as long as the longest session it can end
    (see `SessionStore.commit`), so by the time it expires, every session bound before
    it has expired too.
    """
    if isinstance(value, dict) and isinstance(value.get("g"), str):
        return str(value["g"])
    return None
