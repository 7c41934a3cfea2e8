"""What a `Session` holds: the protocol between the mapping and the store that persists it.

`Session` is the app's view; it changes `entries` and records what the store must do at
commit (`changed`, `deleted`, `discard`, `bind`, `revoke`, ...). `SessionStore` fills in
what was loaded (`adopt`) and records what it wrote (`saved`, `updated`). Nothing else
reads or writes a `SessionState`: the store reaches it through `session.state_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _codec
from . import _ids, _row
from ._crypto import Cipher, DecryptionError, Sealed, associated_data
from ._row import LoadedRow, Row, Slot

if TYPE_CHECKING:
    from .devices import DeviceBook

# Values the app cannot change in place: nothing to compare at commit.
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})

DEFAULT_MAX_SIZE = 256 * 1024
"""Bytes: far above what sign-in state, a cart and flash messages take, far below what
would make every request of the session slow (a 20 MB session cost 343 ms a request)."""


@dataclass(frozen=True)
class Policy:
    """The store's rules that a `Session` applies at assignment, shared by its sessions."""

    max_size: int | None = DEFAULT_MAX_SIZE
    """Most bytes of the encoded session (key names and JSON values); None: no limit."""
    identity_key: str | None = None
    """The session key whose assignment signs a user in (see `SessionMiddleware`)."""
    user_key: Callable[[str], str] = _ids.user_key
    """Turns a user id into the storage key of its generation item."""
    cipher: Cipher | None = None
    """Encrypts and decrypts the session values (None: stored as plain JSON)."""
    max_age: float | None = None
    """The store's ``max_age``: the longest `Session.set_max_age` may ask for."""


# No repr: it holds the session id and the visitor's data.
@dataclass(repr=False, eq=False)
class SessionState:
    """The state of one session between its load and its commit."""

    id: str | None = None
    """The id the cookie will carry."""
    stored_id: str | None = None
    """The id of the row this session was read from (or last written to)."""
    created_ms: int | None = None
    seen_ms: int | None = None
    user: list[str] | None = None
    """[user key, generation token] as stored."""
    entries: dict[str, Slot] = field(default_factory=dict)
    original: dict[str, Slot] = field(default_factory=dict)
    """The entries as stored, to tell a change from a write of the same value."""
    loaded: dict[str, Any] = field(default_factory=dict)
    """Values as the row's one decode made them, for the slots whose text is None (not
    encoded yet) and the immutable values handed out: never changed in place, so they
    can be written back, or compared, as they are."""
    row_text: str | None = None
    """The loaded row's JSON text: its length bounds the size of the values in `loaded`."""
    values: dict[str, Any] = field(default_factory=dict)
    """The objects the app was handed or assigned, by key: the commit re-encodes the
    mutable ones to find changes made in place (``session["cart"].append(x)``)."""
    policy: Policy = field(default_factory=Policy)
    changed: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    discard: set[str] = field(default_factory=set)
    """Storage keys to remove at commit."""
    presented: bool = False
    """The request carried a cookie of ours."""
    accessed: bool = False
    """The app read or wrote the mapping (the response varies with the cookie)."""
    modified: bool = False
    """The app changed the session since it was loaded or last committed."""
    regenerated: bool = False
    destroyed: bool = False
    bind: str | None = None
    """The user id to bind at commit."""
    revoke: str | None = None
    """The user key whose sessions end at commit."""
    reseal: set[str] = field(default_factory=set)
    """Stored entries to rewrite with the first encryption key at the next write (stored
    plain, or sealed with an older key)."""
    book: DeviceBook | None = None
    """The loading store's device indexes (`Session.user_sessions` and the like)."""
    indexed: tuple[str, str] | None = None
    """(user key, label) of the device index entry the stored row is listed under."""
    device: dict[str, str] | None = None
    """The stored row's "dev": its label and, opt-in, user agent and client network."""
    request: Any = None
    """The ASGI scope, when the store records clients (read at a whole-row write only)."""
    max_age_ms: int | None = None
    """This session's own lifetime in ms (`Session.set_max_age`); 0: a browser session."""
    max_age_set: bool = False
    """`max_age_ms` changed in this request: the commit stores it and re-sends the cookie."""

    def value(self, name: str, slot: Slot) -> Any:
        """The value of `name` (whose slot is `slot`) to hand to the app, decoded at most once.

        A value decoded with the row is handed out as it is; a mutable one first gets
        its text (one encode), which the commit compares it with to find changes made in
        place.
        """
        values = self.values
        if name in values:
            return values[name]
        text, expires = slot
        if name in self.loaded:
            value = self.loaded[name]
            if type(value) not in _IMMUTABLE:
                del self.loaded[name]  # no longer pristine once the app holds it
                if text is None:
                    text = _codec.encode_trusted(value)
                    self.entries[name] = (text, expires)
                    if self.original.get(name) == slot:
                        self.original[name] = (text, expires)
        else:
            assert text is not None  # a slot without text has its value in `loaded`
            value = _codec.decode(text)
        values[name] = value
        return value

    def size(self, limit: int | None, key: str | None = None, text: str = "") -> int:
        """The bytes of the session's names and JSON values, with `key` set to `text`.

        Values not encoded yet are bounded by the loaded row's length: when that bound
        is within `limit`, it is returned and nothing is encoded; otherwise they are
        encoded (once, their texts kept) and the exact size is returned.
        """
        total = 0 if key is None else _row.byte_length(key) + _row.byte_length(text)
        unencoded = []
        for name, (known, _) in self.entries.items():
            if name == key:
                continue
            if known is None:
                unencoded.append(name)
            else:
                total += _row.byte_length(name) + _row.byte_length(known)
        if not unencoded:
            return total
        if limit is not None and self.row_text is not None:
            bound = total + _row.byte_length(self.row_text)
            if bound <= limit:
                return bound
        for name in unencoded:
            slot = self.entries[name]
            encoded = _codec.encode_trusted(self.loaded[name])
            self.entries[name] = (encoded, slot[1])
            if self.original.get(name) == slot:
                self.original[name] = (encoded, slot[1])
            total += _row.byte_length(name) + _row.byte_length(encoded)
        return total

    def _aad(self, name: str) -> bytes:
        assert self.stored_id is not None  # only a loaded row has sealed values
        return associated_data(_ids.storage_key(self.stored_id), name)

    def unseal(self, name: str) -> str | None:
        """Decrypt the sealed entry `name` in place; its JSON text, or None if no key opens it."""
        text, expires = self.entries[name]
        cipher = self.policy.cipher
        if cipher is None or type(text) is not Sealed:
            return None
        try:
            plain = cipher.open(text, self._aad(name))
        except DecryptionError:
            return None
        self.entries[name] = (plain, expires)
        # Still the stored value: a write of the same value is then no change.
        if self.original.get(name) == (text, expires):
            self.original[name] = (plain, expires)
        return plain

    def _stored(self, name: str) -> Slot | None:
        """The entry `name` as loaded, decrypted if it is sealed (and opens)."""
        entry = self.original.get(name)
        cipher = self.policy.cipher
        if entry is None or type(entry[0]) is not Sealed or cipher is None:
            return entry
        try:
            # A key assigned without being read: decrypting beats writing the same value.
            return (cipher.open(entry[0], self._aad(name)), entry[1])
        except DecryptionError:
            return entry

    def differs(self, name: str, slot: Slot) -> bool:
        """Whether `slot` (the current one of `name`, encoded) differs from what was loaded."""
        before = self._stored(name)
        if before is None or before[1] != slot[1]:
            return True
        if before[0] is not None or slot[0] is None:
            return before[0] != slot[0]
        # Loaded but never encoded: compare with the value as decoded. Equal objects
        # may still differ as JSON (1 and 1.0, 1 and True): the text decides.
        if name not in self.loaded:
            return True
        loaded = self.loaded[name]
        return not (self.values.get(name) == loaded and _codec.encodes_to(loaded, slot[0]))

    def take_in_place_edits(self) -> bool:
        """Re-encode the mutable values the app holds; mark the keys whose JSON changed.

        One encode per mutable value; a changed one is then checked as `encode` checks.

        Returns:
            Whether any had changed.

        Raises:
            ValueNotSerializableError: a value was changed in place into one that is
                not JSON.
        """
        found = False
        for name, value in self.values.items():
            if type(value) in _IMMUTABLE:
                continue
            entry = self.entries.get(name)
            if entry is None or entry[0] is None:
                continue
            text = _codec.encode_changed(name, value, entry[0], max_depth=_row.VALUE_MAX_DEPTH)
            if text is not None:
                self.entries[name] = (text, entry[1])
                self.changed.add(name)
                found = True
        return found

    def adopt(self, session_id: str, row: Row | LoadedRow) -> None:
        """Take on the stored row of `session_id`, as loaded."""
        self.id = self.stored_id = session_id
        self.created_ms, self.seen_ms = row.created, row.seen
        self.user = row.user
        self.device = row.device
        label = None if row.device is None else row.device.get("l")
        self.indexed = None if row.user is None or label is None else (row.user[0], label)
        self.max_age_ms = row.max_age
        self.entries = dict(row.entries)
        self.original = dict(row.entries)
        self.values.clear()
        if isinstance(row, LoadedRow):
            self.loaded = row.values
            self.row_text = row.text
        else:
            self.loaded = {}
            self.row_text = None
        cipher = self.policy.cipher
        self.reseal = (
            set()
            if cipher is None
            else {
                n
                for n, (text, _) in row.entries.items()
                if type(text) is not Sealed or not cipher.is_current(text)
            }
        )

    def forget_loaded(self) -> None:
        """Drop what the load left (the session was emptied or destroyed)."""
        self.loaded = {}
        self.row_text = None

    def saved(self, created_ms: int, seen_ms: int, entries: dict[str, Slot]) -> None:
        """The whole row was written under `id` (a new or regenerated session)."""
        self.stored_id = self.id
        self.created_ms, self.seen_ms = created_ms, seen_ms
        self.original = dict(entries)
        self.changed.clear()
        self.deleted.clear()
        self.reseal.clear()
        self.regenerated = False
        self.bind = None

    def updated(self, seen_ms: int, entries: dict[str, Slot]) -> None:
        """This request's changes were written into the stored row."""
        self.seen_ms = seen_ms
        self.original = dict(entries)
        self.entries = dict(entries)
        self.changed.clear()
        self.deleted.clear()
        self.reseal.clear()
        self.bind = None
