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
        "k:note": {"c": "<token>"},        # a value encrypted at rest (see _crypto)
    }

A user bound with ``bind_user`` has one item under ``"u:" + sha256(user id)``,
``{"g": "<token>"}``: replacing the token ends every session bound to the old one.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from .. import _codec
from ..errors import InvalidKeyError, ValueNotSerializableError
from ._crypto import Sealed, as_sealed

Entry = tuple[str, "int | None"]
"""One session key's value as JSON text, and its expiry in ms since the epoch (or None).

The text is a `Sealed` token instead while an encrypted value has not been read."""

Seal = Callable[[str, str], str]
"""Encrypts the JSON text of the session key named first for its row (see `_crypto`)."""

Slot = tuple["str | None", "int | None"]
"""A session key as a `Session` holds it: an `Entry` whose text is None while only the
value decoded with the row is known (it is encoded only when something needs its text)."""

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


def byte_length(text: str) -> int:
    """The UTF-8 length of `text`, without encoding it when it is ASCII."""
    return _byte_length(text)


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
    device: dict[str, str] | None = None
    """The session's device label and, opt-in, user agent and client network."""
    max_age: int | None = None
    """This session's own lifetime in ms (`Session.set_max_age`); 0: a browser session."""


def _is_int(value: Any) -> bool:
    return type(value) is int


# No repr: the values are the visitor's data.
@dataclass(frozen=True, repr=False)
class LoadedRow:
    """A stored session row decoded from its JSON text, its values not encoded again.

    Every slot's text is None: the value is in `values`, as the one decode of the row
    made it, and is encoded only if something needs its text (see `SessionState`).
    """

    created: int
    seen: int
    user: list[str] | None
    entries: dict[str, Slot]
    values: dict[str, Any]
    text: str
    """The row's JSON text as the driver returned it: its length bounds the session's size."""
    device: dict[str, str] | None = None
    """As `Row.device`."""
    max_age: int | None = None
    """As `Row.max_age`."""


def _header(raw: Any) -> bool:
    if not isinstance(raw, dict) or not _is_int(raw.get("created")) or not _is_int(raw.get("seen")):
        return False
    user = raw.get("user")
    return user is None or (
        isinstance(user, list) and len(user) == 2 and all(type(u) is str for u in user)
    )


# A JSON escape of a UTF-16 surrogate: the decoder turns "\ud800" into a lone surrogate,
# which encode() refuses. sqlsession never writes one (it writes non-ASCII as is).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_text(text: str, raw: Any) -> LoadedRow | Row | None:
    """The session row `raw`, which `_codec.decode` made of the driver's `text`.

    The decode refused what ``encode`` refuses (NaN, Infinity, over-long ints), except
    lone surrogates: a row that spells one (which sqlsession never writes) goes through
    `parse`, which re-encodes every value to check it.

    Returns:
        The row with its values as decoded, or None if it is not one sqlsession wrote.
    """
    if _SURROGATE_ESCAPE.search(text) is not None:
        return parse(raw)
    if not _header(raw):
        return None
    entries: dict[str, Slot] = {}
    values: dict[str, Any] = {}
    for name, entry in raw.items():
        if not name.startswith(_KEY):
            continue
        if not isinstance(entry, dict):
            return None
        expires = entry.get("e")
        if expires is not None and not _is_int(expires):
            return None
        if "v" in entry:
            entries[name[len(_KEY) :]] = (None, expires)
            values[name[len(_KEY) :]] = entry["v"]
            continue
        sealed = as_sealed(entry.get("c"))
        if sealed is None:
            return None
        entries[name[len(_KEY) :]] = (sealed, expires)
    extras = _extras(raw)
    if extras is None:
        return None
    return LoadedRow(raw["created"], raw["seen"], raw.get("user"), entries, values, text, *extras)


def parse(raw: Any) -> Row | None:
    """The stored session row `raw`, or None if it is not one sqlsession wrote."""
    if not _header(raw):
        return None
    user = raw.get("user")
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


def _entry_value(
    name: str, slot: Slot, loaded: Mapping[str, Any], seal: Seal | None
) -> dict[str, Any]:
    text, expires = slot
    value: dict[str, Any]
    if type(text) is Sealed:
        value = {"c": str(text)}  # unchanged, and still in the row it was sealed for
    elif seal is not None:
        plain = _codec.encode_trusted(loaded[name]) if text is None else text
        value = {"c": seal(name, plain)}
    else:
        value = {"v": loaded[name] if text is None else _codec.decode(text)}
    if expires is not None:
        value["e"] = expires
    return value


def build(
    created: int,
    seen: int,
    user: list[str] | None,
    entries: Mapping[str, Slot],
    loaded: Mapping[str, Any],
    seal: Seal | None = None,
    *,
    device: dict[str, str] | None = None,
    max_age: int | None = None,
) -> dict[str, Any]:
    """The whole row to store for a session, for a driver that takes values.

    With `seal`, its values are encrypted; a `Sealed` entry is kept as it is (the caller
    opens those sealed for another row).
    """
    row: dict[str, Any] = {"created": created, "seen": seen}
    if user is not None:
        row["user"] = user
    if device is not None:
        row["dev"] = device
    if max_age is not None:
        row["ma"] = max_age
    for name, slot in entries.items():
        row[_KEY + name] = _entry_value(name, slot, loaded, seal)
    return row


def changes(
    seen: int, changed: Mapping[str, Slot], deleted: Iterable[str], seal: Seal | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The row's items to set and the names to delete, for ``merge_item(set=, delete=)``."""
    updates: dict[str, Any] = {_KEY + n: _entry_value(n, e, {}, seal) for n, e in changed.items()}
    # Every write is activity: "seen" and the row's expiry always move together.
    updates["seen"] = seen
    return updates, sorted(_KEY + n for n in deleted)


# -- the same as JSON text, assembled from texts already encoded -------------------------
# Names are escaped as the encoder would (only '"', '\\' and control characters change);
# values are texts `encode` produced at assignment, so nothing is encoded twice.


def _entry_text(name: str, text: str, expires: int | None, seal: Seal | None = None) -> str:
    # A token is urlsafe base64 and a dot: a JSON string as it is.
    if type(text) is Sealed:
        body = '"c":"' + text + '"'
    elif seal is not None:
        body = '"c":"' + seal(name, text) + '"'
    else:
        body = '"v":' + text
    if expires is None:
        return "{" + body + "}"
    return "{" + body + ',"e":' + str(expires) + "}"


def build_text(
    created: int,
    seen: int,
    user: list[str] | None,
    entries: Mapping[str, Slot],
    loaded: Mapping[str, Any],
    seal: Seal | None = None,
    *,
    device: dict[str, str] | None = None,
    max_age: int | None = None,
) -> str:
    """`build` as JSON text, for a `SupportsJSONText` driver.

    The values the request never encoded (decoded with the row, untouched since) are
    encoded together, in one call.
    """
    parts = ['"created":' + str(created), '"seen":' + str(seen)]
    if user is not None:
        pair = encode_basestring(user[0]) + "," + encode_basestring(user[1])
        parts.append('"user":[' + pair + "]")
    if device is not None:
        parts.append('"dev":' + _codec.encode_trusted(device))
    if max_age is not None:
        parts.append('"ma":' + str(max_age))
    pending: dict[str, Any] = {}
    for name, (text, expires) in entries.items():
        if text is None and seal is not None:
            text = _codec.encode_trusted(loaded[name])  # to be encrypted, one by one
        if text is None:
            entry: dict[str, Any] = {"v": loaded[name]}
            if expires is not None:
                entry["e"] = expires
            pending[_KEY + name] = entry
        else:
            entry_text = _entry_text(name, text, expires, seal)
            parts.append(encode_basestring(_KEY + name) + ":" + entry_text)
    if pending:
        # Decoded by us from a row we accepted: plain JSON, no need to check it again.
        parts.append(_codec.encode_trusted(pending)[1:-1])
    return "{" + ",".join(parts) + "}"


def changes_text(
    seen: int, changed: Mapping[str, Slot], deleted: Iterable[str], seal: Seal | None = None
) -> tuple[dict[str, str], list[str]]:
    """`changes` as JSON texts, for ``merge_existing_text(set=, delete=)``."""
    updates: dict[str, str] = {}
    for name, (text, expires) in changed.items():
        assert text is not None  # a changed key was encoded at assignment or commit
        updates[_KEY + name] = _entry_text(name, text, expires, seal)
    updates["seen"] = str(seen)
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
