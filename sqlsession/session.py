"""The `Session` mapping and the `SessionStore` that loads and commits it through a driver.

A session is one driver item under ``"s:" + sha256(id)``, a dict laid out flat so that
an atomic ``merge_item`` can change one session key without rewriting the others::

    {
        "created": 1700000000000,          # ms since the epoch; max_age counts from here
        "seen": 1700000100000,             # ms; last write, idle_timeout counts from here
        "user": ["u:<sha256>", "<token>"], # optional, see bind_user()
        "k:cart": {"v": [1, 2]},           # one entry per session key ...
        "k:flash": {"v": "hi", "e": 1700000130000},  # ... "e": per-key expiry in ms
    }

Concurrent requests of one session that change different keys both persist: the commit
sends only the entries that changed (and the names deleted) to ``merge_item``, which
applies them to the stored dict in one atomic step, across processes. A driver without
``merge_item`` gets a re-read of the item just before the write, with only this request's
changes applied on top: a change made by another request in between the two calls is
lost (last writer wins).

Writes per request: none for a request without a session cookie that stores nothing,
and none for an unchanged session, except that with ``idle_timeout`` one refresh write
happens once at least half of it has passed since the last write. ``max_age`` costs no
writes: it counts from ``created``, which no request moves. A changed session costs one
``merge_item``; ``regenerate()`` one ``set_item`` and one ``remove_item``.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _codec, _session_ids, _validate
from .driver import SessionDriver, SupportsExpiry, SupportsMerge
from .errors import SessionError, ValueNotSerializableError

__all__ = ["DEFAULT_MAX_AGE", "CookieChange", "Session", "SessionStore", "end_user_sessions"]

logger = logging.getLogger("sqlsession")

DEFAULT_MAX_AGE = 14 * 24 * 60 * 60
"""Two weeks, as Starlette's cookie ``SessionMiddleware``."""

Clock = Callable[[], float]
_Entry = tuple[str, "int | None"]  # (value as JSON text, expiry in ms or None)
_KEY = "k:"
# How many cookies of our name one request may make us look up: a browser sends more
# than one only when cookies of one name exist for several paths or domains.
_MAX_CANDIDATES = 3


class Session(MutableMapping[str, Any]):
    """One visitor's session data: a mutable mapping of str keys to JSON values.

    Values are copied when assigned and when read (they are kept as JSON text), so
    mutating a list read from the session changes nothing until it is assigned again;
    a value that is not JSON is refused at assignment with `ValueNotSerializableError`.
    Changes are written when the request ends, by `SessionStore.commit`.

    A `Session` is built by `SessionStore.load`; ``Session()`` is a new, empty one.

    Args:
        clock: returns seconds since the epoch (default ``time.time``).
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else time.time
        self._id: str | None = None  # the id the cookie will carry
        self._stored_id: str | None = None  # the id of the row this session was read from
        self._created_ms: int | None = None
        self._seen_ms: int | None = None
        self._user: list[str] | None = None  # [user key, generation token] as stored
        self._entries: dict[str, _Entry] = {}
        self._original: dict[str, _Entry] = {}
        self._changed: set[str] = set()
        self._deleted: set[str] = set()
        self._discard: set[str] = set()  # storage keys to remove at commit
        self._presented = False  # the request carried a cookie of ours
        self._accessed = False  # the app read or wrote the mapping (the response varies)
        self._regenerated = False
        self._destroyed = False
        self._bind: str | None = None  # user id to bind at commit
        self._revoke: str | None = None  # user key whose sessions end at commit

    # -- the mapping ---------------------------------------------------------------

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    def _live(self, name: str) -> _Entry | None:
        self._accessed = True
        entry = self._entries.get(name)
        if entry is None or (entry[1] is not None and entry[1] <= self._now_ms()):
            return None
        return entry

    def __getitem__(self, key: str) -> Any:
        entry = self._live(key)
        if entry is None:
            raise KeyError(key)
        return _codec.decode(entry[0])

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if self._live(key) is None:
            raise KeyError(key)
        del self._entries[key]
        self._changed.discard(key)
        self._deleted.add(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._live(key) is not None

    def __iter__(self) -> Iterator[str]:
        self._accessed = True
        return iter(self._names())

    def _names(self) -> list[str]:
        now = self._now_ms()
        return [n for n, (_, exp) in self._entries.items() if exp is None or exp > now]

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        # Never the id: reprs end up in logs and tracebacks.
        # Nor does it count as reading the session (logging it adds no Vary).
        return f"<Session keys={sorted(self._names())!r}>"

    def clear(self) -> None:
        """Delete every key; the session itself stays (use `destroy` to end it)."""
        self._accessed = True
        for name in list(self._entries):
            del self._entries[name]
            self._changed.discard(name)
            self._deleted.add(name)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store a copy of `value` under `key`, optionally only for `ttl` seconds.

        Args:
            key: a str.
            value: dicts with str keys, lists, str, int, float, bool or None.
            ttl: seconds after which the key disappears on its own (None: it lives as
                long as the session). ``session[key] = value`` is ``set(key, value)``.

        Raises:
            TypeError: `key` is not a str.
            ValueNotSerializableError: `value` is not JSON.
            InvalidTTLError: `ttl` is not None or at least 0.001 seconds.
        """
        if type(key) is not str:
            raise TypeError(f"Session keys must be str, got {type(key).__name__}: {key!r}.")
        self._accessed = True
        seconds = _validate.check_ttl(ttl)
        text = _codec.encode(key, value)
        expires = None if seconds is None else self._now_ms() + math.ceil(seconds * 1000)
        self._entries[key] = (text, expires)
        self._deleted.discard(key)
        self._changed.add(key)
        self._ensure_id()

    # -- the session's identity ---------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The id the response's cookie carries: None for a new session nothing was stored in.

        A new session gets its id with its first change. Treat the id as a secret: it is
        the visitor's credential. The storage holds only its hash.
        """
        self._accessed = True
        return self._id

    def _ensure_id(self) -> None:
        if self._id is None:
            self._id = _session_ids.new_id()

    def regenerate(self) -> None:
        """Keep the data under a new id, and remove the row of the old one at commit.

        Call it whenever the visitor's privileges change (sign-in, sign-out, sudo mode),
        so an id someone else may know stops working. The absolute lifetime (``max_age``)
        still counts from the session's creation.
        """
        self._regenerated = True
        self._id = _session_ids.new_id()

    def destroy(self) -> None:
        """End the session: its row is removed and the cookie expired at commit.

        The mapping is empty afterwards; anything stored in it later in the same request
        starts a new session under a new id.
        """
        if self._stored_id is not None:
            self._discard.add(_session_ids.storage_key(self._stored_id))
        self._id = self._stored_id = None
        self._created_ms = self._seen_ms = None
        self._user = None
        self._bind = None
        self._entries.clear()
        self._original.clear()
        self._changed.clear()
        self._deleted.clear()
        self._regenerated = False
        self._destroyed = True

    def bind_user(self, user_id: str) -> None:
        """Tie the session to `user_id`, so `sign_out_everywhere` can end it; also regenerates.

        Call it at sign-in. It gives the session a new id (as `regenerate`), so an id
        planted in the visitor's browser before sign-in is worthless afterwards. Only a
        hash of `user_id` is stored. A bound session costs one more read per request:
        its user's generation token, compared with the one it was bound to.

        Raises:
            TypeError: `user_id` is not a non-empty str.
        """
        if type(user_id) is not str or not user_id:
            raise TypeError(f"user_id must be a non-empty str, got {user_id!r}.")
        self._bind = user_id
        self.regenerate()

    def sign_out_everywhere(self) -> None:
        """End every session of this session's user, on every device, including this one.

        At commit the user's generation token is replaced, which invalidates every session
        bound before, and this session is destroyed.

        Raises:
            SessionError: the session is not bound to a user (see `bind_user`).
        """
        self._accessed = True
        if self._bind is not None:
            user = _session_ids.user_key(self._bind)
        elif self._user is not None:
            user = self._user[0]
        else:
            raise SessionError(
                "sign_out_everywhere() needs a session bound to a user: call "
                "session.bind_user(user_id) at sign-in."
            )
        self._revoke = user
        self.destroy()


@dataclass(frozen=True)
class CookieChange:
    """What the response must do with the session cookie after a commit.

    ``session_id`` None means expire the cookie; ``max_age`` None means a cookie that
    lasts until the browser closes.
    """

    session_id: str | None
    max_age: float | None = None


class SessionStore:
    """Loads sessions from a driver and commits their changes; framework-agnostic.

    Args:
        driver: any `SessionDriver`. Atomic commits need `SupportsMerge`; rows expire
            with the session only on a `SupportsExpiry` driver (without it, expired
            sessions are refused on load and their rows left to the driver).
        max_age: absolute lifetime in seconds, counted from creation; no activity
            extends it (None: no absolute limit).
        idle_timeout: the session ends after this many seconds without a request
            (None: no idle limit). Activity is written at most once per half of it, so
            a session ends between ``idle_timeout / 2`` and ``idle_timeout`` after its
            last request.
        clock: returns seconds since the epoch (default ``time.time``).

    Raises:
        InvalidTTLError: `max_age` or `idle_timeout` is not None or 0.001 s to 100 years.
    """

    def __init__(
        self,
        driver: SessionDriver,
        *,
        max_age: float | None = DEFAULT_MAX_AGE,
        idle_timeout: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.driver = driver
        self.max_age = _validate.check_ttl(max_age, what="max_age")
        self.idle_timeout = _validate.check_ttl(idle_timeout, what="idle_timeout")
        self._clock: Clock = clock if clock is not None else time.time
        # Which optional capabilities to use is decided once, not per request.
        self._expiry = isinstance(driver, SupportsExpiry)
        self._merge = driver if isinstance(driver, SupportsMerge) else None

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    # -- loading -------------------------------------------------------------------

    async def load(self, cookie_values: Sequence[str]) -> Session:
        """Return the session named by the request's cookie values, or a new, empty one.

        Malformed values are skipped without touching storage. An id whose row is
        unknown, expired, revoked or undecodable is never adopted: the visitor gets a
        new session (and a new id with its first change). A row that cannot be decoded,
        has expired by our own clock or was revoked is logged and removed at commit.

        Raises:
            Exception: whatever the driver raises while reading (the caller logs it
                and answers 500).
        """
        session = Session(clock=self._clock)
        session._presented = bool(cookie_values)
        candidates = [v for v in cookie_values if _session_ids.is_well_formed(v)]
        for session_id in candidates[:_MAX_CANDIDATES]:
            key = _session_ids.storage_key(session_id)
            label = _session_ids.log_label(session_id)
            try:
                raw = await self.driver.get_item(key)
            except SessionError:
                raise  # the driver failed (some of ours derive from ValueError): a 500
            except (ValueError, RecursionError):
                # The driver found the item but could not decode it (bad or too deeply
                # nested JSON text).
                logger.warning("Session %s cannot be decoded; starting a new one.", label)
                session._discard.add(key)
                continue
            if raw is None:
                continue
            state = _parse(raw)
            if state is None:
                logger.warning(
                    "Session %s holds data sqlsession cannot read; starting a new one.", label
                )
                session._discard.add(key)
                continue
            if not self._alive(state):
                session._discard.add(key)
                continue
            user = state["user"]
            if user is not None and await self._user_token(user[0]) != user[1]:
                logger.info("Session %s was ended by sign_out_everywhere.", label)
                session._discard.add(key)
                continue
            session._id = session._stored_id = session_id
            session._created_ms = state["created"]
            session._seen_ms = state["seen"]
            session._user = user
            session._entries = state["entries"]
            session._original = dict(state["entries"])
            break
        return session

    def _alive(self, state: dict[str, Any]) -> bool:
        # The driver's row ttl usually hides expired sessions already; this check makes
        # the lifetime exact for drivers without expiry and after a config change.
        now = self._now_ms()
        if self.max_age is not None and state["created"] + self.max_age * 1000 <= now:
            return False
        return not (
            self.idle_timeout is not None and state["seen"] + self.idle_timeout * 1000 <= now
        )

    async def _user_token(self, user_key: str) -> str:
        value = await self.driver.get_item(user_key)
        if isinstance(value, dict) and isinstance(value.get("g"), str):
            return str(value["g"])
        return ""

    # -- committing ------------------------------------------------------------------

    def _row_ttl(self, created_ms: int, now_ms: int) -> float | None:
        """Seconds until the row must expire: the nearer of the absolute and idle deadlines."""
        deadlines = []
        if self.max_age is not None:
            deadlines.append(created_ms + self.max_age * 1000)
        if self.idle_timeout is not None:
            deadlines.append(now_ms + self.idle_timeout * 1000)
        return None if not deadlines else (min(deadlines) - now_ms) / 1000

    def _ttl_kwargs(self, ttl: float | None) -> dict[str, Any]:
        # No deadline: leave the row to the driver's own default ttl. A driver without
        # touch is never passed ttl= (the rule of SupportsExpiry).
        return {"ttl": ttl} if ttl is not None and self._expiry else {}

    async def commit(self, session: Session) -> CookieChange | None:
        """Write what changed in `session`; return what to do with the cookie (None: nothing).

        Raises:
            Exception: whatever the driver raises while writing (the caller logs it and
                answers 500 instead of the app's response).
        """
        now = self._now_ms()
        if session._revoke is not None:
            # A fresh random token, not a counter: no read-increment race, and a session
            # bound to an older token can never match again.
            value = {"g": secrets.token_urlsafe(16)}
            # No expiry: were it to vanish, sessions bound before it would match again.
            ttl = {"ttl": None} if self._expiry else {}
            await self.driver.set_item(session._revoke, value, **ttl)
            session._revoke = None
        if session._bind is not None:
            user = _session_ids.user_key(session._bind)
            session._user = [user, await self._user_token(user)]
        change = await self._write(session, now)
        for key in sorted(session._discard):
            await self.driver.remove_item(key)
        session._discard.clear()
        if (
            change is None
            and session._stored_id is None
            and (session._presented or session._destroyed)
        ):
            # The cookie names nothing we keep (expired, unknown, destroyed): drop it, so
            # the browser stops sending it and we stop looking it up.
            change = CookieChange(None)
        return change

    async def _write(self, session: Session, now: int) -> CookieChange | None:
        now_entries = {n: e for n, e in session._entries.items() if e[1] is None or e[1] > now}
        if session._stored_id is not None and not session._regenerated:
            return await self._update(session, now, now_entries)
        old_id = session._stored_id
        if old_id is not None:
            session._discard.add(_session_ids.storage_key(old_id))
        if not now_entries and session._user is None:
            # Nothing to keep (a new session nobody wrote to, or a regenerated empty one).
            session._stored_id = None
            return None
        assert session._id is not None  # every change and regenerate() assigns one
        created = session._created_ms if session._created_ms is not None else now
        ttl = self._row_ttl(created, now)
        if ttl is not None and ttl < 0.001:
            session._stored_id = None
            return None
        row: dict[str, Any] = {"created": created, "seen": now}
        if session._user is not None:
            row["user"] = session._user
        for name, entry in now_entries.items():
            row[_KEY + name] = _entry_value(entry)
        await self.driver.set_item(
            _session_ids.storage_key(session._id), row, **self._ttl_kwargs(ttl)
        )
        session._stored_id = session._id
        session._created_ms, session._seen_ms = created, now
        session._original = dict(now_entries)
        session._changed.clear()
        session._deleted.clear()
        session._regenerated = False
        session._bind = None
        return CookieChange(session._id, ttl)

    async def _update(
        self, session: Session, now: int, now_entries: dict[str, _Entry]
    ) -> CookieChange | None:
        assert session._stored_id is not None
        assert session._created_ms is not None
        original = session._original
        changed = {
            n for n in session._changed if n in now_entries and now_entries[n] != original.get(n)
        }
        deleted = {n for n in session._deleted if n in original}
        # Expired keys are not deleted here: readers skip them anyway, and deleting them
        # could remove a value another request has just set again under the same name.
        refresh = (
            self.idle_timeout is not None
            and session._seen_ms is not None
            and now - session._seen_ms >= self.idle_timeout * 500
        )
        if not (changed or deleted or refresh):
            return None
        key = _session_ids.storage_key(session._stored_id)
        ttl = self._row_ttl(session._created_ms, now)
        if ttl is not None and ttl < 0.001:
            # The absolute lifetime ran out during this request.
            session._discard.add(key)
            session._stored_id = None
            return None
        changes: dict[str, Any] = {_KEY + n: _entry_value(now_entries[n]) for n in changed}
        # Every write is activity: "seen" and the row's expiry always move together.
        changes["seen"] = now
        removals = sorted(_KEY + n for n in deleted)
        if self._merge is not None:
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
        session._seen_ms = now
        session._original = dict(now_entries)
        session._entries = dict(now_entries)
        session._changed.clear()
        session._deleted.clear()
        session._bind = None
        if self.idle_timeout is None:
            return None
        # The idle deadline moved: move the cookie's with it.
        return CookieChange(session._stored_id, ttl)


def _entry_value(entry: _Entry) -> dict[str, Any]:
    value: dict[str, Any] = {"v": _codec.decode(entry[0])}
    if entry[1] is not None:
        value["e"] = entry[1]
    return value


def _is_int(value: Any) -> bool:
    return type(value) is int


def _parse(raw: Any) -> dict[str, Any] | None:
    """The stored row as {"created", "seen", "user", "entries"}, or None if it is not ours."""
    if not isinstance(raw, dict) or not _is_int(raw.get("created")) or not _is_int(raw.get("seen")):
        return None
    user = raw.get("user")
    if user is not None and not (
        isinstance(user, list) and len(user) == 2 and all(type(u) is str for u in user)
    ):
        return None
    entries: dict[str, _Entry] = {}
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
    return {"created": raw["created"], "seen": raw["seen"], "user": user, "entries": entries}


async def end_user_sessions(driver: SessionDriver, user_id: str) -> None:
    """End every session bound to `user_id` with `Session.bind_user`, outside a request.

    For an admin tool or a password-reset handler. Sessions are invalidated, not deleted:
    each one's row is removed the next time it is presented, or expires.

    Args:
        driver: the driver the sessions live in.
        user_id: the id that was passed to `bind_user`.

    Raises:
        TypeError: `user_id` is not a non-empty str.
    """
    if type(user_id) is not str or not user_id:
        raise TypeError(f"user_id must be a non-empty str, got {user_id!r}.")
    kwargs = {"ttl": None} if isinstance(driver, SupportsExpiry) else {}
    await driver.set_item(
        _session_ids.user_key(user_id), {"g": secrets.token_urlsafe(16)}, **kwargs
    )
