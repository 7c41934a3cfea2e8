"""What a `Session` holds: the protocol between the mapping and the store that persists it.

`Session` is the app's view; it changes `entries` and records what the store must do at
commit (`changed`, `deleted`, `discard`, `bind`, `revoke`, ...). `SessionStore` fills in
what was loaded (`adopt`) and records what it wrote (`saved`, `updated`). Nothing else
reads or writes a `SessionState`: the store reaches it through `session.state_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _codec
from . import _ids, _row
from ._crypto import Cipher, DecryptionError, Sealed, associated_data
from ._row import Entry, Row

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
    entries: dict[str, Entry] = field(default_factory=dict)
    original: dict[str, Entry] = field(default_factory=dict)
    """The entries as stored, to tell a change from a write of the same value."""
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

    def take_in_place_edits(self) -> bool:
        """Re-encode the mutable values the app holds; mark the keys whose JSON changed.

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
            if entry is None or _codec.encodes_to(value, entry[0]):
                continue
            text = _row.encode_value(name, value)
            if text != entry[0]:
                self.entries[name] = (text, entry[1])
                self.changed.add(name)
                found = True
        return found

    def unseal(self, name: str) -> str | None:
        """Decrypt the sealed entry `name` in place; its JSON text, or None if no key opens it."""
        text, expires = self.entries[name]
        cipher = self.policy.cipher
        if cipher is None or self.stored_id is None or type(text) is not Sealed:
            return None
        try:
            plain = cipher.open(text, associated_data(_ids.storage_key(self.stored_id), name))
        except DecryptionError:
            return None
        self.entries[name] = (plain, expires)
        # Still the stored value: a write of the same value is then no change.
        if self.original.get(name) == (text, expires):
            self.original[name] = (plain, expires)
        return plain

    def adopt(self, session_id: str, row: Row) -> None:
        """Take on the stored row of `session_id`, as loaded."""
        self.id = self.stored_id = session_id
        self.created_ms, self.seen_ms = row.created, row.seen
        self.user = row.user
        self.entries = row.entries
        self.original = dict(row.entries)
        self.values.clear()
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

    def saved(self, created_ms: int, seen_ms: int, entries: dict[str, Entry]) -> None:
        """The whole row was written under `id` (a new or regenerated session)."""
        self.stored_id = self.id
        self.created_ms, self.seen_ms = created_ms, seen_ms
        self.original = dict(entries)
        self.changed.clear()
        self.deleted.clear()
        self.reseal.clear()
        self.regenerated = False
        self.bind = None

    def updated(self, seen_ms: int, entries: dict[str, Entry]) -> None:
        """This request's changes were written into the stored row."""
        self.seen_ms = seen_ms
        self.original = dict(entries)
        self.entries = dict(entries)
        self.changed.clear()
        self.deleted.clear()
        self.reseal.clear()
        self.bind = None
