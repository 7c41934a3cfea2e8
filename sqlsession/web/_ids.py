"""Session ids: how they are made, recognised in a cookie, and turned into storage keys.

User ids (see ``Session.bind_user``) are turned into storage keys here too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

ID_BYTES = 32
"""256 bits from the operating system's CSPRNG, as URL-safe base64 (43 characters)."""

SESSION_PREFIX = "s:"
USER_PREFIX = "u:"

# Exactly what `new_id` produces; anything else from a cookie is refused before any read,
# so a crafted value never reaches the driver or the logs.
_ID = re.compile(r"[A-Za-z0-9_-]{43}\Z")


def new_id() -> str:
    """A fresh session id."""
    return secrets.token_urlsafe(ID_BYTES)


def is_well_formed(value: str) -> bool:
    """Whether `value` could have been made by `new_id`."""
    return _ID.match(value) is not None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def storage_key(session_id: str) -> str:
    """The driver key of a session: a hash, so a leaked table or backup yields no cookie.

    A plain SHA-256 is enough (no salt, no slow hash): the id has 256 bits of entropy,
    so the hash cannot be reversed by guessing, and it must be found by exact lookup.
    """
    return SESSION_PREFIX + _digest(session_id)


def check_user_id(user_id: object) -> str:
    """Return `user_id` if it is a non-empty str, else raise `TypeError`.

    The message names the type, never the value: a user id has no place in a log.
    """
    if type(user_id) is not str or not user_id:
        got = "an empty str" if user_id == "" else type(user_id).__name__
        raise TypeError(f"user_id must be a non-empty str, got {got}.")
    return user_id


def user_key(user_id: str) -> str:
    """The driver key holding a user's session generation (for "sign out everywhere").

    A plain SHA-256: user ids are guessable (a numeric id is found from its hash in
    milliseconds), so this hides nothing from whoever reads the table; with a secret,
    `keyed_user_key` does.
    """
    return USER_PREFIX + _digest(user_id)


def keyed_user_key(secret: str | bytes | None) -> Callable[[str], str]:
    """`user_key`, or with a secret, the same key made with HMAC-SHA256 under `secret`.

    Without the secret, the table holds no way to test a guessed user id.
    """
    if secret is None:
        return user_key
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)

    def keyed(user_id: str) -> str:
        return USER_PREFIX + hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()

    return keyed


def log_label(session_id: str) -> str:
    """A short, non-secret label for a session in log messages (never the id itself)."""
    return _digest(session_id)[:12]


def key_label(key: str) -> str:
    """`log_label` of the session whose `storage_key` is `key`, without hashing again.

    The label is the start of the same digest, so a request that has hashed its id
    for the lookup gets the label by slicing.
    """
    return key[len(SESSION_PREFIX) : len(SESSION_PREFIX) + 12]
