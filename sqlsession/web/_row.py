"""The stored format: a session's row, and a user's generation token, as driver values.

A session is one driver item under ``"s:" + sha256(id)``, a dict laid out flat so that
an atomic ``merge_item`` can change one session key without rewriting the others::

    {
        "created": 1700000000000,          # ms since the epoch; max_age counts from here
        "seen": 1700000100000,             # ms; last write, idle_timeout counts from here
        "user": ["u:<sha256>", "<token>"], # optional, see Session.bind_user()
        "k:cart": {"v": [1, 2]},           # one entry per session key ...
        "k:flash": {"v": "hi", "e": 1700000130000},  # ... "e": per-key expiry in ms
        "k:note": {"c": "<token>"},        # a value encrypted at rest (see _crypto)
    }

A user bound with ``bind_user`` has one item under ``"u:" + sha256(user id)``,
``{"g": "<token>"}``: replacing the token ends every session bound to the old one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import _codec
from ..errors import InvalidKeyError, ValueNotSerializableError
from ._crypto import Sealed, as_sealed

Entry = tuple[str, "int | None"]
"""One session key's value as JSON text, and its expiry in ms since the epoch (or None).

The text is a `Sealed` token instead while an encrypted value has not been read."""

Seal = Callable[[str, str], str]
"""Encrypts the JSON text of the session key named first for its row (see `_crypto`)."""

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
    if type(text) is Sealed:
        return text.plain_size
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def size(entries: Mapping[str, Entry]) -> int:
    """The bytes of a session's key names and JSON values (what ``max_size`` bounds).

    An encrypted value counts as its JSON text, not its larger stored token.
    """
    return sum(_byte_length(name) + _byte_length(text) for name, (text, _) in entries.items())


# No repr: the entries are the visitor's data, and reprs end up in logs.
@dataclass(frozen=True, repr=False)
class Row:
    """A stored session row, parsed."""

    created: int
    seen: int
    user: list[str] | None
    entries: dict[str, Entry]


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
        if not isinstance(entry, dict):
            return None
        expires = entry.get("e")
        if expires is not None and not _is_int(expires):
            return None
        text: str | None
        if "v" in entry:
            try:
                text = _codec.encode(name, entry["v"])
            except ValueNotSerializableError:  # NaN or Infinity: decodable, but not ours
                return None
        else:
            text = as_sealed(entry.get("c"))
            if text is None:
                return None
        entries[name[len(_KEY) :]] = (text, expires)
    return Row(raw["created"], raw["seen"], user, entries)


def _entry_value(name: str, entry: Entry, seal: Seal | None) -> dict[str, Any]:
    text = entry[0]
    value: dict[str, Any]
    if type(text) is Sealed:
        value = {"c": str(text)}  # unchanged, and still in the row it was sealed for
    elif seal is not None:
        value = {"c": seal(name, text)}
    else:
        value = {"v": _codec.decode(text)}
    if entry[1] is not None:
        value["e"] = entry[1]
    return value


def build(
    created: int,
    seen: int,
    user: list[str] | None,
    entries: Mapping[str, Entry],
    seal: Seal | None = None,
) -> dict[str, Any]:
    """The whole row to store for a session; with `seal`, its values encrypted.

    A `Sealed` entry is kept as it is: the caller opens those sealed for another row.
    """
    row: dict[str, Any] = {"created": created, "seen": seen}
    if user is not None:
        row["user"] = user
    for name, entry in entries.items():
        row[_KEY + name] = _entry_value(name, entry, seal)
    return row


def changes(
    seen: int, changed: Mapping[str, Entry], deleted: Iterable[str], seal: Seal | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The row's items to set and the names to delete, for ``merge_item(set=, delete=)``."""
    updates: dict[str, Any] = {_KEY + n: _entry_value(n, e, seal) for n, e in changed.items()}
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
