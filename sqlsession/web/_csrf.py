"""The session's CSRF token: made on first use, kept in the row, compared in constant time.

Stored under the reserved key ``"sqlsession.csrf"``; `Session.regenerate` (and so
``bind_user``, ``clear`` and ``destroy``) drops it, so the next use makes a new one.
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING

from . import _reserved

if TYPE_CHECKING:
    from .session import Session

TOKEN_BYTES = 32
"""256 bits from the operating system's CSPRNG, as URL-safe base64 (43 characters)."""


def _current(session: Session) -> str | None:
    value = session._get_reserved(_reserved.CSRF)
    return value if type(value) is str and value else None


def token(session: Session) -> str:
    """The session's token, made (and stored at commit) when it has none."""
    session._state.accessed = True
    current = _current(session)
    if current is None:
        current = secrets.token_urlsafe(TOKEN_BYTES)
        session._put_reserved(_reserved.CSRF, current)
    return current


def check(session: Session, candidate: object) -> bool:
    """Whether `candidate` is the session's token; never makes one."""
    session._state.accessed = True
    current = _current(session)
    if current is None or type(candidate) is not str or not candidate:
        return False
    # Bytes, because compare_digest refuses str with non-ASCII characters; the
    # comparison takes the same time wherever the first difference is.
    return hmac.compare_digest(candidate.encode("utf-8"), current.encode("utf-8"))
