"""The end-to-end benchmark's app on Litestar, with its server-side sessions on Redis.

The same four routes, bodies and session as `_e2e_app.py`'s Starlette app; Litestar's
own `ServerSideSessionConfig` with its `RedisStore` keeps the sessions.
"""

from __future__ import annotations

from typing import Any

from _e2e_app import LIFETIME, Target, describe, profile, write
from litestar import Litestar, Request, get, post
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.stores.redis import RedisStore
from redis.asyncio import Redis

TEXT = "text/plain"


@post("/signin/{n:int}", media_type=TEXT, status_code=200)
async def signin(request: Request[Any, Any, Any]) -> str:
    # Read from the request rather than declared as an argument: the style of declaring
    # path parameters changed in Litestar 2.x, and this reads the same in every 2.x.
    request.set_session(profile(int(request.path_params["n"])))
    return "signed in"


@get("/read", media_type=TEXT)
async def read(request: Request[Any, Any, Any]) -> str:
    return describe(request.session)


@post("/write", media_type=TEXT, status_code=200)
async def write_route(request: Request[Any, Any, Any]) -> str:
    return str(write(request.session))


@get("/plain", media_type=TEXT)
async def plain() -> str:
    return "a page that does not use the session"


def build_app(target: Target) -> Litestar:
    """Litestar serving the four routes, its sessions in Redis under `target`'s prefix."""
    client = Redis.from_url(target.redis_url)
    store = RedisStore(client, namespace=target.redis_prefix + "litestar")
    sessions = ServerSideSessionConfig(max_age=LIFETIME, secure=False)
    return Litestar(
        route_handlers=[signin, read, write_route, plain],
        middleware=[sessions.middleware],
        stores={"sessions": store},
        on_shutdown=[client.aclose],
        logging_config=None,
    )
