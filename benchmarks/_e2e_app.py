"""The app every contender of the end-to-end benchmark serves (e2e.py), on Starlette.

Four routes, the same for every contender (`_e2e_litestar.py` has them for Litestar):

    POST /signin/{n}  sign user n in: a session of about 930 bytes of JSON
    GET  /read        read the session, change nothing; answers "user cart-length counter"
    POST /write       append an item to the cart (keeping its last 6) and count one up
    GET  /plain       a page that does not touch the session (the cookie still comes)

Only the session middleware differs from one contender to the next. The harness reads
the counter back through /read after a write cell, so a contender that does not store
its writes cannot look fast.
"""

from __future__ import annotations

import contextlib
import random
import secrets
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

# The contenders this module builds; e2e.py adds Litestar's, which has an app of its own.
STARLETTE_CONTENDERS = (
    "none",
    "cookie",
    "sqlsession-sqlite",
    "sqlsession-postgres",
    "sqlsession-mariadb",
    "sqlsession-memory",
    "starsessions-redis",
    "starsessions-memory",
)
LIFETIME = 3600  # seconds: every contender's session lifetime
CART_KEEP = 6  # the cart keeps its last 6 items, so the session's size stays put
# A fixed secret: the cookie contender signs with it and sqlsession keys users by it.
SECRET = "e2e-benchmark-secret-not-for-production"


@dataclass(frozen=True)
class Target:
    """Where a contender keeps its sessions.

    Args:
        sql_url: the database of a sqlsession-sqlite/-postgres/-mariadb contender.
        table: sqlsession's table there (migrated by the caller).
        redis_url: the Redis database of the Redis contenders (its own db number).
        redis_prefix: the prefix of every key the Redis contenders write.
    """

    sql_url: str | None = None
    table: str = "sqlsession"
    redis_url: str = "redis://127.0.0.1:6379/13"
    redis_prefix: str = "sqlsession-e2e:"


def profile(n: int) -> dict[str, Any]:
    """The session of signed-in user `n`: about 930 bytes of JSON, "user" first."""
    rng = random.Random(n)
    return {
        "user": f"user-{n}",
        "csrf": secrets.token_urlsafe(32),
        "login_at": 1_700_000_000 + rng.randrange(10**6),
        "roles": ["customer", "newsletter"],
        "locale": "en-GB",
        "flash": [{"level": "info", "text": "Welcome back!"}],
        "prefs": {"theme": "dark", "currency": "EUR", "tz": "Europe/Berlin", "beta": False},
        "recently_viewed": [rng.randrange(10**7) for _ in range(12)],
        "cart": [cart_item(rng.randrange(10**6)) for _ in range(CART_KEEP)],
        "counter": 0,
    }


def cart_item(sku: int) -> dict[str, Any]:
    return {
        "sku": f"SKU-{sku:06d}",
        "name": "Stainless steel water bottle, 750 ml",
        "qty": 1,
        "price": 9.5,
    }


def describe(session: MutableMapping[str, Any]) -> str:
    """What /read answers: enough of the session that the harness can check it."""
    return f"{session['user']} {len(session['cart'])} {session['counter']}"


def write(session: MutableMapping[str, Any]) -> int:
    """Append to the cart and count one up; returns the new counter."""
    counter = int(session["counter"]) + 1
    # New objects rather than edits in place: every contender sees the change.
    session["cart"] = [*session["cart"][1 - CART_KEEP :], cart_item(counter)]
    session["counter"] = counter
    return counter


async def signin_route(request: Request) -> Response:
    session = request.session
    session.clear()
    # "user" comes first: assigning it is sqlsession's sign-in (a new id, bound to the user).
    session.update(profile(int(request.path_params["n"])))
    return PlainTextResponse("signed in")


async def read_route(request: Request) -> Response:
    return PlainTextResponse(describe(request.session))


async def write_route(request: Request) -> Response:
    return PlainTextResponse(str(write(request.session)))


async def plain_route(request: Request) -> Response:
    return PlainTextResponse("a page that does not use the session")


ROUTES = [
    Route("/signin/{n:int}", signin_route, methods=["POST"]),
    Route("/read", read_route),
    Route("/write", write_route, methods=["POST"]),
    Route("/plain", plain_route),
]


class PlainSessions:
    """The "none" contender: no session middleware, a dict per visitor in the process.

    The routes' own work with nothing of a session store around it (no encoding, no
    I/O): the ceiling the other contenders are measured under.
    """

    cookie = "sid"

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sessions: dict[str, dict[str, Any]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sid = self._cookie(scope)
        if sid not in self.sessions:
            sid = secrets.token_urlsafe(16)
            self.sessions[sid] = {}
            new_sid: str | None = sid
        else:
            new_sid = None
        scope["session"] = self.sessions[sid]

        async def send_cookie(message: Any) -> None:
            if new_sid is not None and message["type"] == "http.response.start":
                cookie = f"{self.cookie}={new_sid}; path=/; httponly; samesite=lax"
                message["headers"] = [*message["headers"], (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_cookie)

    def _cookie(self, scope: Any) -> str | None:
        for name, value in scope["headers"]:
            if name == b"cookie":
                morsel = SimpleCookie(value.decode("latin-1")).get(self.cookie)
                return morsel.value if morsel else None
        return None


def build_app(contender: str, target: Target) -> Any:
    """The Starlette app of `contender` (one of STARLETTE_CONTENDERS), as an ASGI app.

    Raises:
        ValueError: an unknown contender, or a SQL contender without `target.sql_url`.
    """
    if contender == "none":
        return PlainSessions(Starlette(routes=ROUTES))
    middleware, lifespan = _session_middleware(contender, target)
    return Starlette(routes=ROUTES, middleware=middleware, lifespan=lifespan)


def _session_middleware(contender: str, target: Target) -> tuple[list[Middleware], Any]:
    if contender == "cookie":
        from starlette.middleware.sessions import SessionMiddleware

        return [
            Middleware(SessionMiddleware, secret_key=SECRET, max_age=LIFETIME, https_only=False)
        ], None
    if contender.startswith("sqlsession-"):
        from sqlsession import session_drivers
        from sqlsession.web import SessionMiddleware as SQLSessionMiddleware

        if contender == "sqlsession-memory":
            driver = session_drivers.memory(max=100_000)
        elif target.sql_url is None:
            raise ValueError(f"{contender} needs Target(sql_url=...)")
        else:
            driver = session_drivers.sql(target.sql_url, table=target.table)
        options = {"identity_key": "user", "secret_key": SECRET, "https_only": False}
        return [Middleware(SQLSessionMiddleware, driver=driver, **options)], None
    if contender in ("starsessions-redis", "starsessions-memory"):
        return _starsessions(contender, target)
    raise ValueError(f"unknown contender {contender!r}; choose from {STARLETTE_CONTENDERS}")


def _starsessions(contender: str, target: Target) -> tuple[list[Middleware], Any]:
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware
    from starsessions.stores.memory import InMemoryStore

    lifespan = None
    if contender == "starsessions-memory":
        store: Any = InMemoryStore()
    else:
        from redis.asyncio import Redis
        from starsessions.stores.redis import RedisStore

        client = Redis.from_url(target.redis_url)
        store = RedisStore(connection=client, prefix=target.redis_prefix + "starsessions:")

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            yield
            await client.aclose()

    return [
        Middleware(SessionMiddleware, store=store, lifetime=LIFETIME, cookie_https_only=False),
        Middleware(SessionAutoloadMiddleware),
    ], lifespan
