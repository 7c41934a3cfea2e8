"""The session's CSRF token: a secret made on first use, kept in the row, handed out masked.

The secret is stored under the reserved key ``"sqlsession.csrf"``; `Session.regenerate`
(and so ``bind_user``, ``clear`` and ``destroy``) drops it, so the next use makes a new
one. Pages never carry the secret itself: each `token` call returns it XORed with a fresh
random pad, pad in front (as Django and Rails do). A page compressed together with text an
attacker can reflect into it then leaks nothing by its size (BREACH), since the token's
bytes differ on every response.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from typing import TYPE_CHECKING

from . import _reserved

if TYPE_CHECKING:
    from .session import Session

SECRET_BYTES = 32
"""256 bits from the operating system's CSPRNG."""
TOKEN_LENGTH = 86
"""Characters of a masked token: URL-safe base64, unpadded, of the pad and the masked secret."""


def _secret(session: Session) -> bytes | None:
    value = session._get_reserved(_reserved.CSRF)
    if type(value) is not str:
        return None
    try:
        secret = base64.urlsafe_b64decode(value)
    except (binascii.Error, ValueError):
        return None
    return secret if len(secret) == SECRET_BYTES else None


def _xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right, strict=True))


def token(session: Session) -> str:
    """The session's secret, freshly masked; the secret is made (and stored) when missing."""
    session._state.accessed = True
    secret = _secret(session)
    if secret is None:
        secret = secrets.token_bytes(SECRET_BYTES)
        session._put_reserved(_reserved.CSRF, base64.urlsafe_b64encode(secret).decode())
    pad = secrets.token_bytes(SECRET_BYTES)
    # No "=" padding: nothing in the token needs escaping in a form, a header or a URL.
    return base64.urlsafe_b64encode(pad + _xor(pad, secret)).decode().rstrip("=")


def check(session: Session, candidate: object) -> bool:
    """Whether `candidate` is a masking of the session's secret; never makes one."""
    session._state.accessed = True
    secret = _secret(session)
    if secret is None or type(candidate) is not str or len(candidate) != TOKEN_LENGTH:
        return False
    try:
        raw = base64.urlsafe_b64decode(candidate.encode("ascii") + b"==")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    if len(raw) != 2 * SECRET_BYTES:
        return False
    # The comparison takes the same time wherever the first difference is.
    return hmac.compare_digest(_xor(raw[:SECRET_BYTES], raw[SECRET_BYTES:]), secret)
