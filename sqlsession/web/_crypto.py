"""Encryption at rest: AES-256-GCM over each session value, under a list of keys.

The first key encrypts, every key decrypts, so keys rotate without ending sessions.
A sealed value is stored as one ASCII token::

    "<key id>.<urlsafe base64 of nonce (12 bytes) + ciphertext + tag (16 bytes)>"

The key id is 8 characters derived from the key by a one-way hash, so a token names the
key that opens it whatever the order of the list. The associated data binds a token to
the row and the session key it was written for: a token copied into another session, or
under another key name, does not decrypt.

``cryptography`` is imported only when keys are given (the ``[crypto]`` extra).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

KEY_BYTES = 32
"""AES-256."""
NONCE_BYTES = 12
"""96 bits, random per encryption: what GCM is specified for."""
TAG_BYTES = 16
_KEY_ID_CHARS = 8
_INSTALL = "pip install 'sqlsession-store[crypto]'"


class DecryptionError(Exception):
    """A token that no key of the list opens (its key removed, or it was altered).

    Internal: the session layer turns it into "start a new session"; it never carries
    the token or a key.
    """


def generate_encryption_key() -> str:
    """A new encryption key for ``encryption_keys``: 32 random bytes as urlsafe base64 text.

    Returns:
        44 characters of urlsafe base64 (with its ``=`` padding).
    """
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


# A str subclass so that a sealed value fits where a session keeps an entry's JSON text
# (`_row.Entry`); everything that would decode that text checks for it first.
class Sealed(str):
    """A stored token: a session value still encrypted (decrypted when the app reads it)."""

    __slots__ = ()

    @property
    def key_id(self) -> str:
        return self[:_KEY_ID_CHARS]

    @property
    def plain_size(self) -> int:
        """Bytes of the JSON text inside (known from the token's length alone)."""
        body = len(self) - _KEY_ID_CHARS - 1
        return body * 3 // 4 - NONCE_BYTES - TAG_BYTES

    def __repr__(self) -> str:
        return "<sealed value>"


def as_sealed(value: Any) -> Sealed | None:
    """`value` as a `Sealed` token if it has the shape of one, else None."""
    if type(value) is not str or len(value) < _KEY_ID_CHARS + 1 or value[_KEY_ID_CHARS] != ".":
        return None
    body = len(value) - _KEY_ID_CHARS - 1
    # Unpadded base64 never has a length of 1 mod 4; a body shorter than nonce + tag
    # cannot have come from seal().
    if body % 4 == 1 or body * 3 // 4 < NONCE_BYTES + TAG_BYTES:
        return None
    return Sealed(value)


def associated_data(storage_key: str, name: str) -> bytes:
    """What a value's token is bound to: its session row and its key name.

    A storage key is fixed-format ASCII without NUL, so the NUL ends it unambiguously.
    """
    return f"sqlsession-entry\0{storage_key}\0{name}".encode("utf-8", "surrogatepass")


def _key_id(key: bytes) -> str:
    digest = hashlib.sha256(b"sqlsession key id\0" + key).digest()
    return base64.urlsafe_b64encode(digest[:6]).decode("ascii")


def _decode_key(position: int, key: object) -> bytes:
    """The raw bytes of ``encryption_keys[position]``; the message never holds the key."""
    where = f"encryption_keys[{position}]"
    make = "Make one with `sqlsession keygen` (or sqlsession.web.generate_encryption_key())."
    if isinstance(key, bytes | bytearray | memoryview):
        raw = bytes(key)
        if len(raw) != KEY_BYTES:
            raise ConfigError(
                f"{where} is {len(raw)} bytes; a bytes key must be {KEY_BYTES} raw bytes "
                f"(AES-256). {make}"
            )
        return raw
    if not isinstance(key, str):
        raise ConfigError(
            f"{where} must be urlsafe base64 text (str) or {KEY_BYTES} raw bytes, got "
            f"{type(key).__name__}. {make}"
        )
    text = key.strip()
    try:
        raw = base64.b64decode(
            text.encode("ascii") + b"=" * (-len(text) % 4), altchars=b"-_", validate=True
        )
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise ConfigError(
            f"{where} is not urlsafe base64 text (it has {len(key)} characters). {make}"
        ) from None
    if len(raw) != KEY_BYTES:
        raise ConfigError(
            f"{where} decodes to {len(raw)} bytes; a key must be {KEY_BYTES} bytes (AES-256). "
            f"{make}"
        )
    return raw


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise ConfigError(f"encryption_keys needs the cryptography package: {_INSTALL}") from None
    return AESGCM


class Cipher:
    """Seals and opens session values under a key list: the first seals, all open.

    Args:
        keys: urlsafe base64 text of 32 bytes (as `generate_encryption_key` makes) or 32 raw bytes,
            newest first.

    Raises:
        ConfigError: the list is empty or not a list, a key is malformed or repeated,
            or ``cryptography`` is not installed. The message never holds a key.
    """

    __slots__ = ("_current", "_current_id", "_openers")

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if isinstance(keys, str | bytes | bytearray) or not isinstance(keys, Sequence):
            raise ConfigError(
                "encryption_keys must be a list of keys (newest first), got "
                f"{type(keys).__name__}: wrap a single key in a list."
            )
        if not keys:
            raise ConfigError(
                "encryption_keys is empty: give at least one key, or None for no encryption."
            )
        raws = [_decode_key(i, key) for i, key in enumerate(keys)]
        aesgcm = _aesgcm()
        self._openers: dict[str, Any] = {}
        for position, raw in enumerate(raws):
            key_id = _key_id(raw)
            if key_id in self._openers:
                first = next(i for i, r in enumerate(raws) if _key_id(r) == key_id)
                raise ConfigError(
                    f"encryption_keys[{position}] is the same key as encryption_keys[{first}]: "
                    "list each key once."
                )
            self._openers[key_id] = aesgcm(raw)
        self._current_id = _key_id(raws[0])
        self._current = self._openers[self._current_id]

    def __repr__(self) -> str:
        return f"<Cipher keys={len(self._openers)}>"

    def can_open(self, token: Sealed) -> bool:
        """Whether a key of the list has the id `token` names (no decryption)."""
        return token.key_id in self._openers

    def is_current(self, token: Sealed) -> bool:
        """Whether `token` was sealed with the first key."""
        return token.key_id == self._current_id

    def seal(self, text: str, aad: bytes) -> str:
        """`text` encrypted with the first key, bound to `aad`, as the token to store."""
        nonce = os.urandom(NONCE_BYTES)
        body = nonce + self._current.encrypt(nonce, text.encode("utf-8"), aad)
        encoded = base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")
        return f"{self._current_id}.{encoded}"

    def open(self, token: Sealed, aad: bytes) -> str:
        """The text sealed in `token` for `aad`.

        Raises:
            DecryptionError: no key has its id, or it fails authentication (altered,
                or sealed for other associated data).
        """
        opener = self._openers.get(token.key_id)
        if opener is None:
            raise DecryptionError("no key for this value")
        body = token[_KEY_ID_CHARS + 1 :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = opener.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad)
            return str(plain.decode("utf-8"))
        except Exception:  # binascii.Error, InvalidTag, UnicodeDecodeError: all "altered"
            raise DecryptionError("value altered or sealed for another entry") from None
