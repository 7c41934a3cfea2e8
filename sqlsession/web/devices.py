"""A signed-in user's sessions ("devices"): list them, end one, end all but the current one.

Each user bound with ``bind_user`` has one index item under ``"d:" + <the hash of the
user key>``: a dict from a session's *label* to ``[its storage key, its deadline]``, the
deadline being when ``max_age`` ends it at the latest (ms; null without ``max_age``). A
label is 16 random URL-safe characters drawn at sign-in: it names the session to its own
user and to an admin, is not a session id (a cookie carrying it is refused before any
read, since an id has 43 characters), and tells nothing of the storage key. It stays
with the session through ``regenerate`` and is stored in the session row (``"dev":
{"l": label, ...}``) with the opt-in user agent and truncated client address.

Costs: the index is written only when a bound session's whole row is written (sign-in,
regenerate), with one atomic ``merge_item``, so concurrent sign-ins of one user both
land, and an entry is removed when its session ends (destroy, sign-out, user switch).
A request that does neither reads and writes nothing more. A sign-in drops the entries
past their deadline from the index the merge returns (one more write, only when there
are some), so an index does not grow with sessions nobody signed out of. Listing reads
the index, the user's generation token and the listed rows, and prunes the entries whose
row is gone.
"""

from __future__ import annotations

import ipaddress
import math
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..driver import (
    SessionDriver,
    SupportsExpiry,
    SupportsMany,
    SupportsMerge,
    SupportsMergeExisting,
)
from ..errors import InvalidLabelError, SessionError
from . import _ids, _row

if TYPE_CHECKING:
    from ._state import SessionState

__all__ = ["DeviceSession", "end_user_session", "list_user_sessions"]

INDEX_PREFIX = "d:"
_LABEL = re.compile(r"[A-Za-z0-9_-]{16}\Z")
_LABEL_BYTES = 12  # 16 characters of URL-safe base64
USER_AGENT_MAX = 200
"""Characters of the User-Agent header kept (the rest is cut: it only has to be recognisable)."""


@dataclass(frozen=True)
class DeviceSession:
    """One live session of a user, as a "Your devices" page shows it."""

    label: str
    """Names the session to `Session.end_session` and `end_user_session`; not an id."""
    created_at: datetime
    """When the session was created (UTC)."""
    last_seen_at: datetime
    """Its last write (UTC): with ``idle_timeout``, within half of it of the last request."""
    user_agent: str | None
    """The User-Agent at sign-in, cut to 200 characters (None unless ``record_client``)."""
    client_address: str | None
    """The client's network at sign-in, ``203.0.113.0/24`` or ``2001:db8:1::/48``
    (None unless ``record_client``)."""
    current: bool
    """True for the session asking (`Session.user_sessions`)."""


def index_key(user_key: str) -> str:
    """The storage key of a user's device index, from the user's storage key."""
    return INDEX_PREFIX + user_key[len(_ids.USER_PREFIX) :]


def new_label() -> str:
    """A fresh label: random, so it cannot be turned into the id or the storage key."""
    return secrets.token_urlsafe(_LABEL_BYTES)


def check_label(label: object) -> str:
    """Return `label` if it has the form of a label, else raise `InvalidLabelError`."""
    if type(label) is not str or _LABEL.match(label) is None:
        # Never the value: a caller may pass a session id here by mistake.
        got = "a str of another form" if type(label) is str else type(label).__name__
        raise InvalidLabelError(
            "A session label is the 16 characters of a DeviceSession.label (from "
            f"user_sessions() or list_user_sessions()), got {got}."
        )
    return label


def client_info(scope: Mapping[str, Any]) -> dict[str, str]:
    """The user agent and truncated client address of an ASGI request, for the row."""
    info: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            agent = bytes(value).decode("latin-1")[:USER_AGENT_MAX]
            if agent:
                info["ua"] = agent
            break
    client = scope.get("client")
    if client:
        network = truncate_address(str(client[0]))
        if network is not None:
            info["ip"] = network
    return info


def truncate_address(address: str) -> str | None:
    """`address` cut to its /24 (IPv4) or /48 (IPv6) network; None if it is no IP address.

    Enough to tell "home" from "another country", not enough to name a household.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # Masking the integer: building an ip_network object costs several times as much.
    if isinstance(ip, ipaddress.IPv4Address):
        return f"{ipaddress.IPv4Address(int(ip) & ~0xFF)}/24"
    return f"{ipaddress.IPv6Address(int(ip) & ~((1 << 80) - 1))}/48"


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


class DeviceBook:
    """A store's device indexes: what `SessionStore` and `Session` call for devices.

    Args:
        driver: the store's driver.
        alive: whether a parsed row is alive by the store's lifetimes.
        index_ttl: seconds an index item lives after a write: the store's ``max_age``,
            which bounds every session in it (None: no expiry; pruned on listing).
        record_client: keep the user agent and truncated client address in new rows.
    """

    def __init__(
        self,
        driver: SessionDriver,
        *,
        alive: Callable[[_row.Row], bool],
        index_ttl: float | None,
        record_client: bool,
    ) -> None:
        self.driver = driver
        self.alive = alive
        self.record_client = record_client
        self._ttl: dict[str, Any] = {"ttl": index_ttl} if isinstance(driver, SupportsExpiry) else {}

    # -- the store's hooks -------------------------------------------------------------

    async def place(
        self,
        state: SessionState,
        key: str,
        request: Mapping[str, Any] | None,
        *,
        now_ms: int,
        deadline_ms: float | None,
    ) -> dict[str, str] | None:
        """Index the session about to be written whole under `key`; return its "dev".

        The index is written before the row: an entry whose row never arrived is pruned
        on listing, while a row missing from its index could not be ended by label.

        Args:
            state: the session's state.
            key: its new storage key.
            request: the ASGI scope, for `client_info` (None: not recorded).
            now_ms: the time.
            deadline_ms: when the store's ``max_age`` ends the session at the latest (its
                own lifetime may be shorter, and may still change).
        """
        old = state.indexed
        device: dict[str, str] | None = None
        new: tuple[str, str] | None = None
        if state.user is not None:
            user_key = state.user[0]
            same = old is not None and old[0] == user_key
            label = old[1] if same and old is not None else new_label()
            device = {"l": label}
            if self.record_client and request is not None:
                device.update(client_info(request))
            elif same and state.device is not None:
                device.update({k: v for k, v in state.device.items() if k != "l"})
            await self._add(user_key, label, key, deadline_ms, now_ms)
            new = (user_key, label)
        if old is not None and old != new:
            await self.forget(*old)
        state.indexed = new
        state.device = device
        return device

    async def ended(self, state: SessionState) -> None:
        """Remove the entry of a session that ended in this request (destroy, expiry)."""
        if state.indexed is not None:
            await self.forget(*state.indexed)
            state.indexed = None

    async def forget(self, user_key: str, *labels: str) -> None:
        """Remove `labels` from the user's index, without re-creating a missing index."""
        key = index_key(user_key)
        if isinstance(self.driver, SupportsMergeExisting):
            await self.driver.merge_existing(key, delete=labels, **self._ttl)
        elif isinstance(self.driver, SupportsMerge):
            await self.driver.merge_item(key, delete=labels, **self._ttl)
        else:
            raw = await self.driver.get_item(key)
            if isinstance(raw, dict) and raw:
                for label in labels:
                    raw.pop(label, None)
                await self.driver.set_item(key, raw, **self._ttl)

    async def _add(
        self, user_key: str, label: str, session_key: str, deadline: float | None, now_ms: int
    ) -> None:
        key = index_key(user_key)
        entry = [session_key, None if deadline is None else math.ceil(deadline)]
        if isinstance(self.driver, SupportsMerge):
            stored = await self.driver.merge_item(key, set={label: entry}, **self._ttl)
        else:
            # Without merge_item, two sign-ins at once may lose one entry (documented).
            raw = await self.driver.get_item(key)
            stored = raw if isinstance(raw, dict) else {}
            stored[label] = entry
            await self.driver.set_item(key, stored, **self._ttl)
        past = [
            name
            for name, (_, ends) in _entries(stored).items()
            if ends is not None and ends <= now_ms
        ]
        if past:
            await self.forget(user_key, *past)

    async def _index(self, user_key: str) -> dict[str, str]:
        """The user's index: label to session storage key."""
        raw = await self.driver.get_item(index_key(user_key))
        return {label: key for label, (key, _) in _entries(raw).items()}

    # -- listing and ending ------------------------------------------------------------

    async def _rows(self, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(keys)
        if isinstance(self.driver, SupportsMany):
            return await self.driver.get_many(wanted)
        found = {}
        for key in wanted:
            value = await self.driver.get_item(key)
            if value is not None:
                found[key] = value
        return found

    async def sessions(self, user_key: str, current: str | None = None) -> list[DeviceSession]:
        """The live sessions of the user, newest activity first; prunes dead entries.

        Args:
            user_key: the user's storage key.
            current: the label of the session asking, flagged ``current``.
        """
        index = await self._index(user_key)
        if not index:
            return []
        token = _row.generation_token(await self.driver.get_item(user_key))
        rows = await self._rows(index.values())
        found: list[DeviceSession] = []
        dead: list[str] = []
        for label, key in index.items():
            row = _row.parse(rows.get(key))
            if row is None or not self._belongs(row, user_key, token, label):
                dead.append(label)
                continue
            device = row.device or {}
            found.append(
                DeviceSession(
                    label=label,
                    created_at=_when(row.created),
                    last_seen_at=_when(row.seen),
                    user_agent=device.get("ua"),
                    client_address=device.get("ip"),
                    current=label == current,
                )
            )
        if dead:
            await self.forget(user_key, *dead)
        found.sort(key=lambda d: (d.last_seen_at, d.created_at), reverse=True)
        return found

    def _belongs(self, row: _row.Row, user_key: str, token: str | None, label: str) -> bool:
        return (
            row.user is not None
            and row.user[0] == user_key
            and (token is None or row.user[1] == token)
            and row.device is not None
            and row.device.get("l") == label
            and self.alive(row)
        )

    async def end(
        self, user_key: str, labels: Iterable[str] | None, *, keep: str | None = None
    ) -> int:
        """End the sessions of `labels` (None: all but `keep`) in the user's index.

        Returns:
            How many of them the index listed.
        """
        index = await self._index(user_key)
        if labels is None:
            chosen = [label for label in index if label != keep]
        else:
            chosen = [label for label in labels if label in index]
        if not chosen:
            return 0
        # Rows first: a session whose row is gone is ended even if the index write fails.
        for label in chosen:
            await self.driver.remove_item(index[label])
        await self.forget(user_key, *chosen)
        return len(chosen)


def _entries(raw: Any) -> dict[str, tuple[str, int | None]]:
    """The well-formed entries of a stored index: label to (storage key, deadline)."""
    if not isinstance(raw, dict):
        return {}
    found: dict[str, tuple[str, int | None]] = {}
    for label, entry in raw.items():
        if (
            _LABEL.match(label)
            and isinstance(entry, list)
            and len(entry) == 2
            and type(entry[0]) is str
            and (entry[1] is None or type(entry[1]) is int)
        ):
            found[label] = (entry[0], entry[1])
    return found


def book_of(state: SessionState, what: str) -> tuple[DeviceBook, str]:
    """The store's `DeviceBook` and the bound user's key, for a `Session` method."""
    book = state.book
    if book is None:
        raise SessionError(
            f"{what} needs a session loaded by a SessionStore (or SessionMiddleware): "
            "it reads the storage."
        )
    user_key = None
    if state.bind is not None:
        user_key = state.policy.user_key(state.bind)
    elif state.user is not None:
        user_key = state.user[0]
    if user_key is None:
        raise SessionError(
            f"{what} needs a session bound to a user: call session.bind_user(user_id) at "
            "sign-in (or sign in with the middleware's identity_key)."
        )
    return book, user_key


def current_label(state: SessionState) -> str | None:
    """The label of the session `state` is, as stored (None before its first sign-in)."""
    return None if state.indexed is None else state.indexed[1]


async def list_user_sessions(
    driver: SessionDriver,
    user_id: str,
    *,
    max_age: float | None = None,
    idle_timeout: float | None = None,
    secret_key: str | bytes | None = None,
    clock: Callable[[], float] | None = None,
) -> list[DeviceSession]:
    """The live sessions of `user_id`, newest activity first, for an admin tool.

    Pass the `secret_key` the app's middleware has (user ids are keyed with it), and its
    `max_age` and `idle_timeout` to leave out sessions that are past them on a driver
    without row expiry (None: trust the driver's expiry). ``current`` is always False.

    Args:
        driver: the driver the sessions live in.
        user_id: the id that was passed to `Session.bind_user`.
        max_age: the sessions' ``max_age``.
        idle_timeout: the sessions' ``idle_timeout``.
        secret_key: the middleware's ``secret_key``.
        clock: seconds since the epoch (default ``time.time``).

    Returns:
        One `DeviceSession` per live session of the user.

    Raises:
        TypeError: `user_id` is not a non-empty str.
        InvalidTTLError, ConfigError: an option is invalid.
    """
    from .store import SessionStore

    store = SessionStore(
        driver, max_age=max_age, idle_timeout=idle_timeout, secret_key=secret_key, clock=clock
    )
    return await store.devices.sessions(store.user_key(user_id))


async def end_user_session(
    driver: SessionDriver,
    user_id: str,
    label: str,
    *,
    max_age: float | None = None,
    idle_timeout: float | None = None,
    secret_key: str | bytes | None = None,
    clock: Callable[[], float] | None = None,
) -> bool:
    """End the session `label` of `user_id` (from `list_user_sessions`), for an admin tool.

    Its row is removed at once: its next request starts a new, empty session.

    Args:
        driver: the driver the sessions live in.
        user_id: the id that was passed to `Session.bind_user`.
        label: a `DeviceSession.label` of that user.
        max_age: the sessions' ``max_age``.
        idle_timeout: the sessions' ``idle_timeout``.
        secret_key: the middleware's ``secret_key``.
        clock: seconds since the epoch (default ``time.time``).

    Returns:
        Whether the user had a session of that label.

    Raises:
        TypeError: `user_id` is not a non-empty str.
        InvalidLabelError: `label` does not have the form of a label.
        InvalidTTLError, ConfigError: an option is invalid.
    """
    from .store import SessionStore

    label = check_label(label)
    store = SessionStore(
        driver, max_age=max_age, idle_timeout=idle_timeout, secret_key=secret_key, clock=clock
    )
    return await store.devices.end(store.user_key(user_id), [label]) == 1
