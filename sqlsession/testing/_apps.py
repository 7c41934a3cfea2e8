"""Put a test client into a session, or read the session a response left, without the UI.

The session is written and read through the app's own `SessionStore`, so it is stored
exactly as a request would store it (hashed id, row format, ``bind_user``, lifetimes)
and in the same driver the app's middleware uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

from ..web._cookies import CookiePolicy, default_cookie_name
from ..web.asgi import SessionMiddleware
from ..web.store import SessionStore

__all__ = ["ClientSessions", "find_session_middleware"]

_T = TypeVar("_T")


def find_session_middleware(app: Any) -> SessionMiddleware:
    """The `SessionMiddleware` wrapping `app`'s routes.

    Follows the chain of ASGI apps through their ``app`` attributes, building a
    Starlette or FastAPI app's middleware stack first if it has not served a request
    yet (as Starlette does on its first call). A middleware inside a mounted sub-app is
    not found: pass ``store=`` to `ClientSessions` for that.

    Raises:
        LookupError: no `SessionMiddleware` in the chain.
    """
    node, seen = app, set()
    while node is not None and id(node) not in seen:
        if isinstance(node, SessionMiddleware):
            return node
        seen.add(id(node))
        if hasattr(node, "build_middleware_stack") and hasattr(node, "middleware_stack"):
            if node.middleware_stack is None:
                node.middleware_stack = node.build_middleware_stack()
            node = node.middleware_stack
        else:
            node = getattr(node, "app", None)
    raise LookupError(
        f"No sqlsession SessionMiddleware around {type(app).__name__}: add it to the app, "
        "or pass store= (and session_cookie=, path=) to ClientSessions."
    )


class ClientSessions:
    """Sign a test client in, give it session data, or read the session it holds.

    Works with Starlette's ``TestClient`` (the plain methods) and an
    ``httpx.AsyncClient`` on an ``ASGITransport`` (the ``a``-prefixed coroutines). The
    app, and so its `SessionMiddleware`, driver and cookie settings, is found from the
    client (``client.app``, or the transport's app); pass ``app=`` to a method to name it.

    Args:
        store: a `SessionStore` to use instead of the app's middleware, for apps where
            it cannot be found (a middleware inside a mounted sub-app, another
            framework). It must share the app's driver.
        session_cookie: the cookie's name, with `store` (None: the middleware's default
            name for an https cookie on `path`, ``__Host-session`` on ``/``).
        path: the cookie's path, with `store`.
    """

    def __init__(
        self,
        *,
        store: SessionStore | None = None,
        session_cookie: str | None = None,
        path: str = "/",
    ) -> None:
        self._store = store
        if session_cookie is None:
            session_cookie = default_cookie_name(https_only=True, path=path, domain=None)
        self._cookie = CookiePolicy(name=session_cookie, path=path) if store else None

    def _target(self, client: Any, app: Any) -> tuple[SessionStore, CookiePolicy]:
        if self._store is not None and self._cookie is not None:
            return self._store, self._cookie
        if app is None:
            # Starlette's TestClient keeps the app; httpx keeps it on its ASGITransport.
            app = getattr(client, "app", None)
            if app is None:
                app = getattr(getattr(client, "_transport", None), "app", None)
        if app is None:
            raise LookupError(f"Cannot tell which app {type(client).__name__} talks to: pass app=.")
        middleware = find_session_middleware(app)
        # The middleware's own store: the same driver (loaded once, on first use) and the
        # same lifetimes and clock as the app's requests.
        return middleware._get_store(), middleware.cookie

    # -- the coroutines, for an httpx.AsyncClient (or any async test) -------------------

    async def aset_session(
        self,
        client: Any,
        data: Mapping[str, Any] | None = None,
        *,
        user: str | None = None,
        app: Any = None,
    ) -> str | None:
        """Start a new session holding `data`, and give the client its cookie.

        Args:
            client: the test client; its cookie jar gets the session cookie (any session
                cookie it held is dropped).
            data: the session's keys and values, as the app would store them.
            user: bind the session to this user id, as ``session.bind_user(user)`` does
                at sign-in (`data` should hold whatever else the app's sign-in stores).
            app: the ASGI app, when it cannot be found from the client.

        Returns:
            The new session id, or None when there was nothing to store (no data and no
            user: the client is then left without a session cookie).

        Raises:
            LookupError: the app or its `SessionMiddleware` cannot be found.
            ValueNotSerializableError: a value is not JSON.
        """
        store, cookie = self._target(client, app)
        session = await store.load([])
        for key, value in (data or {}).items():
            session[key] = value
        if user is not None:
            session.bind_user(user)
        change = await store.commit(session)
        client.cookies.delete(cookie.name)
        if change is None or change.session_id is None:
            return None
        client.cookies.set(
            cookie.name, change.session_id, domain=cookie.domain or "", path=cookie.path
        )
        return change.session_id

    async def asign_in(
        self,
        client: Any,
        user: str,
        data: Mapping[str, Any] | None = None,
        *,
        app: Any = None,
    ) -> str:
        """`aset_session` with `user`: a new session bound to `user`, holding `data`."""
        session_id = await self.aset_session(client, data, user=user, app=app)
        assert session_id is not None  # a bound session is always stored
        return session_id

    async def aget_session(self, client: Any, *, app: Any = None) -> dict[str, Any] | None:
        """The data of the live session the client's cookie names, or None.

        Read as the middleware reads it at the start of a request: None when the client
        has no session cookie, or its session is unknown, expired or ended.

        Raises:
            LookupError: the app or its `SessionMiddleware` cannot be found.
        """
        store, cookie = self._target(client, app)
        values = [c.value for c in client.cookies.jar if c.name == cookie.name and c.value]
        session = await store.load(values)
        # A session that was found has its id; a new, empty one (nothing found) has none.
        if session.session_id is None:
            return None
        return dict(session)

    # -- the same for Starlette's TestClient, which runs the app in a thread of its own ----

    def set_session(
        self,
        client: Any,
        data: Mapping[str, Any] | None = None,
        *,
        user: str | None = None,
        app: Any = None,
    ) -> str | None:
        """`aset_session` for Starlette's (or FastAPI's) ``TestClient``."""
        return _call(client, lambda: self.aset_session(client, data, user=user, app=app))

    def sign_in(
        self,
        client: Any,
        user: str,
        data: Mapping[str, Any] | None = None,
        *,
        app: Any = None,
    ) -> str:
        """`asign_in` for Starlette's (or FastAPI's) ``TestClient``."""
        return _call(client, lambda: self.asign_in(client, user, data, app=app))

    def get_session(self, client: Any, *, app: Any = None) -> dict[str, Any] | None:
        """`aget_session` for Starlette's (or FastAPI's) ``TestClient``."""
        return _call(client, lambda: self.aget_session(client, app=app))


def _call(client: Any, work: Callable[[], Awaitable[_T]]) -> _T:
    """Run `work` where the TestClient runs the app: a driver's connections belong to a loop."""
    with _portal(client) as portal:
        result: _T = portal.call(work)
        return result


@contextlib.contextmanager
def _portal(client: Any) -> Iterator[Any]:
    # Inside ``with TestClient(app)`` the client keeps one portal (one event loop) for
    # every request; outside it, each request gets a new one, and so does this.
    factory = getattr(client, "_portal_factory", None)
    if factory is not None:
        with factory() as portal:
            yield portal
        return
    import anyio.from_thread

    with anyio.from_thread.start_blocking_portal() as portal:
        yield portal
