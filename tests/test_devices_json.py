"""Devices and set_max_age add no JSON work to the requests that do not use them.

Counted as tests/test_json_counts.py counts (its fixture), on every backend: a signed-in
session whose row carries device metadata and its own lifetime decodes and encodes as
much per request as an anonymous one.
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sqlsession.web import SessionMiddleware, get_session
from tests.conftest import FakeClock
from tests.test_json_counts import JSONCounter, TextDriver
from tests.test_json_counts import json_counter as json_counter  # the fixture


async def sign_in(request: Request) -> Response:
    session = get_session(request)
    session["user"] = "ada"  # the identity key: binds the user, indexes the device
    session["n"] = 1
    session.set_max_age(600)
    return PlainTextResponse("ok")


async def read(request: Request) -> Response:
    return PlainTextResponse(str(request.session["n"]))


async def change(request: Request) -> Response:
    request.session["n"] = int(request.query_params["n"])
    return PlainTextResponse("ok")


async def remember(request: Request) -> Response:
    get_session(request).set_max_age(900)
    return PlainTextResponse("ok")


async def test_a_signed_in_session_with_devices_costs_no_extra_json(
    driver: Any, clock: FakeClock, json_counter: JSONCounter
) -> None:
    wrapped = TextDriver(driver)
    app = Starlette(
        routes=[
            Route("/signin", sign_in, methods=["POST"]),
            Route("/read", read),
            Route("/change", change, methods=["POST"]),
            Route("/remember", remember, methods=["POST"]),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                driver=wrapped,
                clock=clock,
                identity_key="user",
                record_client=True,
            )
        ],
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:

        async def request(method: str, path: str) -> tuple[int, int]:
            json_counter.clear()
            wrapped.writes.clear()
            response = await http.request(method, path, headers={"user-agent": "Firefox"})
            assert response.status_code == 200
            return json_counter.of("web")

        await request("POST", "/signin")
        assert "merge_item" in wrapped.writes  # the device index
        # As an anonymous session (tests/test_json_counts.py): one decode of the row on
        # a read, one encode more for a change, and nothing written but the merge.
        assert await request("GET", "/read") == (1, 0)
        assert wrapped.writes == []
        assert await request("POST", "/change?n=2") == (1, 1)
        assert wrapped.writes == ["merge_existing_text"]
        # A new lifetime is merged as it is: no encode.
        assert await request("POST", "/remember") == (1, 0)
        assert wrapped.writes == ["merge_existing_text"]
        assert (await http.get("/read")).text == "2"
        listed = await get_session_of(http, wrapped, clock)
        assert listed == ["Firefox 203.0.113.0/24"]


async def get_session_of(http: httpx.AsyncClient, driver: Any, clock: FakeClock) -> list[str]:
    """The devices the client's session lists, through the store the middleware built."""
    from sqlsession.web import SessionStore

    cookie = http.cookies.get("__Host-session")
    assert cookie is not None
    store = SessionStore(driver, clock=clock)
    session = await store.load([cookie])
    return [f"{d.user_agent} {d.client_address}" for d in await session.user_sessions()]
