"""Read stored web sessions for an operator: ``sqlsession show``, ``list``, ``stats``.

Nothing here prints a session id, a storage key or a user id: a session is named by a
12-hex-digit label of its stored hash (the label the session layer logs), a bound user
by the same kind of label of the user's stored hash. Equal labels mean the same user;
a label does not reveal the id (though, like the stored hash, it can be matched against
a guessed one). Values appear only when asked for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import _codec
from ..errors import SessionError
from . import _ids, _row
from ._crypto import Sealed

if TYPE_CHECKING:
    from ..drivers.sql import SQLDriver
    from .devices import DeviceSession

__all__ = [
    "Listing",
    "SessionInfo",
    "UnreadableSessionError",
    "as_json",
    "counts",
    "device_json",
    "device_lines",
    "list_sessions",
    "read_session",
    "session_key",
    "session_label",
    "show_lines",
    "table_lines",
]

_LABEL = 12


class UnreadableSessionError(SessionError):
    """A session row that sqlsession did not write (or can no longer read)."""


@dataclass(frozen=True, repr=False)
class SessionInfo:
    """What an operator may see of one stored session (no repr: it holds its keys)."""

    label: str
    created_ms: int
    seen_ms: int
    expires: float | None
    """Seconds since the epoch when the row expires; None: never."""
    user: str | None
    """The bound user's label (None: no user bound)."""
    signed_in: bool
    """False when ``sign_out_everywhere`` ended this session of its user."""
    entries: dict[str, _row.Entry]
    """The session's live keys: JSON text and per-key expiry in ms."""


def session_key(cookie_value: str) -> str:
    """The storage key of the session a cookie names, as the session layer computes it."""
    return _ids.storage_key(cookie_value)


def session_label(key: str) -> str:
    """The label of the session stored under `key`: what the session layer logs for it."""
    return _label(key, _ids.SESSION_PREFIX)


def _label(key: str, prefix: str) -> str:
    return key[len(prefix) :][:_LABEL]


async def _describe(
    driver: SQLDriver,
    key: str,
    row: _row.Row,
    token: Callable[[str], Awaitable[str | None]],
    now_ms: int,
) -> SessionInfo | None:
    expires = await driver.get_expiry(key)
    if expires is None:
        return None  # expired (or removed) since the row was read
    return SessionInfo(
        label=_label(key, _ids.SESSION_PREFIX),
        created_ms=row.created,
        seen_ms=row.seen,
        expires=None if expires == math.inf else expires,
        user=None if row.user is None else _label(row.user[0], _ids.USER_PREFIX),
        signed_in=row.user is None or await token(row.user[0]) in (None, row.user[1]),
        # Keys past their own expiry are gone for the app; they are for us too.
        entries={n: e for n, e in sorted(row.entries.items()) if e[1] is None or e[1] > now_ms},
    )


async def read_session(driver: SQLDriver, key: str, *, now_ms: int) -> SessionInfo | None:
    """The session stored under `key`, or None when there is no live one.

    Args:
        driver: the SQL driver of the session table.
        key: the session's storage key (`session_key`).
        now_ms: the time, for the keys' own expiry.

    Raises:
        UnreadableSessionError: the row is not one sqlsession wrote.
        SessionError: the driver failed.
    """
    raw = await driver.get_item(key)
    if raw is None:
        return None
    row = _row.parse(raw)
    if row is None:
        raise UnreadableSessionError(
            f"Session {_label(key, _ids.SESSION_PREFIX)} holds data sqlsession cannot read; "
            "the session layer replaces it when it is next presented."
        )

    async def token(user_key: str) -> str | None:
        return _row.generation_token(await driver.get_item(user_key))

    return await _describe(driver, key, row, token, now_ms)


@dataclass(frozen=True, repr=False)
class Listing:
    """The sessions `list_sessions` read, newest activity first, and what it left out."""

    sessions: list[SessionInfo]
    total: int
    """Every live session row in the table."""
    truncated: bool
    """True when the limit stopped the listing before the last row."""
    unreadable: int
    """Rows skipped because sqlsession cannot read them."""


async def list_sessions(driver: SQLDriver, *, limit: int, now_ms: int) -> Listing:
    """Read up to `limit` sessions, newest activity first.

    (One user's sessions come from their device index: `devices.list_user_sessions`.)

    Sessions are stored under hashes, so which ones a limit keeps is arbitrary; the
    ones read are then sorted by last activity. Each costs two reads.

    Args:
        driver: the SQL driver of the session table.
        limit: read at most this many sessions.
        now_ms: the time, for the keys' own expiry.

    Raises:
        SessionError: the driver failed.
    """
    keys = await driver.get_keys(_ids.SESSION_PREFIX)
    tokens: dict[str, str | None] = {}

    async def token(user_key: str) -> str | None:
        # Read once per user, not once per session.
        if user_key not in tokens:
            tokens[user_key] = _row.generation_token(await driver.get_item(user_key))
        return tokens[user_key]

    found: list[SessionInfo] = []
    unreadable = 0
    for key in keys:
        if len(found) == limit:
            return _listing(found, keys, truncated=True, unreadable=unreadable)
        raw = await driver.get_item(key)
        if raw is None:
            continue
        row = _row.parse(raw)
        if row is None:
            unreadable += 1
            continue
        info = await _describe(driver, key, row, token, now_ms)
        if info is not None:
            found.append(info)
    return _listing(found, keys, truncated=False, unreadable=unreadable)


def _listing(
    found: list[SessionInfo], keys: list[str], *, truncated: bool, unreadable: int
) -> Listing:
    found.sort(key=lambda info: info.seen_ms, reverse=True)
    return Listing(found, len(keys), truncated, unreadable)


async def counts(driver: SQLDriver) -> dict[str, int]:
    """Live session rows, live user rows, and every live and expired row."""
    every = await driver.stats()
    return {
        "sessions": (await driver.stats(_ids.SESSION_PREFIX))["live"],
        "users": (await driver.stats(_ids.USER_PREFIX))["live"],
        "live": every["live"],
        "expired": every["expired"],
    }


# -- output ------------------------------------------------------------------------


def _when(ms: float | None, *, for_json: bool = False) -> str | None:
    if ms is None:
        return None if for_json else "never"
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    if for_json:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _user_text(info: SessionInfo, *, none: str = "-") -> str:
    if info.user is None:
        return none
    return info.user if info.signed_in else f"{info.user} (signed out everywhere)"


def _expires_ms(info: SessionInfo) -> float | None:
    return None if info.expires is None else info.expires * 1000


def show_lines(info: SessionInfo, *, values: bool) -> list[str]:
    """`info` as lines of text, times in UTC; key values only when `values`."""
    lines = [
        f"session    {info.label}",
        f"created    {_when(info.created_ms)} UTC",
        f"last seen  {_when(info.seen_ms)} UTC",
        f"expires    {_when(_expires_ms(info))}" + (" UTC" if info.expires is not None else ""),
        f"user       {_user_text(info, none='none')}",
    ]
    if not info.entries:
        return [*lines, "keys       (none)"]
    if not values:
        names = [_key_text(name, entry) for name, entry in info.entries.items()]
        return [*lines, f"keys       {', '.join(names)}"]
    lines.append("keys")
    for name, entry in info.entries.items():
        value = "(encrypted)" if type(entry[0]) is Sealed else json.dumps(_codec.decode(entry[0]))
        lines.append(f"  {_key_text(name, entry)}: {value}")
    return lines


def _value_json(entry: _row.Entry, values: bool) -> dict[str, Any]:
    if not values:
        return {}
    # The CLI has no keys: an encrypted value is shown as such, never as its token.
    if type(entry[0]) is Sealed:
        return {"encrypted": True}
    return {"value": _codec.decode(entry[0])}


def _key_text(name: str, entry: _row.Entry) -> str:
    return name if entry[1] is None else f"{name} (until {_when(entry[1])} UTC)"


def table_lines(sessions: list[SessionInfo]) -> list[str]:
    """One line per session under a header: label, created, last seen, expiry, user."""
    rows = [("SESSION", "CREATED (UTC)", "LAST SEEN (UTC)", "EXPIRES (UTC)", "USER")]
    for info in sessions:
        rows.append(
            (
                info.label,
                str(_when(info.created_ms)),
                str(_when(info.seen_ms)),
                str(_when(_expires_ms(info))),
                _user_text(info),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    # The last column is not padded: no trailing spaces.
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)), row[4]])
        for row in rows
    ]


def as_json(info: SessionInfo, *, values: bool = False, keys: bool = True) -> dict[str, Any]:
    """`info` as a JSON object; times as ISO 8601 UTC strings, null for never."""
    found: dict[str, Any] = {
        "session": info.label,
        "created": _when(info.created_ms, for_json=True),
        "last_seen": _when(info.seen_ms, for_json=True),
        "expires": _when(_expires_ms(info), for_json=True),
        "user": None if info.user is None else {"label": info.user, "signed_in": info.signed_in},
    }
    if keys:
        found["keys"] = {
            name: {"expires": _when(entry[1], for_json=True)} | _value_json(entry, values)
            for name, entry in info.entries.items()
        }
    return found


def _ms(moment: datetime) -> float:
    return moment.timestamp() * 1000


def device_lines(sessions: list[DeviceSession]) -> list[str]:
    """One line per session of a user: device label, created, last seen, client."""
    rows = [("LABEL", "CREATED (UTC)", "LAST SEEN (UTC)", "ADDRESS", "USER AGENT")]
    for info in sessions:
        rows.append(
            (
                info.label,
                str(_when(_ms(info.created_at))),
                str(_when(_ms(info.last_seen_at))),
                info.client_address or "-",
                info.user_agent or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)), row[4]])
        for row in rows
    ]


def device_json(info: DeviceSession) -> dict[str, Any]:
    """One session of a user as a JSON object; times as ISO 8601 UTC strings."""
    return {
        "label": info.label,
        "created": _when(_ms(info.created_at), for_json=True),
        "last_seen": _when(_ms(info.last_seen_at), for_json=True),
        "client_address": info.client_address,
        "user_agent": info.user_agent,
    }
