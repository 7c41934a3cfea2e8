"""A response that sets or expires the session cookie is never storable by a shared cache.

Unless the app already made it ``private`` or ``no-store``, the middleware adds
``private`` and drops ``public`` and ``s-maxage``; other directives stay.
"""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sqlsession.drivers.memory import MemoryDriver
from sqlsession.web import SessionMiddleware, get_session
from tests.conftest import FakeClock


def app_sending(cache_control: list[str], clock: FakeClock) -> Starlette:
    async def write(request: Request) -> Response:
        request.session["a"] = 1
        headers = [(b"cache-control", value.encode()) for value in cache_control]
        response = PlainTextResponse("ok")
        response.raw_headers.extend(headers)
        return response

    async def end(request: Request) -> Response:
        get_session(request).destroy()
        response = PlainTextResponse("ok")
        response.raw_headers.extend((b"cache-control", v.encode()) for v in cache_control)
        return response

    async def read(request: Request) -> Response:
        response = PlainTextResponse(str(request.session.get("a")))
        response.raw_headers.extend((b"cache-control", v.encode()) for v in cache_control)
        return response

    return Starlette(
        routes=[
            Route("/write", write, methods=["POST"]),
            Route("/end", end, methods=["POST"]),
            Route("/read", read),
        ],
        middleware=[Middleware(SessionMiddleware, driver=MemoryDriver(clock=clock), clock=clock)],
    )


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ([], "private"),
        (["public, max-age=600"], "private, max-age=600"),
        (["max-age=60, s-maxage=3600"], "private, max-age=60"),
        (["no-cache"], "private, no-cache"),
        (["public", "max-age=5"], "private, max-age=5"),  # several headers: merged
        (['private="set-cookie", max-age=5'], 'private, private="set-cookie", max-age=5'),
        (["private, max-age=5"], "private, max-age=5"),  # already private: untouched
        (["no-store"], "no-store"),
    ],
)
async def test_a_response_that_sets_the_cookie_is_private(
    clock: FakeClock, sent: list[str], expected: str
) -> None:
    transport = httpx.ASGITransport(app=app_sending(sent, clock))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        response = await http.post("/write")
        assert response.headers.get_list("set-cookie") != []
        assert response.headers.get_list("cache-control") == [expected]
        # A response that only reads the session keeps what the app sent: Vary: Cookie
        # already keeps one visitor's page from another.
        response = await http.get("/read")
        assert response.headers.get_list("set-cookie") == []
        assert response.headers.get_list("cache-control") == sent
        assert response.headers["vary"] == "Cookie"
        # Expiring the cookie is a cookie change too.
        response = await http.post("/end")
        assert response.headers["set-cookie"].startswith("__Host-session=; Max-Age=0;")
        assert response.headers.get_list("cache-control") == [expected]
