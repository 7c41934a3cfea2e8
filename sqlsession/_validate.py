"""Checks shared by the config half and the drivers; imports nothing heavy."""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import ConfigError, InvalidKeyError, InvalidTTLError

MAX_KEY_LENGTH = 255
# A hundred years: longer lifetimes are "never" in practice (use None), and the bound keeps
# expiry instants far inside a BIGINT of milliseconds.
MAX_TTL = 100 * 365.25 * 24 * 3600
# Leaves room for the "_alembic_version" suffix of the table's own version table
# within PostgreSQL's 63-byte identifier limit.
MAX_IDENTIFIER_LENGTH = 46
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_key(key: Any) -> str:
    """Return `key` if it is a valid session key, else raise `InvalidKeyError`."""
    if type(key) is not str:
        raise InvalidKeyError(f"Session key must be a str, got {type(key).__name__}: {key!r}.")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(
            f"Session key must be 1 to {MAX_KEY_LENGTH} characters long, got {len(key)}: "
            f"{key[:40]!r}{'...' if len(key) > 40 else ''}."
        )
    if "\x00" in key:
        raise InvalidKeyError(f"Session key must not contain NUL characters: {key!r}.")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidKeyError(
                f"Session key contains a lone surrogate and cannot be stored: {key!r}."
            ) from None
    return key


def check_ttl(ttl: Any, *, what: str = "ttl") -> float | None:
    """Return `ttl` as seconds (None: no expiry), else raise `InvalidTTLError`.

    A ttl is a finite number from 0.001 (millisecond precision) to 100 years.
    """
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidTTLError(
            f"{what} must be a number of seconds or None, got {type(ttl).__name__}: {ttl!r}."
        )
    # An int is compared as it is: 10**400 has no float (math.isfinite would overflow).
    finite = isinstance(ttl, int) or math.isfinite(ttl)
    if not finite or ttl < 0.001 or ttl > MAX_TTL:
        raise InvalidTTLError(
            f"{what} must be a number of seconds from 0.001 to {MAX_TTL:.0f} (100 years), "
            f"or None for no expiry, got {_number(ttl)}."
        )
    return float(ttl)


def _number(value: float) -> str:
    """`value` for a message: an int too long to show is described, not written out."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"
    return repr(value)


def check_identifier(name: Any, *, what: str) -> str:
    """Return `name` if it is a plain SQL identifier we accept for a table or schema."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ConfigError(
            f"{what} must be a plain SQL identifier (letters, digits and _, not starting "
            f"with a digit), got {name!r}."
        )
    if len(name) > MAX_IDENTIFIER_LENGTH:
        raise ConfigError(
            f"{what} must be at most {MAX_IDENTIFIER_LENGTH} characters long, got {name!r}."
        )
    return name


def check_positive_int(value: Any, *, what: str) -> int:
    """Return `value` if it is an int of at least 1, else raise `ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a whole number of at least 1, got {value!r}.")
    return value
