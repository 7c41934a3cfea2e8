"""`SessionStore`: loads a `Session` through a driver and commits its changes.

Concurrent requests of one session that change different keys both persist: the commit
sends only the entries that changed (and the names deleted) to ``merge_existing`` on a
`SupportsMergeExisting` driver (else ``merge_item`` on a `SupportsMerge` one), which
applies them to the stored row in one atomic step, across processes; ``merge_existing``
also leaves a row that another request removed meanwhile removed. Any other driver gets
a re-read of the row just before the write, with only this request's changes applied on
top: a change made by another request in between the two calls is lost (last writer
wins). The row format is in `sqlsession.web._row`.

Changed keys are found by comparison: a key the app assigned or deleted, and a mutable
value it read and changed in place, whose JSON differs from what was loaded.

Writes per request: none for a request without a session cookie that stores nothing,
and none for an unchanged session, except that with ``idle_timeout`` one refresh write
happens once at least half of it has passed since the last write. ``max_age`` costs no
writes: it counts from ``created``, which no request moves. A changed session costs one
``merge_existing``; ``regenerate()`` one ``set_item`` and one ``remove_item``, and for a
bound session one ``merge_item`` of its user's device index (see `devices`).

JSON per request, on a `SupportsJSONText` driver: the row is read as text and decoded once
(`_row.parse_text`), and the app is handed the values of that decode; a value is encoded
once, at assignment, and what is written (``set_text``, ``merge_existing_text``) is put
together from those texts (`_row.build_text`, `_row.changes_text`). Other drivers take and
return values, as they always did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _codec, _validate
from ..driver import (
    SessionDriver,
    SupportsExpiry,
    SupportsJSONText,
    SupportsMerge,
    SupportsMergeExisting,
)
from ..errors import ConfigError, CorruptValueError, SessionError, SessionTooLargeError
from . import _ids, _reserved, _row
from ._crypto import Cipher, Sealed, associated_data
from ._row import Slot
from ._state import DEFAULT_MAX_SIZE, Policy, SessionState
from .devices import DeviceBook, index_key
from .session import Clock, Session, state_of

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_SIZE",
    "CookieChange",
    "SessionStore",
    "end_user_sessions",
]

logger = logging.getLogger("sqlsession")

DEFAULT_MAX_AGE = 14 * 24 * 60 * 60
"""Two weeks, as Starlette's cookie ``SessionMiddleware``."""

# How many cookies of our name one request may make us look up: a browser sends more
# than one only when cookies of one name exist for several paths or domains.
_MAX_CANDIDATES = 3


@dataclass(frozen=True, repr=False)
class CookieChange:
    """What the response must do with the session cookie after a commit.

    ``session_id`` None means expire the cookie; ``max_age`` None means a cookie that
    lasts until the browser closes.
    """

    session_id: str | None
    max_age: float | None = None

    def __repr__(self) -> str:
        # Never the id: reprs end up in logs and tracebacks.
        action = "expire" if self.session_id is None else "set"
        return f"CookieChange({action}, max_age={self.max_age!r})"


class SessionStore:
    """Loads sessions from a driver and commits their changes; framework-agnostic.

    Args:
        driver: any `SessionDriver`. Atomic commits need `SupportsMergeExisting` (or
            `SupportsMerge`, which may bring back a session another request ended);
            rows expire with the session only on a `SupportsExpiry` driver (without it,
            expired sessions are refused on load and their rows left to the driver).
        max_age: absolute lifetime in seconds, counted from creation; no activity
            extends it (None: no absolute limit).
        idle_timeout: the session ends after this many seconds without a request
            (None: no idle limit). Activity is written at most once per half of it, so
            a session ends between ``idle_timeout / 2`` and ``idle_timeout`` after its
            last request.
        max_size: the most bytes a session may hold (its key names and JSON values);
            an assignment past it raises `SessionTooLargeError` (None: no limit).
        identity_key: a session key whose assignment signs a user in, as
            `Session.bind_user` does (see `SessionMiddleware`); None: none.
        secret_key: when given, user ids are stored as HMAC-SHA256 keyed with it
            rather than plain SHA-256 (see `Session.bind_user`).
        encryption_keys: encrypt the session values at rest with AES-256-GCM (needs
            the ``[crypto]`` extra). Keys as `generate_encryption_key` makes them
            (urlsafe base64 text of 32 bytes, or 32 raw bytes), newest first: the
            first encrypts, every one decrypts. None: values are stored as plain JSON.
        record_client: keep the User-Agent (cut to 200 characters) and the client's
            network (IPv4 /24, IPv6 /48) of the request that signed a session in, for
            `Session.user_sessions` (read from the ASGI scope `load` is given).
        clock: returns seconds since the epoch (default ``time.time``).

    Raises:
        InvalidTTLError: `max_age` or `idle_timeout` is not None or 0.001 s to 100 years.
        ConfigError: `max_size`, `identity_key`, `secret_key` or `encryption_keys` is
            invalid, or `encryption_keys` is given without ``cryptography`` installed.
    """

    def __init__(
        self,
        driver: SessionDriver,
        *,
        max_age: float | None = DEFAULT_MAX_AGE,
        idle_timeout: float | None = None,
        max_size: int | None = DEFAULT_MAX_SIZE,
        identity_key: str | None = None,
        secret_key: str | bytes | None = None,
        encryption_keys: Sequence[str | bytes] | None = None,
        record_client: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.driver = driver
        self._cipher = None if encryption_keys is None else Cipher(encryption_keys)
        self.max_age = _validate.check_ttl(max_age, what="max_age")
        self.idle_timeout = _validate.check_ttl(idle_timeout, what="idle_timeout")
        self.max_size = None if max_size is None else _check_max_size(max_size)
        self.identity_key = _check_identity_key(identity_key)
        self._policy = Policy(
            max_size=self.max_size,
            identity_key=self.identity_key,
            user_key=_ids.keyed_user_key(_check_secret(secret_key)),
            cipher=self._cipher,
            max_age=self.max_age,
        )
        self._clock: Clock = clock if clock is not None else time.time
        # Which optional capabilities to use is decided once, not per request.
        self._expiry = isinstance(driver, SupportsExpiry)
        self._merge = driver if isinstance(driver, SupportsMerge) else None
        self._merge_existing = driver if isinstance(driver, SupportsMergeExisting) else None
        # With JSON text, a request decodes its row once and encodes each value once.
        self._text = driver if isinstance(driver, SupportsJSONText) else None
        self.record_client = bool(record_client)
        # Every session in a user's index ends within max_age of the index's last write.
        self.devices = DeviceBook(
            driver, alive=self._alive, index_ttl=self.max_age, record_client=self.record_client
        )

    def user_key(self, user_id: str) -> str:
        """The storage key of `user_id`'s generation item, as this store hashes it.

        Raises:
            TypeError: `user_id` is not a non-empty str.
        """
        return self._policy.user_key(_ids.check_user_id(user_id))

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    # -- loading -------------------------------------------------------------------

    async def load(
        self, cookie_values: Sequence[str], *, request: Mapping[str, Any] | None = None
    ) -> Session:
        """Return the session named by the request's cookie values, or a new, empty one.

        Malformed values are skipped without touching storage. An id whose row is
        unknown, expired, revoked or undecodable is never adopted: the visitor gets a
        new session (and a new id with its first change). A row that cannot be decoded,
        has expired by our own clock or was revoked is logged and removed at commit.

        Args:
            cookie_values: the values of the session cookie in the request, in order.
            request: the ASGI scope, read for the user agent and client address when
                the store has ``record_client`` and the session is signed in.

        Returns:
            The session, to hand to the app and then to `commit`.

        Raises:
            Exception: whatever the driver raises while reading (the caller logs it
                and answers 500).
        """
        session = Session(clock=self._clock)
        state = state_of(session)
        state.policy = self._policy
        state.presented = bool(cookie_values)
        state.book = self.devices
        if self.record_client:
            state.request = request
        candidates = [v for v in cookie_values if _ids.is_well_formed(v)]
        for session_id in candidates[:_MAX_CANDIDATES]:
            key = _ids.storage_key(session_id)
            label = _ids.key_label(key)
            try:
                found, row = await self._read(key)
            except CorruptValueError:
                # The driver found the item but could not decode it (bad or too deeply
                # nested JSON text): a 500 would repeat on every request with this cookie.
                logger.warning("Session %s cannot be decoded; starting a new one.", label)
                state.discard.add(key)
                continue
            except SessionError:
                raise  # the driver failed (some of ours derive from ValueError): a 500
            except (ValueError, RecursionError):
                # The same, from a driver that lets its JSON decoder's errors through.
                logger.warning("Session %s cannot be decoded; starting a new one.", label)
                state.discard.add(key)
                continue
            if not found:
                continue
            if row is None:
                logger.warning(
                    "Session %s holds data sqlsession cannot read; starting a new one.", label
                )
                state.discard.add(key)
                continue
            if not self._openable(row):
                logger.warning(
                    "Session %s holds values encrypted with a key not in encryption_keys; "
                    "starting a new one.",
                    label,
                )
                state.discard.add(key)
                continue
            if not self._alive(row):
                state.discard.add(key)
                continue
            if row.user is not None and not await self._still_signed_in(row.user):
                logger.info("Session %s was ended by sign_out_everywhere.", label)
                state.discard.add(key)
                continue
            state.adopt(session_id, row)
            break
        return session

    async def _read(self, key: str) -> tuple[bool, _row.Row | _row.LoadedRow | None]:
        """Whether an item is stored under `key`, and its row (None when it is not ours).

        Raises:
            CorruptValueError: the stored text cannot be decoded.
        """
        if self._text is not None:
            text = await self._text.get_text(key)
            if text is None:
                return False, None
            # The request's one decode of its row: values are not encoded again.
            return True, _row.parse_text(text, _codec.decode(text, key))
        raw = await self.driver.get_item(key)
        return raw is not None, None if raw is None else _row.parse(raw)

    def _openable(self, row: _row.Row | _row.LoadedRow) -> bool:
        # Only the key ids are checked here; a value altered in the table is found when
        # the app reads it (it is decrypted then), and ends the session then.
        cipher = self._cipher
        return all(
            type(text) is not Sealed or (cipher is not None and cipher.can_open(text))
            for text, _ in row.entries.values()
        )

    def _sealer(self, storage_key: str) -> _row.Seal | None:
        """Encrypts values for the row under `storage_key` (None without encryption)."""
        cipher = self._cipher
        if cipher is None:
            return None

        def seal(name: str, text: str) -> str:
            return cipher.seal(text, associated_data(storage_key, name))

        return seal

    def _alive(self, row: _row.Row | _row.LoadedRow) -> bool:
        # The driver's row ttl usually hides expired sessions already; this check makes
        # the lifetime exact for drivers without expiry and after a config change.
        now = self._now_ms()
        max_age = self._max_age_ms(row.max_age)
        if max_age is not None and row.created + max_age <= now:
            return False
        return not (self.idle_timeout is not None and row.seen + self.idle_timeout * 1000 <= now)

    async def _user_token(self, user_key: str) -> str | None:
        try:
            return _row.generation_token(await self.driver.get_item(user_key))
        except CorruptValueError:
            # A damaged sign-out record would fail every request of the user's sessions.
            # Replacing it ends the sessions bound to the old one: the safe reading.
            logger.warning(
                "A user's sign-out record cannot be decoded; replacing it, which ends the "
                "sessions bound to that user."
            )
            generation = _row.new_generation()
            ttl = {"ttl": self._marker_ttl()} if self._expiry else {}
            await self.driver.set_item(user_key, generation, **ttl)
            return str(generation["g"])

    async def _still_signed_in(self, user: list[str]) -> bool:
        token = await self._user_token(user[0])
        return token is None or token == user[1]

    # -- committing ------------------------------------------------------------------

    def _max_age_ms(self, own: int | None) -> float | None:
        """A session's absolute lifetime in ms: its own (`Session.set_max_age`) or max_age.

        Its own never outlasts max_age, also after max_age was lowered in the config.
        """
        limit = None if self.max_age is None else self.max_age * 1000
        if own:
            return own if limit is None else min(own, limit)
        return limit

    def _row_ttl(self, created_ms: int, now_ms: int, own: int | None = None) -> float | None:
        """Seconds until the row must expire: the nearer of the absolute and idle deadlines."""
        deadlines = []
        max_age = self._max_age_ms(own)
        if max_age is not None:
            deadlines.append(created_ms + max_age)
        if self.idle_timeout is not None:
            deadlines.append(now_ms + self.idle_timeout * 1000)
        return None if not deadlines else (min(deadlines) - now_ms) / 1000

    def _ttl_kwargs(self, ttl: float | None) -> dict[str, Any]:
        # No deadline: leave the row to the driver's own default ttl. A driver without
        # touch is never passed ttl= (the rule of SupportsExpiry).
        return {"ttl": ttl} if ttl is not None and self._expiry else {}

    async def commit(self, session: Session) -> CookieChange | None:
        """Write what changed in `session`; return what to do with the cookie.

        Args:
            session: a session this store loaded (or a new ``Session()``).

        Returns:
            The cookie to set or expire, or None to leave the cookie alone.

        Raises:
            Exception: whatever the driver raises while writing (the caller logs it and
                answers 500 instead of the app's response).
        """
        state = state_of(session)
        now = self._now_ms()
        if state.values and state.take_in_place_edits():
            self._check_size(state)
        if state.revoke is not None:
            await _revoke(self.driver, state.revoke, self._marker_ttl())
            if state.indexed is not None and state.indexed[0] == state.revoke:
                state.indexed = None  # the whole index went with the revocation
            state.revoke = None
        if state.bind is not None:
            user = state.policy.user_key(state.bind)
            state.user = [user, await self._user_token(user) or ""]
        change = await self._write(state, now)
        for key in sorted(state.discard):
            await self.driver.remove_item(key)
        state.discard.clear()
        if state.stored_id is None and state.indexed is not None:
            await self.devices.ended(state)
        if change is None and state.stored_id is None and (state.presented or state.destroyed):
            # The cookie names nothing we keep (expired, unknown, destroyed): drop it, so
            # the browser stops sending it and we stop looking it up.
            change = CookieChange(None)
        state.modified = False
        return change

    def _check_size(self, state: SessionState) -> None:
        size = state.size(self.max_size)
        if self.max_size is not None and size > self.max_size:
            raise SessionTooLargeError(
                f"The session grew to {size} bytes through changes made in place, more than "
                f"its max_size of {self.max_size}; nothing was saved. Store less, or check "
                "sizes before appending to session values."
            )

    def _marker_ttl(self) -> float | None:
        """How long a user's generation item must live: as long as any session it ends.

        A session alive now lives at most `max_age` more (it counts from creation) and,
        unless it is presented (and then ended), at most `idle_timeout` more.
        """
        now = self._now_ms()
        return self._row_ttl(now, now)

    async def end_user_sessions(self, user_id: str) -> None:
        """End every session bound to `user_id`, outside a request (as `end_user_sessions`).

        Raises:
            TypeError: `user_id` is not a non-empty str.
        """
        user = self._policy.user_key(_ids.check_user_id(user_id))
        await _revoke(self.driver, user, self._marker_ttl())

    async def _write(self, state: SessionState, now: int) -> CookieChange | None:
        now_entries = {n: e for n, e in state.entries.items() if e[1] is None or e[1] > now}
        if state.stored_id is not None and not state.regenerated:
            return await self._update(state, now, now_entries)
        old_id = state.stored_id
        if old_id is not None:
            state.discard.add(_ids.storage_key(old_id))
        if not now_entries and state.user is None:
            # Nothing to keep (a new session nobody wrote to, or a regenerated empty one).
            state.stored_id = None
            return None
        assert state.id is not None  # every change and regenerate() assigns one
        created = state.created_ms if state.created_ms is not None else now
        ttl = self._row_ttl(created, now, state.max_age_ms)
        if ttl is not None and ttl < 0.001:
            state.stored_id = None
            return None
        key = _ids.storage_key(state.id)
        # Values sealed for the old row do not open under the new id: re-encrypt them.
        _unseal_all(state, now_entries)
        seal = self._sealer(key)
        limit = None if self.max_age is None else created + self.max_age * 1000
        device = await self.devices.place(state, key, state.request, now_ms=now, deadline_ms=limit)
        extras: dict[str, Any] = {"device": device, "max_age": state.max_age_ms}
        if self._text is not None:
            text = _row.build_text(
                created, now, state.user, now_entries, state.loaded, seal, **extras
            )
            await self._text.set_text(key, text, **self._ttl_kwargs(ttl))
        else:
            row = _row.build(created, now, state.user, now_entries, state.loaded, seal, **extras)
            await self.driver.set_item(key, row, **self._ttl_kwargs(ttl))
        state.saved(created, now, now_entries)
        state.max_age_set = False
        return CookieChange(state.id, _cookie_age(state, ttl))

    async def _update(
        self, state: SessionState, now: int, now_entries: dict[str, Slot]
    ) -> CookieChange | None:
        assert state.stored_id is not None
        assert state.created_ms is not None
        changed = {
            n for n in state.changed if n in now_entries and state.differs(n, now_entries[n])
        }
        deleted = {n for n in state.deleted if n in state.original}
        # Expired keys are not deleted here: readers skip them anyway, and deleting them
        # could remove a value another request has just set again under the same name.
        refresh = (
            self.idle_timeout is not None
            and state.seen_ms is not None
            and now - state.seen_ms >= self.idle_timeout * 500
        )
        if not (changed or deleted or refresh or state.max_age_set):
            return None
        key = _ids.storage_key(state.stored_id)
        ttl = self._row_ttl(state.created_ms, now, state.max_age_ms)
        if ttl is not None and ttl < 0.001:
            # The absolute lifetime ran out during this request.
            state.discard.add(key)
            state.stored_id = None
            return None
        writes = {n: now_entries[n] for n in changed}
        if state.reseal:
            writes.update(_resealed(state, now_entries, changed | deleted))
        seal = self._sealer(key)
        if self._text is not None:
            texts, removals = _row.changes_text(now, writes, deleted, seal)
            if state.max_age_set:
                _set_max_age(texts, removals, state.max_age_ms, str)
            live = await self._text.merge_existing_text(
                key, set=texts, delete=removals, **self._ttl_kwargs(ttl)
            )
            if not live:
                # Ended by another request meanwhile (see below).
                return None
            state.updated(now, now_entries)
            return self._moved_cookie(state, ttl)
        changes, removals = _row.changes(now, writes, deleted, seal)
        if state.max_age_set:
            _set_max_age(changes, removals, state.max_age_ms, int)
        if self._merge_existing is not None:
            stored = await self._merge_existing.merge_existing(
                key, set=changes, delete=removals, **self._ttl_kwargs(ttl)
            )
            if stored is None:
                # Ended by another request meanwhile (a sign-out, or a sign-in that
                # replaced this id): do not bring it back, and do not send its id again
                # (nor expire the cookie, which may carry the id that replaced it).
                return None
        elif self._merge is not None:
            await self._merge.merge_item(key, set=changes, delete=removals, **self._ttl_kwargs(ttl))
        else:
            current = await self.driver.get_item(key)
            if not isinstance(current, dict):
                # Ended by another request meanwhile: do not bring it back.
                return None
            for name in removals:
                current.pop(name, None)
            current.update(changes)
            await self.driver.set_item(key, current, **self._ttl_kwargs(ttl))
        state.updated(now, now_entries)
        return self._moved_cookie(state, ttl)

    def _moved_cookie(self, state: SessionState, ttl: float | None) -> CookieChange | None:
        """The cookie after an update: sent again when its deadline moved, else left alone."""
        lifetime_changed, state.max_age_set = state.max_age_set, False
        if self.idle_timeout is None and not lifetime_changed:
            return None
        # The idle deadline (or the session's own lifetime) moved: move the cookie's with it.
        assert state.stored_id is not None
        return CookieChange(state.stored_id, _cookie_age(state, ttl))


def _unseal_all(state: SessionState, entries: dict[str, Slot]) -> None:
    """Decrypt the sealed values among `entries` (drop, with a warning, those no key opens)."""
    for name, (text, _) in list(entries.items()):
        if type(text) is not Sealed:
            continue
        if state.unseal(name) is None:
            assert state.stored_id is not None  # only a loaded row has sealed values
            logger.warning(
                "Session %s: dropped a value that cannot be decrypted while moving it to a new id.",
                _ids.log_label(state.stored_id),
            )
            del entries[name], state.entries[name]
            state.values.pop(name, None)
        else:
            entries[name] = state.entries[name]


def _resealed(state: SessionState, entries: dict[str, Slot], skip: set[str]) -> dict[str, Slot]:
    """The unchanged entries to rewrite with the first key, as this write goes out anyway.

    Rows stored before encryption was switched on (or with an older key) end up encrypted
    with the current key once their session is next written.
    """
    found: dict[str, Slot] = {}
    for name in sorted(state.reseal):
        if name in skip or name not in entries:
            continue
        text, expires = entries[name]
        if type(text) is Sealed:
            if state.unseal(name) is None:
                continue  # left as it is; reading it ends the session
            entries[name] = state.entries[name]
        elif text is None:
            # Decoded with the row and never encoded since: encoded now, to be encrypted.
            entries[name] = (_codec.encode_trusted(state.loaded[name]), expires)
        found[name] = entries[name]
    return found


async def end_user_sessions(
    driver: SessionDriver,
    user_id: str,
    *,
    max_age: float | None = DEFAULT_MAX_AGE,
    idle_timeout: float | None = None,
    secret_key: str | bytes | None = None,
) -> None:
    """End every session bound to `user_id` with `Session.bind_user`, outside a request.

    For an admin tool or a password-reset handler. Sessions are invalidated, not deleted:
    each one's row is removed the next time it is presented, or expires. Pass the
    `max_age`, `idle_timeout` and `secret_key` the app's middleware has: the first two
    decide how long the user's marker row is kept (as long as a session it ends can
    live), the last how the user id is hashed.

    Args:
        driver: the driver the sessions live in.
        user_id: the id that was passed to `bind_user`.
        max_age: the sessions' ``max_age``.
        idle_timeout: the sessions' ``idle_timeout``.
        secret_key: the middleware's ``secret_key``.

    Raises:
        TypeError: `user_id` is not a non-empty str.
        InvalidTTLError, ConfigError: an option is invalid.
    """
    store = SessionStore(driver, max_age=max_age, idle_timeout=idle_timeout, secret_key=secret_key)
    await store.end_user_sessions(user_id)


async def _revoke(driver: SessionDriver, user_key: str, ttl: float | None) -> None:
    """Replace the generation token of `user_key`, ending the sessions bound to it."""
    kwargs = {"ttl": ttl} if isinstance(driver, SupportsExpiry) else {}
    await driver.set_item(user_key, _row.new_generation(), **kwargs)
    await driver.remove_item(index_key(user_key))  # its device list ends with them


def _set_max_age(
    updates: dict[str, Any], removals: list[str], max_age_ms: int | None, form: Any
) -> None:
    """Add the session's own lifetime to a merge: its value (in `form`), or its removal."""
    if max_age_ms is None:
        removals.append("ma")
    else:
        updates["ma"] = form(max_age_ms)


def _cookie_age(state: SessionState, ttl: float | None) -> float | None:
    """The cookie's Max-Age: the row's ttl, or none for a browser session (max age 0)."""
    return None if state.max_age_ms == 0 else ttl


def _check_max_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"max_size must be a number of bytes of at least 1, or None for no limit, "
            f"got {value!r}."
        )
    return value


def _check_identity_key(value: object) -> str | None:
    if value is not None and (type(value) is not str or not value):
        raise ConfigError(f"identity_key must be a non-empty str or None, got {value!r}.")
    if _reserved.is_reserved(value):
        raise ConfigError(
            f"identity_key {value!r} starts with {_reserved.PREFIX!r}, which sqlsession keeps "
            "for its own keys: name it otherwise (for example 'user')."
        )
    return value


def _check_secret(value: object) -> str | bytes | None:
    # Never the value in the message: it is a secret.
    if value is not None and (not isinstance(value, str | bytes) or not value):
        raise ConfigError(
            "secret_key must be a non-empty str or bytes (or None), got "
            f"{'an empty one' if value in ('', b'') else type(value).__name__}."
        )
    return value
