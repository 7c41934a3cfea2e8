"""Flash messages: kept in the session's row until the page that shows them pops them.

Stored under the reserved key ``"sqlsession.flashes"`` as a JSON list of
``[category, message]`` pairs, oldest first: one key, so flashing and popping change
one entry of the row and cost the commit nothing beyond the write it makes anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from . import _reserved

if TYPE_CHECKING:
    from .session import Session


class Flash(NamedTuple):
    """One flash message, as `Session.pop_flashes` returns it."""

    message: Any
    """The JSON value that was flashed (usually a str)."""
    category: str
    """Its category (``"info"`` unless another was given)."""


def _check_category(category: object) -> str:
    if type(category) is not str:
        raise TypeError(
            f"A flash category must be a str (such as 'info' or 'error'), got "
            f"{type(category).__name__}."
        )
    return category


def _stored(session: Session) -> list[Any]:
    value = session._get_reserved(_reserved.FLASHES)
    # Only sqlsession writes this key; anything else found there is dropped, not shown.
    if not isinstance(value, list):
        return []
    return [p for p in value if isinstance(p, list) and len(p) == 2 and type(p[0]) is str]


def add(session: Session, message: Any, category: str) -> None:
    """Append `message` to the session's flash messages (see `Session.flash`)."""
    category = _check_category(category)
    session._put_reserved(_reserved.FLASHES, [*_stored(session), [category, message]])


def pop(session: Session, category: str | None) -> list[Flash]:
    """Remove and return the session's flash messages (see `Session.pop_flashes`)."""
    if category is not None:
        _check_category(category)
    stored = _stored(session)
    if not stored:
        return []  # nothing to remove: nothing changes, nothing is written
    taken = [p for p in stored if category is None or p[0] == category]
    kept = [p for p in stored if category is not None and p[0] != category]
    if not taken:
        return []
    if kept:
        session._put_reserved(_reserved.FLASHES, kept)
    else:
        session._drop_reserved(_reserved.FLASHES)
    return [Flash(message, name) for name, message in taken]
