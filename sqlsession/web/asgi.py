"""Server-side sessions for any ASGI app (Starlette, FastAPI): ``request.session`` on a driver.

Pure ASGI: nothing here imports Starlette. The options mirror Starlette's cookie
``SessionMiddleware`` so that switching is one line, plus the key the app signs in with::

    app.add_middleware(SessionMiddleware, driver=session_drivers.sql(), identity_key="user")

The session is loaded before the app runs, and only when the request carries a session
cookie, because Starlette's ``request.session`` is synchronous. It is committed when the
app sends ``http.response.start``, before that message goes out, so the commit can add
``Set-Cookie`` and a failed commit can still become a 500 instead of a response that
claims success. Changes made after the response has started (in a streaming body, a
background task) are not saved. On a websocket the session is loaded and readable, but
changes are not saved (there is no response to carry a cookie).

At lifespan startup, after the app's own, the middleware loads its driver and reads one
item, so a driver that cannot work (a missing package, an unmigrated table, an
unreachable database) stops the server from starting instead of failing requests.

A response gets ``Vary: Cookie`` when the app read or changed the session before the
response started, or when the cookie changes, so a shared cache does not serve one
visitor's page to another. (A streaming body that reads the session only after the
response has started cannot add it; send ``Vary: Cookie`` yourself there.) A response
that sets or expires the cookie is also made ``Cache-Control: private``, unless it is
already ``private`` or ``no-store``: no shared cache may store a session id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, NoReturn

from ..config import SessionDriverConfig
from ..driver import SessionDriver, SupportsDispose
from ..errors import (
    DatabaseUnavailableError,
    OperationTimeoutError,
    SessionError,
    SessionTooLargeError,
)
from ..loader import load_driver
from ._cookies import CookiePolicy, default_cookie_name
from ._state import DEFAULT_MAX_SIZE
from .session import Clock, Session
from .store import DEFAULT_MAX_AGE, CookieChange, SessionStore

__all__ = ["SessionMiddleware", "get_session"]

logger = logging.getLogger("sqlsession")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ERROR_BODY = b"Internal Server Error"
_TOO_LARGE_BODY = b"Content Too Large: the session cannot hold this much."
# Cache-Control directives that let a shared cache store a response.
_SHARED_DIRECTIVES = frozenset({b"public", b"s-maxage"})
_UNAVAILABLE_BODY = b"Service Unavailable"
# What the startup check reads: a key no session or user item ever has.
_STARTUP_PROBE = "sqlsession:startup-check"
# Hosts where browsers accept a Secure cookie over plain http (a "potentially
# trustworthy" origin); anywhere else they drop it.
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class SessionMiddleware:
    """Give every HTTP request a server-side `Session` in ``scope["session"]``.

    Args:
        app: the ASGI app to wrap.
        driver: a `SessionDriverConfig` (the middleware loads the driver once per
            process, at lifespan startup or else on first use, and disposes it at
            lifespan shutdown) or a driver object (used as is, never disposed by the
            middleware). Either is checked at lifespan startup by reading one item; a
            failure fails the server's startup with one line.
        session_cookie: the cookie's name, an RFC 6265 token. By default
            ``__Host-session`` (with `https_only`, ``path="/"`` and no `domain`: browsers
            then refuse a cookie of that name planted over http or from another
            subdomain, so an attacker cannot fix a visitor's session id),
            ``__Secure-session`` with `https_only` and a `domain` or another `path`, and
            ``session`` without `https_only`. A name you give is used as is.
        max_age: absolute lifetime in seconds, from the session's creation; no activity
            extends it. None: no absolute limit, and the cookie lasts until the browser
            closes (unless `idle_timeout` is set).
        path: the cookie's Path.
        same_site: ``"lax"``, ``"strict"`` or ``"none"`` (needs `https_only`).
        https_only: send the cookie with ``Secure``. Default True; set False only for
            local development over plain http.
        domain: the cookie's Domain (None: this host only).
        idle_timeout: seconds without a request after which the session ends (sliding;
            None: off). Activity is written at most once per half of it.
        max_size: the most bytes a session may hold (key names and JSON values; 256
            KiB by default, None: no limit). An assignment past it raises
            `SessionTooLargeError` (a ``ValueError``), for the app to answer 413; a
            session grown past it by changes made in place is not saved and the
            response becomes a 413.
        identity_key: the session key the app signs users in with, as with Starlette's
            sessions (``request.session["user"] = name``). Assigning it then does what
            `Session.bind_user` does (a new id, the session bound to that user, so
            `Session.sign_out_everywhere` works; emptied first when it held another
            user); deleting it, or assigning None or "", signs out (a new id, no
            user). A str value is the user id; another value is identified by its JSON
            text (``42`` is the user ``"42"``).
        secret_key: a secret that makes the stored user keys HMAC-SHA256 of the user
            ids, which a reader of the table cannot test guesses against (without it,
            plain SHA-256, and user ids are easy to guess). Sessions need no secret:
            this is the only use. The name matches Starlette's middleware.
        encryption_keys: encrypt the session values at rest (AES-256-GCM; needs the
            ``[crypto]`` extra), newest key first: the first encrypts, every one
            decrypts. Keys as `generate_encryption_key` or ``sqlsession keygen`` makes
            them. None: values are stored as plain JSON. See `SessionStore`.
        record_client: keep the User-Agent (cut to 200 characters) and the client's
            network (IPv4 /24, IPv6 /48, from the ASGI ``client``: behind a proxy, have
            the server trust its forwarded headers) of the request that signs a session
            in, for `Session.user_sessions`. Off by default: it is personal data.
        clock: returns seconds since the epoch; tests pass a fake one to move time.

    Raises:
        ConfigError: the cookie name or an attribute is invalid, or a ``__Host-`` or
            ``__Secure-`` name comes with options browsers drop such cookies for, or
            `max_size`, `identity_key`, `secret_key` or `encryption_keys` is invalid.
        InvalidTTLError: `max_age` or `idle_timeout` is not None or at least 0.001.
        TypeError: `driver` is neither a config nor a driver.
    """

    def __init__(
        self,
        app: ASGIApp,
        driver: Any,
        *,
        session_cookie: str | None = None,
        max_age: float | None = DEFAULT_MAX_AGE,
        path: str = "/",
        same_site: str = "lax",
        https_only: bool = True,
        domain: str | None = None,
        idle_timeout: float | None = None,
        max_size: int | None = DEFAULT_MAX_SIZE,
        identity_key: str | None = None,
        secret_key: str | bytes | None = None,
        encryption_keys: Sequence[str | bytes] | None = None,
        record_client: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.app = app
        if session_cookie is None:
            session_cookie = default_cookie_name(https_only=https_only, path=path, domain=domain)
        self.cookie = CookiePolicy(
            name=session_cookie,
            path=path,
            domain=domain,
            same_site=same_site,
            https_only=https_only,
        )
        if not isinstance(driver, SessionDriverConfig | SessionDriver):
            raise TypeError(
                "SessionMiddleware(driver=...) takes a SessionDriverConfig (for example "
                "session_drivers.sql()) or a driver object with get_item, set_item and "
                f"remove_item, got {type(driver).__name__}."
            )
        self._config = driver if isinstance(driver, SessionDriverConfig) else None
        self._options: dict[str, Any] = {
            "max_age": max_age,
            "idle_timeout": idle_timeout,
            "max_size": max_size,
            "identity_key": identity_key,
            "secret_key": secret_key,
            "encryption_keys": encryption_keys,
            "record_client": record_client,
            "clock": clock,
        }
        # Validate the timeouts now rather than on the first request.
        probe = SessionStore(_NullDriver(), **self._options)
        self.max_age, self.idle_timeout = probe.max_age, probe.idle_timeout
        self._store: SessionStore | None = (
            None
            if isinstance(driver, SessionDriverConfig)
            else SessionStore(driver, **self._options)
        )
        self._warned_plain_http = False

    def _get_store(self) -> SessionStore:
        # Created on first use rather than in __init__, so a server that imports the app
        # and then forks workers builds one driver (and one connection pool) per worker.
        if self._store is None:
            assert self._config is not None
            self._store = SessionStore(load_driver(self._config), **self._options)
        return self._store

    async def _dispose(self) -> None:
        if self._config is None or self._store is None:
            return  # a driver we were handed is its owner's to dispose
        store, self._store = self._store, None
        if isinstance(store.driver, SupportsDispose):
            await store.driver.dispose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif kind in ("http", "websocket"):
            await self._request(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the driver at startup and dispose it at shutdown, around the app's own.

        The app's startup runs first (it may migrate the database), then the check; a
        failed check shuts the app down again and reports ``lifespan.startup.failed``
        with one line, so the server refuses to start. An app that does not speak the
        lifespan protocol gets it spoken for it.
        """
        failure: Exception | None = None
        app_started = False

        async def receive_wrapper() -> Message:
            nonlocal app_started
            if failure is not None:
                return {"type": "lifespan.shutdown"}  # undo the app's startup
            message = await receive()
            app_started = app_started or message["type"] == "lifespan.startup"
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal failure
            if message["type"] == "lifespan.startup.complete":
                failure = await self._startup_check()
                if failure is not None:
                    return
            elif message["type"] == "lifespan.shutdown.complete":
                await self._dispose_quietly()
                if failure is not None:
                    return  # reported below, once the app has returned
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            if app_started:
                if failure is not None:
                    await self._startup_failed(send, failure)
                raise
            # Raised before it asked for the startup message: the app has no lifespan
            # support (a server in "auto" mode ignores that).
            logger.debug("The app does not support the lifespan protocol.", exc_info=True)
        if failure is not None:
            await self._startup_failed(send, failure)
        if not app_started:
            await self._run_lifespan(receive, send)

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        """The lifespan protocol for an app that does not speak it."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                failure = await self._startup_check()
                if failure is not None:
                    await self._startup_failed(send, failure)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._dispose_quietly()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _startup_check(self) -> Exception | None:
        """Load the driver (from a config) and read one item, so a driver that cannot
        work fails the server's startup rather than the first request; None when it works.

        The read is the SQL driver's first operation, which checks the database file or
        server and that the table is migrated.
        """
        try:
            store = self._get_store()
            await store.driver.get_item(_STARTUP_PROBE)
        except Exception as exc:
            await self._dispose_quietly()
            return exc
        return None

    async def _startup_failed(self, send: Send, error: Exception) -> NoReturn:
        """Tell the server the startup failed, with one line, then raise `error`.

        Raising after ``lifespan.startup.failed`` is what servers expect (uvicorn logs the
        message and exits with status 3) and what makes ``with TestClient(app)`` raise.
        """
        detail = (
            str(error) if isinstance(error, SessionError) else f"{type(error).__name__}: {error}"
        )
        line = " ".join(f"SessionMiddleware cannot start: {detail}".split())
        await send({"type": "lifespan.startup.failed", "message": line})
        raise error

    async def _dispose_quietly(self) -> None:
        try:
            await self._dispose()
        except Exception:
            logger.exception("Disposing the session driver failed.")

    async def _request(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            store = self._get_store()
            session = await store.load(self.cookie.read(scope.get("headers", ())), request=scope)
        except Exception as exc:
            logger.exception("Loading the session failed; answering %d.", _status_of(exc))
            if scope["type"] == "http":
                await _send_error(send, exc)
            else:
                await send({"type": "websocket.close", "code": 1011})
            return
        scope["session"] = session
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        failed = False

        async def send_wrapper(message: Message) -> None:
            nonlocal failed
            if failed:
                # The 500 went out instead: stop the app as a server stops one whose client
                # has gone, or an endless stream would run on unheard.
                raise OSError("The response was replaced by a 500: saving the session failed.")
            if message["type"] == "http.response.start":
                # Committed now rather than at the first body message, so a stream whose
                # first chunk takes a while (server-sent events) still gets its headers.
                try:
                    change = await store.commit(session)
                except SessionTooLargeError as exc:
                    logger.warning("%s Answering 413 instead.", exc)
                    failed = True
                    await _send_error(send, exc)
                    return
                except Exception as exc:
                    logger.exception(
                        "Saving the session failed; answering %d instead.", _status_of(exc)
                    )
                    failed = True
                    await _send_error(send, exc)
                    return
                if change is not None or session.accessed:
                    headers = list(message.get("headers", []))
                    if change is not None:
                        headers.append((b"set-cookie", self._set_cookie(change)))
                        _make_private(headers)
                        if change.session_id is not None:
                            self._warn_if_dropped(scope)
                    # The response depends on the session (even an empty one: what a
                    # visitor without a cookie sees), so a shared cache must not serve
                    # it to a request with another cookie.
                    _add_vary_cookie(headers)
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if failed:
                return  # the app was stopped by the OSError above; the 500 is out and logged
            raise

    def _warn_if_dropped(self, scope: Scope) -> None:
        """Log once when a Secure cookie goes out over plain http to a non-local host.

        The browser (or Starlette's TestClient, on http://testserver) drops such a
        cookie, so every request starts a new session, silently, unless someone says so.
        """
        if self._warned_plain_http or not self.cookie.https_only or scope.get("scheme") != "http":
            return
        host = _request_host(scope)
        if host is None or host in _LOCAL_HOSTS or host.endswith(".localhost"):
            return
        self._warned_plain_http = True
        logger.warning(
            "SessionMiddleware set a Secure session cookie on a plain http request to %r: "
            "browsers and test clients (Starlette's TestClient on http://testserver) drop "
            "Secure cookies that arrive over http, so the session will not come back. In "
            "tests, pass https_only=False to SessionMiddleware or use an https base URL "
            "(TestClient(app, base_url='https://testserver')); behind a proxy that ends "
            "TLS, have the server trust its X-Forwarded-Proto (uvicorn --proxy-headers "
            "--forwarded-allow-ips=...). This is logged once.",
            host,
        )

    def _set_cookie(self, change: CookieChange) -> bytes:
        if change.session_id is None:
            return self.cookie.expire_header()
        return self.cookie.set_header(change.session_id, change.max_age)


def _request_host(scope: Scope) -> str | None:
    """The host the client addressed (the Host header, else the server), without a port."""
    host: str | None = None
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = bytes(value).decode("latin-1")
            break
    if host is None:
        server = scope.get("server")
        return str(server[0]).lower() if server else None
    if host.startswith("["):  # an IPv6 address: [::1]:8000
        return host[1:].partition("]")[0].lower()
    return host.partition(":")[0].lower()


def _add_vary_cookie(headers: list[Any]) -> None:
    """Make the response's ``Vary`` cover Cookie, in the first Vary header if it has one.

    Merged into the existing header rather than sent as a second one, because some
    middleware (older Starlette's ``add_vary_header``, used by GZipMiddleware) reads
    only the first Vary header and replaces them all.
    """
    first = None
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            fields = {f.strip().lower() for f in value.split(b",")}
            if b"cookie" in fields or b"*" in fields:
                return
            if first is None:
                first = index
    if first is None:
        headers.append((b"vary", b"Cookie"))
    else:
        name, value = headers[first]
        headers[first] = (name, value + b", Cookie" if value.strip() else b"Cookie")


def _make_private(headers: list[Any]) -> None:
    """Keep a response that carries a session cookie out of shared caches.

    Unless its Cache-Control already says ``private`` or ``no-store``, ``public`` and
    ``s-maxage`` are dropped from it and ``private`` is added (a response without
    Cache-Control gets ``Cache-Control: private``); the other directives, such as
    ``max-age`` for the browser's own cache, stay. Several Cache-Control headers are
    merged into one.
    """
    directives: list[bytes] = []
    others: list[Any] = []
    for name, value in headers:
        if name.lower() == b"cache-control":
            directives.extend(d.strip() for d in bytes(value).split(b",") if d.strip())
        else:
            others.append((name, value))
    names = [d.partition(b"=")[0].strip().lower() for d in directives]
    # A field-limited private="set-cookie" still lets a shared cache store the rest.
    if b"no-store" in names or b"private" in [d.lower() for d in directives]:
        return
    kept = [d for d, n in zip(directives, names, strict=True) if n not in _SHARED_DIRECTIVES]
    headers[:] = [*others, (b"cache-control", b", ".join([b"private", *kept]))]


def _status_of(exc: BaseException) -> int:
    """503 when the database is down, starting, full or too slow (waiting may help); 413
    for a session grown past its max_size; else 500."""
    if isinstance(exc, SessionTooLargeError):
        return 413
    return 503 if isinstance(exc, DatabaseUnavailableError | OperationTimeoutError) else 500


async def _send_error(send: Send, exc: BaseException) -> None:
    status = _status_of(exc)
    body = {503: _UNAVAILABLE_BODY, 413: _TOO_LARGE_BODY}.get(status, _ERROR_BODY)
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 503:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _NullDriver:
    """Stands in for the driver while the middleware validates its options."""

    async def get_item(self, key: str) -> Any:
        return None

    async def set_item(self, key: str, value: Any) -> None:
        return None

    async def remove_item(self, key: str) -> None:
        return None


def get_session(request: Any) -> Session:
    """The `Session` of a request, typed (``request.session`` is typed as a dict by Starlette).

    Args:
        request: a Starlette/FastAPI ``Request`` or ``WebSocket``, or an ASGI scope.

    Returns:
        The session `SessionMiddleware` put in the request's scope.

    Raises:
        LookupError: `SessionMiddleware` is not installed around the app.
    """
    scope = getattr(request, "scope", request)
    session = scope.get("session") if isinstance(scope, MutableMapping) else None
    if not isinstance(session, Session):
        raise LookupError(
            "No sqlsession Session in this request: add "
            "sqlsession.web.SessionMiddleware to the app."
        )
    return session
