"""The `Session` mapping: one visitor's data, as the app sees it during a request.

A `Session` holds no storage logic: `SessionStore` builds it from the stored row and
writes its changes back. What the two share lives in one `SessionState` per session,
which only the store reaches (through `state_of`); integrations such as the ASGI
middleware use the public `accessed` and `modified` instead.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from .. import _codec, _validate
from ..errors import InvalidTTLError, SessionError, SessionTooLargeError
from . import _csrf, _flash, _ids, _reserved, _row, devices
from ._crypto import Sealed
from ._flash import Flash
from ._row import Slot
from ._state import SessionState

if TYPE_CHECKING:
    from .devices import DeviceSession

__all__ = ["Clock", "Session"]

logger = logging.getLogger("sqlsession")

Clock = Callable[[], float]
"""Returns the current time as seconds since the Unix epoch (``time.time``)."""


class Session(MutableMapping[str, Any]):
    """One visitor's session data: a mutable mapping of str keys to JSON values.

    As with Starlette's sessions, reading a key hands out one object per request, and
    changes made to it in place (``session["cart"].append(x)``, a key set in a nested
    dict) are saved: the commit re-encodes the mutable values the app was handed and
    writes the keys whose JSON changed. A value that is not JSON, or would make the
    session larger than the store's ``max_size``, is refused at assignment
    (`ValueNotSerializableError`, `SessionTooLargeError`). Changes are written when the
    request ends, by `SessionStore.commit`.

    A `Session` is built by `SessionStore.load`; ``Session()`` is a new, empty one.

    Args:
        clock: returns seconds since the epoch (default ``time.time``).
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else time.time
        self._state = SessionState()

    # -- what integrations may ask -----------------------------------------------------

    @property
    def accessed(self) -> bool:
        """Whether the app read or changed the session (or its id) during this request.

        A response then depends on the session, even an empty one, so it must carry
        ``Vary: Cookie``. Asking this, or ``repr(session)``, does not count as access.
        """
        return self._state.accessed

    @property
    def modified(self) -> bool:
        """Whether the app changed the session since it was loaded or last committed.

        True after any assignment or deletion, `clear`, `regenerate`, `destroy`,
        `bind_user`, `sign_out_everywhere` or `set_max_age`, even one that leaves the data as it was
        (the commit then writes nothing). Changes made in place to a value read from the
        session are found only by the commit, so they do not show here. False does not
        mean the commit writes nothing: with ``idle_timeout`` an unchanged session is
        refreshed now and then.
        """
        return self._state.modified

    # -- the mapping ---------------------------------------------------------------

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    def _live(self, name: str) -> Slot | None:
        self._state.accessed = True
        entry = self._state.entries.get(name)
        if entry is None or (entry[1] is not None and entry[1] <= self._now_ms()):
            return None
        return entry

    def __getitem__(self, key: str) -> Any:
        entry = None if _reserved.is_reserved(key) else self._live(key)
        if entry is None:
            raise KeyError(key)
        if type(entry[0]) is Sealed:
            entry = (self._unseal(key), entry[1])
        return self._state.value(key, entry)

    def _unseal(self, key: str) -> str:
        """The decrypted JSON text of `key`; a value no key opens ends the session."""
        text = self._state.unseal(key)
        if text is None:
            state = self._state
            label = "-" if state.stored_id is None else _ids.log_label(state.stored_id)
            logger.warning(
                "Session %s holds a value that cannot be decrypted (altered, or its key was "
                "removed from encryption_keys); starting a new one.",
                label,
            )
            self.destroy()
            raise KeyError(key)
        return text

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if _reserved.is_reserved(key):
            raise _reserved.refuse(key)
        if self._live(key) is None:
            raise KeyError(key)
        self._forget(key)
        if key == self._state.policy.identity_key:
            self._sign_out()

    def _forget(self, key: str) -> None:
        state = self._state
        del state.entries[key]
        state.values.pop(key, None)
        state.changed.discard(key)
        state.deleted.add(key)
        state.modified = True

    def __contains__(self, key: object) -> bool:
        return (
            isinstance(key, str) and not _reserved.is_reserved(key) and self._live(key) is not None
        )

    def __iter__(self) -> Iterator[str]:
        self._state.accessed = True
        return iter(self._names())

    def _names(self) -> list[str]:
        # sqlsession's own keys (flash messages, the CSRF token) are not the app's.
        now = self._now_ms()
        return [
            n
            for n, (_, exp) in self._state.entries.items()
            if (exp is None or exp > now) and not _reserved.is_reserved(n)
        ]

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        # Never the id: reprs end up in logs and tracebacks.
        # Nor does it count as reading the session (logging it adds no Vary).
        return f"<Session keys={sorted(self._names())!r}>"

    def clear(self) -> None:
        """Delete every key and sign the user out, under a new id (as Django's ``flush()``).

        Starlette apps sign out with ``request.session.clear()``: the session then also
        gets a new id and loses its user binding (`bind_user`), so whoever knew the old
        id holds nothing. Use `destroy` to also expire the cookie.
        """
        state = self._state
        state.accessed = state.modified = True
        self._empty()
        self._sign_out()

    def _empty(self) -> None:
        state = self._state
        for name in list(state.entries):
            self._forget(name)
        state.values.clear()
        state.forget_loaded()

    def _sign_out(self) -> None:
        state = self._state
        state.user = None
        state.bind = None
        self.regenerate()

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store `value` under `key`, optionally only for `ttl` seconds.

        The object itself is kept for the rest of the request (reading `key` returns
        it), and changes made to it in place before the commit are saved.

        Args:
            key: a str.
            value: dicts with str keys, lists, str, int, float, bool or None, nested at
                most 498 containers deep.
            ttl: seconds after which the key disappears on its own (None: it lives as
                long as the session). ``session[key] = value`` is ``set(key, value)``.

        Raises:
            TypeError: `key` is not a str.
            InvalidKeyError: `key` holds a lone surrogate (it cannot be stored), or
                starts with ``"sqlsession."`` (kept for flash messages and the CSRF token).
            ValueNotSerializableError: `value` is not JSON.
            InvalidTTLError: `ttl` is not None or at least 0.001 seconds.
            SessionTooLargeError: the session would grow past the store's ``max_size``;
                nothing was changed.
        """
        if type(key) is not str:
            raise TypeError(f"Session keys must be str, got {type(key).__name__}: {key!r}.")
        _row.check_name(key)
        if _reserved.is_reserved(key):
            raise _reserved.refuse(key)
        state = self._state
        state.accessed = True
        seconds = _validate.check_ttl(ttl)
        text = _row.encode_value(key, value)
        signing_in = key == state.policy.identity_key
        user_id = _identity(value) if signing_in else None
        # Signing in as another user empties the session: only this key will be left.
        switching = signing_in and self._switches_user(user_id)
        self._check_size(key, text, alone=switching)
        if signing_in:
            if user_id is None:
                if self._bound_key() is not None:
                    self._sign_out()
            elif switching or self._bound_key() is None:
                self.bind_user(user_id)
        expires = None if seconds is None else self._now_ms() + math.ceil(seconds * 1000)
        state.entries[key] = (text, expires)
        state.values[key] = value
        state.deleted.discard(key)
        state.changed.add(key)
        state.modified = True
        if state.id is None:
            state.id = _ids.new_id()

    def _check_size(self, key: str, text: str, *, alone: bool) -> None:
        """Refuse `text` under `key` if the session would outgrow ``max_size``."""
        state = self._state
        limit = state.policy.max_size
        if limit is None:
            return
        size = (
            _row.byte_length(key) + _row.byte_length(text)
            if alone
            else state.size(limit, key, text)
        )
        if size > limit:
            raise SessionTooLargeError(
                f"Storing session key {key!r} would make the session {size} bytes, more "
                f"than its max_size of {limit}: store less (or raise max_size)."
            )

    # -- sqlsession's own keys (flash messages, the CSRF token) ------------------------

    def _get_reserved(self, name: str) -> Any:
        """The value of the reserved key `name` (None when absent), not to be changed in place.

        Read without `SessionState.value`, which would encode a mutable value to watch
        it for changes: the callers never change it, they replace it (`_put_reserved`).
        """
        entry = self._live(name)
        if entry is None:
            return None
        text = entry[0]
        if type(text) is Sealed:
            try:
                text = self._unseal(name)
            except KeyError:
                return None  # no key opens it: the session was replaced by a new one
        return self._state.loaded[name] if text is None else _codec.decode(text)

    def _put_reserved(self, name: str, value: Any) -> None:
        """Store `value` under the reserved key `name`, as `set` stores an app's key."""
        text = _row.encode_value(name, value)
        self._check_size(name, text, alone=False)
        state = self._state
        state.entries[name] = (text, None)
        # Stored as encoded now: no object of it is handed out to be changed in place.
        state.values.pop(name, None)
        state.loaded.pop(name, None)
        state.deleted.discard(name)
        state.changed.add(name)
        state.modified = True
        if state.id is None:
            state.id = _ids.new_id()

    def _drop_reserved(self, name: str) -> None:
        if name in self._state.entries:
            self._forget(name)

    def flash(self, message: Any, category: str = "info") -> None:
        """Keep `message` for the next page the visitor sees, until `pop_flashes` reads it.

        Flash messages live in the session's row (no storage round trip of their own)
        under the reserved key ``"sqlsession.flashes"``, hidden from the mapping. They
        stay until read, however many requests that takes (a redirect after a POST, a
        page that shows none), or until the session ends; `clear` removes them.

        Args:
            message: a JSON value (usually a str).
            category: a label for the template (``"info"``, ``"error"``, ...).

        Raises:
            TypeError: `category` is not a str.
            ValueNotSerializableError: `message` is not JSON.
            SessionTooLargeError: the session would grow past ``max_size``; nothing was
                changed.
        """
        _flash.add(self, message, category)

    def pop_flashes(self, category: str | None = None) -> list[Flash]:
        """Return the flash messages in the order they were flashed, and remove them.

        A session without any writes nothing. With `category`, only the messages of that
        category are returned and removed; the others stay for a later call.

        Args:
            category: only this category (None: all).

        Returns:
            `Flash` tuples ``(message, category)``, oldest first.

        Raises:
            TypeError: `category` is not None or a str.
        """
        return _flash.pop(self, category)

    def csrf_token(self) -> str:
        """A CSRF token for this session, to put in a form field or a request header.

        The session's secret is 256 random bits kept in its row (reserved key
        ``"sqlsession.csrf"``, hidden from the mapping), made on first use: a session
        without one gets it, and an id, with this call. Each call returns the secret
        masked with a new random pad, so the text differs every time (no page leaks it
        through compression, BREACH) while every one of them passes `check_csrf_token`.
        The secret is replaced whenever the id is (`regenerate`, `bind_user` and an
        ``identity_key`` sign-in, `clear`, `destroy`), which voids the tokens handed out.

        Returns:
            The token: 86 characters of URL-safe base64.
        """
        return _csrf.token(self)

    def check_csrf_token(self, token: object) -> bool:
        """Whether `token` came from this session's `csrf_token`, compared in constant time.

        Never makes a secret: a session without one matches nothing.

        Args:
            token: what the request sent (a str; anything else, None included, fails).

        Returns:
            True when it matches.
        """
        return _csrf.check(self, token)

    # -- the session's identity ---------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The id the response's cookie carries: None for a new session nothing was stored in.

        A new session gets its id with its first change. Treat the id as a secret: it is
        the visitor's credential. The storage holds only its hash.
        """
        self._state.accessed = True
        return self._state.id

    def regenerate(self) -> None:
        """Keep the data under a new id, and remove the row of the old one at commit.

        Call it whenever the visitor's privileges change (sign-in, sign-out, sudo mode),
        so an id someone else may know stops working. The absolute lifetime (``max_age``)
        still counts from the session's creation.
        """
        state = self._state
        state.regenerated = state.modified = True
        state.id = _ids.new_id()
        # A CSRF token an attacker may have seen with the old id stops working too.
        self._drop_reserved(_reserved.CSRF)

    def destroy(self) -> None:
        """End the session: its row is removed and the cookie expired at commit.

        The mapping is empty afterwards; anything stored in it later in the same request
        starts a new session under a new id.
        """
        state = self._state
        if state.stored_id is not None:
            state.discard.add(_ids.storage_key(state.stored_id))
        state.id = state.stored_id = None
        state.created_ms = state.seen_ms = None
        state.max_age_ms, state.max_age_set = None, False
        state.user = None
        state.bind = None
        state.entries.clear()
        state.original.clear()
        state.values.clear()
        state.forget_loaded()
        state.changed.clear()
        state.deleted.clear()
        state.reseal.clear()
        state.regenerated = False
        state.destroyed = state.modified = True

    def _switches_user(self, user_id: str | None) -> bool:
        """Whether binding `user_id` replaces another bound user (None, a sign-out: no)."""
        bound = self._bound_key()
        return (
            user_id is not None
            and bound is not None
            and bound != self._state.policy.user_key(user_id)
        )

    def _bound_key(self) -> str | None:
        """The storage key of the user this session is (or is about to be) bound to."""
        state = self._state
        if state.bind is not None:
            return state.policy.user_key(state.bind)
        return None if state.user is None else state.user[0]

    def bind_user(self, user_id: str) -> None:
        """Tie the session to `user_id`, so `sign_out_everywhere` can end it; also regenerates.

        Call it at sign-in. It gives the session a new id (as `regenerate`), so an id
        planted in the visitor's browser before sign-in is worthless afterwards. A
        session bound to another user is emptied first (as Django's ``login()``): one
        user's data never carries over to the next. Only a hash of `user_id` is stored
        (keyed with the middleware's ``secret_key`` when it has one). A bound session
        costs one more read per request: its user's generation token, compared with the
        one it was bound to.

        Args:
            user_id: the signed-in user's id.

        Raises:
            TypeError: `user_id` is not a non-empty str.
        """
        user_id = _ids.check_user_id(user_id)
        state = self._state
        state.accessed = True
        bound = self._bound_key()
        if bound is not None and bound != state.policy.user_key(user_id):
            self._empty()
            state.user = None
        state.bind = user_id
        self.regenerate()

    def sign_out_everywhere(self) -> None:
        """End every session of this session's user, on every device, including this one.

        At commit the user's generation token is replaced, which invalidates every session
        bound before, and this session is destroyed.

        Raises:
            SessionError: the session is not bound to a user (see `bind_user`).
        """
        state = self._state
        state.accessed = True
        user = self._bound_key()
        if user is None:
            raise SessionError(
                "sign_out_everywhere() needs a session bound to a user: call "
                "session.bind_user(user_id) at sign-in."
            )
        state.revoke = user
        self.destroy()

    # -- lifetime and devices (see sqlsession.web.devices) -----------------------------

    def set_max_age(self, seconds: float | None) -> None:
        """Give this session its own lifetime, as Django's ``set_expiry`` ("remember me").

        Counted from the session's creation, as the middleware's ``max_age``, and stored
        with the session: it holds on later requests and through `regenerate` and
        `bind_user`, and the cookie's Max-Age and the row's expiry follow it. The
        ``idle_timeout`` still applies.

        Args:
            seconds: the lifetime, at most the middleware's ``max_age`` (a longer one is
                refused, not clamped: raise ``max_age`` to allow it); ``0``: a cookie
                without Max-Age, which the browser drops when it closes (the row still
                ends at ``max_age``); None: back to the middleware's ``max_age``.

        Raises:
            InvalidTTLError: `seconds` is not None, 0 or 0.001 s up to ``max_age``.
        """
        state = self._state
        if seconds is None or (seconds == 0 and type(seconds) in (int, float)):
            value = None if seconds is None else 0
        else:
            checked = _validate.check_ttl(seconds, what="set_max_age(seconds)")
            assert checked is not None
            limit = state.policy.max_age
            if limit is not None and checked > limit:
                raise InvalidTTLError(
                    f"set_max_age({seconds!r}) is longer than the middleware's max_age of "
                    f"{limit:g} seconds, which bounds every session: pass at most that, or "
                    "raise max_age."
                )
            value = math.ceil(checked * 1000)
        state.accessed = state.modified = True
        state.max_age_ms, state.max_age_set = value, True

    async def user_sessions(self) -> list[DeviceSession]:
        """The signed-in user's live sessions, this one included (``current``), newest first.

        Reads the user's device index, generation token and sessions (three reads on a
        driver with ``get_many``); entries of sessions that ended are pruned.

        Returns:
            One `DeviceSession` per live session, with a label for `end_session`.

        Raises:
            SessionError: the session is not bound to a user, or not loaded by a store.
        """
        book, user_key = devices.book_of(self._state, "user_sessions()")
        self._state.accessed = True
        return await book.sessions(user_key, devices.current_label(self._state))

    async def end_session(self, label: str) -> bool:
        """End another session of this user, named by its `DeviceSession.label`, at once.

        Args:
            label: a label from `user_sessions`.

        Returns:
            Whether the user had a session of that label (False: it had ended already).

        Raises:
            InvalidLabelError: `label` does not have the form of a label.
            SessionError: `label` is this session's (use `destroy`), or the session is
                not bound to a user.
        """
        label = devices.check_label(label)
        book, user_key = devices.book_of(self._state, "end_session()")
        self._state.accessed = True
        if label == devices.current_label(self._state):
            raise SessionError(
                "end_session() was given this session's own label: call session.destroy() "
                "to end the current session."
            )
        return await book.end(user_key, [label]) == 1

    async def sign_out_other_devices(self) -> int:
        """End every other session of this user at once, keeping this one signed in.

        Sessions signed in concurrently with this call may survive it.

        Returns:
            How many sessions were ended.

        Raises:
            SessionError: the session is not bound to a user.
        """
        book, user_key = devices.book_of(self._state, "sign_out_other_devices()")
        self._state.accessed = True
        return await book.end(user_key, None, keep=devices.current_label(self._state))


def _identity(value: Any) -> str | None:
    """The user id an assignment to the identity key signs in (None: signs out).

    A str is the id itself (as `bind_user` takes it); None and "" sign out; any other
    value is identified by its JSON text with sorted keys, so ``42`` is the user "42".
    """
    if value is None or value == "":
        return None
    if type(value) is str:
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def state_of(session: Session) -> SessionState:
    """The state behind `session`, for `SessionStore` only (the store's protocol, not an API).

    Args:
        session: a session built by ``Session()`` or `SessionStore.load`.

    Returns:
        The `SessionState` the session reads and writes.
    """
    return session._state
