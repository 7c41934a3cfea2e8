"""Session keys sqlsession keeps for itself (flash messages, the CSRF token) in the session's row.

They live in the row as any other key does, so they cost no storage round trip of their
own, but the app does not see them: iteration, ``len``, ``in``, reading and ``repr``
skip them, and assigning or deleting one is refused. The whole ``sqlsession.`` prefix
is kept, so later features can add keys without taking a name an app already uses.
"""

from __future__ import annotations

from ..errors import InvalidKeyError

PREFIX = "sqlsession."
FLASHES = PREFIX + "flashes"
"""The flash messages: a JSON list of ``[category, message]`` pairs, oldest first."""
CSRF = PREFIX + "csrf"
"""The session's CSRF token (a str)."""


def is_reserved(name: object) -> bool:
    """Whether `name` is a session key of sqlsession's own, hidden from the app."""
    return isinstance(name, str) and name.startswith(PREFIX)


def refuse(name: str) -> InvalidKeyError:
    """The error for an app that assigns or deletes the reserved key `name`."""
    return InvalidKeyError(
        f"Session keys starting with {PREFIX!r} are kept by sqlsession (flash messages, the "
        f"CSRF token), got {name!r}: use session.flash()/pop_flashes() and "
        "session.csrf_token(), or another key name."
    )
