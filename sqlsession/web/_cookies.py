"""Reading the session cookie from ASGI headers and writing ``Set-Cookie`` values."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import ConfigError

# RFC 6265 section 4.1.1: a cookie-name is an RFC 2616 token, that is visible ASCII
# without separators.
_SEPARATORS = frozenset('()<>@,;:\\"/[]?={} \t')
_TOKEN_CHARS = frozenset(chr(c) for c in range(33, 127)) - _SEPARATORS
_SAME_SITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


def default_cookie_name(*, https_only: bool, path: str, domain: str | None) -> str:
    """The session cookie's name when the app gives none: the strongest prefix that fits.

    ``__Host-`` (Secure, Path=/, no Domain) makes browsers refuse a cookie of that name
    set over plain http or by a sibling subdomain, the two ways to plant a session id in
    a visitor's browser; ``__Secure-`` keeps out the http one. Over plain http (local
    development) no prefix is allowed.
    """
    if not https_only:
        return "session"
    if path == "/" and domain is None:
        return "__Host-session"
    return "__Secure-session"


def check_cookie_name(name: object) -> str:
    """Return `name` if it is a valid RFC 6265 cookie name, else raise `ConfigError`."""
    if not isinstance(name, str) or not name or not set(name) <= _TOKEN_CHARS:
        raise ConfigError(
            f"session_cookie must be a non-empty RFC 6265 token (visible ASCII without "
            f'spaces or any of ()<>@,;:\\"/[]?={{}}), got {name!r}.'
        )
    return name


def _check_attribute(value: str, what: str) -> str:
    # A ';' or control character would let the value inject further cookie attributes.
    if not isinstance(value, str) or any(c == ";" or not " " < c < "\x7f" for c in value):
        raise ConfigError(f"{what} must be visible ASCII without ';' or spaces, got {value!r}.")
    return value


@dataclass(frozen=True)
class CookiePolicy:
    """The attributes every session cookie is sent with.

    Raises:
        ConfigError: a name or attribute is invalid, or the attributes are ones browsers
            drop the cookie for: ``same_site="none"`` without ``https_only``, a
            ``__Secure-`` name without ``https_only``, a ``__Host-`` name without
            ``https_only``, with a `domain` or with a `path` other than ``/``.
    """

    name: str = "session"
    path: str = "/"
    domain: str | None = None
    same_site: str = "lax"
    https_only: bool = True
    # Worked out once in __post_init__: every response that sets a cookie uses them.
    _attrs: str = field(init=False, repr=False, compare=False, default="")
    _name_bytes: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        check_cookie_name(self.name)
        _check_attribute(self.path, "path")
        if not self.path.startswith("/"):
            raise ConfigError(f"path must start with '/', got {self.path!r}.")
        if self.domain is not None:
            _check_attribute(self.domain, "domain")
        if not isinstance(self.same_site, str) or self.same_site.lower() not in _SAME_SITE:
            raise ConfigError(
                f"same_site must be 'lax', 'strict' or 'none', got {self.same_site!r}."
            )
        if self.same_site.lower() == "none" and not self.https_only:
            raise ConfigError(
                "same_site='none' needs https_only=True: browsers refuse SameSite=None "
                "cookies without Secure."
            )
        # RFC 6265bis cookie prefixes, which browsers match ignoring case: a cookie that
        # breaks its prefix's rules is dropped, and every request would start over.
        prefix = self.name.lower()
        if prefix.startswith("__host-") and (
            not self.https_only or self.path != "/" or self.domain is not None
        ):
            raise ConfigError(
                f"A cookie named {self.name!r} needs https_only=True, path='/' and no "
                "domain: browsers drop __Host- cookies otherwise. Change those options "
                "or pick a name without the prefix."
            )
        if prefix.startswith("__secure-") and not self.https_only:
            raise ConfigError(
                f"A cookie named {self.name!r} needs https_only=True: browsers drop "
                "__Secure- cookies without Secure. Pick a name without the prefix for "
                "local development over http."
            )
        object.__setattr__(self, "_attrs", self._attributes())
        object.__setattr__(self, "_name_bytes", self.name.encode("latin-1"))

    def _attributes(self) -> str:
        parts = [f"Path={self.path}"]
        if self.domain is not None:
            parts.append(f"Domain={self.domain}")
        parts.append("HttpOnly")
        parts.append(f"SameSite={_SAME_SITE[self.same_site.lower()]}")
        if self.https_only:
            parts.append("Secure")
        return "; ".join(parts)

    def set_header(self, session_id: str, max_age: float | None) -> bytes:
        """A ``Set-Cookie`` value carrying `session_id` (no Max-Age: a browser-session cookie)."""
        lifetime = "" if max_age is None else f"; Max-Age={max(1, math.ceil(max_age))}"
        return f"{self.name}={session_id}{lifetime}; {self._attrs}".encode("latin-1")

    def expire_header(self) -> bytes:
        """A ``Set-Cookie`` value that makes the browser drop the cookie now."""
        return (
            f"{self.name}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; {self._attrs}"
        ).encode("latin-1")

    def read(self, headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
        """The values of this cookie in a request's ``Cookie`` headers, in order.

        A browser sends several when cookies of one name exist for several paths or
        domains; the caller tries them in order.
        """
        found: list[str] = []
        for name, value in headers:
            # A header without our name anywhere in it (other cookies only) is not split.
            if name.lower() != b"cookie" or self._name_bytes not in value:
                continue
            for pair in value.decode("latin-1").split(";"):
                key, sep, val = pair.strip().partition("=")
                if sep and key == self.name:
                    found.append(val.strip())
        return found
