"""`CSRFMiddleware`: refuse unsafe requests that do not carry the session's CSRF token.

Pure ASGI, placed inside `SessionMiddleware` (it reads ``scope["session"]``)::

    app = Starlette(
        routes=...,
        middleware=[
            Middleware(SessionMiddleware, driver=session_drivers.sql()),
            Middleware(CSRFMiddleware),  # inside: listed after SessionMiddleware
        ],
    )

A request whose method is not GET, HEAD, OPTIONS or TRACE must carry the token of
`Session.csrf_token` in a header (``X-CSRF-Token``) or, for an urlencoded or multipart
form, in a form field (``csrf_token``); otherwise it is answered 403 and the app never
sees it. To find the field, the body is read until the field has been seen (at most
`scan_limit` bytes) and then handed to the app exactly as it came, chunk by chunk, with
the rest still streaming: put the hidden field first in a form with file uploads.
Websockets are not checked (check their ``Origin`` in the app).
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

from ..errors import ConfigError
from .asgi import ASGIApp, Message, Receive, Scope, Send
from .session import Session

__all__ = ["CSRFMiddleware"]

logger = logging.getLogger("sqlsession")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods that must not change anything (RFC 9110), so they are not checked."""

_MISSING_BODY = b"Forbidden: CSRF token missing."
_WRONG_BODY = b"Forbidden: CSRF token incorrect (reload the page and try again)."
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # an RFC 9110 header name
_URLENCODED = b"application/x-www-form-urlencoded"
_MULTIPART = b"multipart/form-data"


class _More:
    """The part of the body read so far does not settle whether the field is there."""


_MORE = _More()


class CSRFMiddleware:
    """Answer 403 to unsafe requests without the session's CSRF token (see module doc).

    Args:
        app: the ASGI app to wrap; `SessionMiddleware` must be around this middleware.
        field_name: the form field that carries the token (urlencoded and multipart).
        header_name: the request header that carries the token (for fetch/AJAX).
        exempt_paths: paths never checked (webhooks signed some other way): an entry
            that ends with ``/`` exempts every path under it, any other exactly itself.
        scan_limit: the most body bytes read to find the form field; a form whose field
            comes later (after a large file) is refused.

    Raises:
        ConfigError: an option is invalid. At a request: ``scope["session"]`` is not a
            sqlsession `Session` (this middleware is outside `SessionMiddleware`, or
            there is none).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        field_name: str = "csrf_token",
        header_name: str = "X-CSRF-Token",
        exempt_paths: Iterable[str] = (),
        scan_limit: int = 1024 * 1024,
    ) -> None:
        self.app = app
        if type(field_name) is not str or not field_name:
            raise ConfigError(f"field_name must be a non-empty str, got {field_name!r}.")
        if type(header_name) is not str or not _TOKEN.match(header_name):
            raise ConfigError(f"header_name must be an HTTP header name, got {header_name!r}.")
        if isinstance(exempt_paths, str):
            raise ConfigError(
                f"exempt_paths must be a list of paths, not one str: [{exempt_paths!r}]."
            )
        paths = list(exempt_paths)
        for path in paths:
            if type(path) is not str or not path.startswith("/"):
                raise ConfigError(f"Each of exempt_paths must be a str starting with /: {path!r}.")
        if isinstance(scan_limit, bool) or not isinstance(scan_limit, int) or scan_limit < 1:
            raise ConfigError(
                f"scan_limit must be a number of bytes of at least 1: {scan_limit!r}."
            )
        self.field_name = field_name
        self._field = field_name.encode("utf-8")
        self.header_name = header_name
        self._header = header_name.lower().encode("latin-1")
        self._exact = frozenset(p for p in paths if not p.endswith("/"))
        self._prefixes = tuple(p for p in paths if p.endswith("/"))
        self.scan_limit = scan_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = scope.get("session")
        if not isinstance(session, Session):
            raise ConfigError(
                "CSRFMiddleware found no sqlsession Session in the request: put it inside "
                "sqlsession.web.SessionMiddleware (listed after it in middleware=[...], or "
                "added before it with app.add_middleware)."
            )
        if scope["method"] in SAFE_METHODS or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = self._header_value(scope)
        if header is not None:
            if session.check_csrf_token(header):
                await self.app(scope, receive, send)
            else:
                await _refuse(scope, send, _WRONG_BODY)
            return
        scanner = self._scanner(scope)
        if scanner is None:
            await _refuse(scope, send, _MISSING_BODY)
            return
        read: list[Message] = []
        found = await self._scan(receive, read, scanner)
        if found is None:
            if read and read[-1]["type"] == "http.disconnect":
                return  # the client left: nobody to answer
            await _refuse(scope, send, _MISSING_BODY)
            return
        if not session.check_csrf_token(found):
            await _refuse(scope, send, _WRONG_BODY)
            return
        pending = collections.deque(read)

        async def replay() -> Message:
            # The body as it arrived, message by message, then whatever is still coming.
            return pending.popleft() if pending else await receive()

        await self.app(scope, replay, send)

    def _exempt(self, path: str) -> bool:
        return path in self._exact or path.startswith(self._prefixes)

    def _header_value(self, scope: Scope) -> str | None:
        for name, value in scope.get("headers", ()):
            if name == self._header:
                return bytes(value).decode("latin-1")
        return None

    def _scanner(self, scope: Scope) -> _Scanner | None:
        content_type = b""
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                content_type = bytes(value)
                break
        kind, _, params = content_type.partition(b";")
        kind = kind.strip().lower()
        if kind == _URLENCODED:
            return _UrlEncoded(self._field)
        if kind == _MULTIPART:
            match = re.search(rb'boundary="?([^";]+)"?', params, re.IGNORECASE)
            if match is not None:
                return _Multipart(self._field, match.group(1).strip())
        return None

    async def _scan(self, receive: Receive, read: list[Message], scanner: _Scanner) -> str | None:
        """Read the body until `scanner` settles; keep every message read in `read`."""
        body = bytearray()
        while True:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                return None
            body += message.get("body", b"")
            # Only the first scan_limit bytes count, however the body was cut into
            # messages, so whether a form passes never depends on the server's chunking.
            complete = not message.get("more_body", False) and len(body) <= self.scan_limit
            found = scanner.find(bytes(body[: self.scan_limit]), complete=complete)
            if not isinstance(found, _More):
                return found
            if complete or len(body) >= self.scan_limit:
                return None


class _Scanner:
    def find(self, body: bytes, *, complete: bool) -> str | _More | None:
        """The field's value in `body`, None if it is not there, _MORE if it may follow."""
        raise NotImplementedError


class _UrlEncoded(_Scanner):
    def __init__(self, field: bytes) -> None:
        self.field = field

    def find(self, body: bytes, *, complete: bool) -> str | _More | None:
        pairs = body.split(b"&")
        if not complete:
            pairs.pop()  # may be cut short
        for pair in pairs:
            name, _, value = pair.partition(b"=")
            if _unquote(name) == self.field:
                return _unquote(value).decode("utf-8", "replace")
        return None if complete else _MORE


def _unquote(text: bytes) -> bytes:
    return unquote_to_bytes(text.replace(b"+", b" "))


_NAME = re.compile(rb';\s*name="([^"]*)"|;\s*name=([^;\s]+)', re.IGNORECASE)
_FILENAME = re.compile(rb";\s*filename\*?=", re.IGNORECASE)


class _Multipart(_Scanner):
    def __init__(self, field: bytes, boundary: bytes) -> None:
        self.field = field
        self.delimiter = b"--" + boundary

    def find(self, body: bytes, *, complete: bool) -> str | _More | None:
        more: str | _More | None = None if complete else _MORE
        start = body.find(self.delimiter)
        if start < 0:
            return more
        position = start + len(self.delimiter)
        while True:
            if body[position : position + 2] == b"--":
                return None  # the closing delimiter: no more parts
            head_end = body.find(b"\r\n\r\n", position)
            if head_end < 0:
                return more
            end = body.find(b"\r\n" + self.delimiter, head_end + 4)
            if end < 0:
                return more
            if self._is_field(body[position:head_end]):
                return body[head_end + 4 : end].decode("utf-8", "replace")
            position = end + 2 + len(self.delimiter)

    def _is_field(self, head: bytes) -> bool:
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() != b"content-disposition" or _FILENAME.search(value):
                continue
            match = _NAME.search(value)
            return match is not None and (match.group(1) or match.group(2)) == self.field
        return False


async def _refuse(scope: Scope, send: Send, body: bytes) -> None:
    # The path and method only: never the token, which is a credential.
    logger.info(
        "Refused %s %s: %s",
        scope["method"],
        scope["path"],
        body.decode().removeprefix("Forbidden: "),
    )
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
