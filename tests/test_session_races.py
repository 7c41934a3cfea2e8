"""Requests that overlap a sign-in or a destroy, on every backend.

A request that loaded the session before another one replaced its id (sign-in) or ended
it (destroy, sign-out) must neither bring its row back nor send its id again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sqlsession.web import SessionMiddleware, SessionStore, get_session
from tests.conftest import FakeClock
from tests.test_session import reopen, start, storage_key

IDLE = 600


@pytest.mark.parametrize("change", [False, True], ids=["refresh", "write"])
async def test_a_request_loaded_before_a_sign_in_does_not_resend_the_replaced_id(
    driver: Any, clock: FakeClock, change: bool
) -> None:
    store = SessionStore(driver, clock=clock, idle_timeout=IDLE)
    sid = await start(store, cart=[1])
    slow, fast = await reopen(store, sid), await reopen(store, sid)
    fast.bind_user("ada")
    signed_in = await store.commit(fast)
    assert signed_in is not None
    assert signed_in.session_id not in (None, sid)
    clock.advance(IDLE * 0.6)  # the slow request is due to refresh the idle deadline
    if change:
        slow["count"] = 1
    assert await store.commit(slow) is None  # no cookie: the browser keeps the new id
    assert await driver.get_item(storage_key(sid)) is None
    assert signed_in.session_id is not None
    assert dict(await reopen(store, signed_in.session_id)) == {"cart": [1]}


async def test_a_write_racing_destroy_leaves_no_stray_row(
    driver: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, user="ada")
    first, second = await reopen(store, sid), await reopen(store, sid)
    first.destroy()
    second["cart"] = [1]
    await store.commit(first)
    assert await store.commit(second) is None
    assert await driver.get_item(storage_key(sid)) is None
    with caplog.at_level(logging.INFO, logger="sqlsession"):
        assert dict(await reopen(store, sid)) == {}
    assert "cannot read" not in caplog.text


# -- the same race through the middleware --------------------------------------------------


async def test_the_slow_response_of_a_sign_in_race_keeps_the_browser_signed_in(
    driver: Any, clock: FakeClock
) -> None:
    loaded = asyncio.Event()
    go_on = asyncio.Event()

    async def slow(request: Request) -> Response:
        request.session["count"] = request.session.get("count", 0) + 1
        loaded.set()
        await go_on.wait()
        return PlainTextResponse("slow")

    async def login(request: Request) -> Response:
        get_session(request).bind_user("ada")
        request.session["user"] = "ada"
        return PlainTextResponse("ok")

    async def show(request: Request) -> Response:
        return JSONResponse(dict(request.session))

    app = Starlette(
        routes=[
            Route("/", show),
            Route("/slow", slow, methods=["POST"]),
            Route("/login", login, methods=["POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, driver=driver, clock=clock, idle_timeout=IDLE)],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        go_on.set()
        await http.post("/slow")  # the session exists (count 1) before the race
        go_on.clear()
        loaded.clear()
        slow_request = asyncio.create_task(http.post("/slow"))
        await asyncio.wait_for(loaded.wait(), 5)
        login_response = await http.post("/login")
        assert login_response.headers.get_list("set-cookie") != []
        go_on.set()
        slow_response = await asyncio.wait_for(slow_request, 5)
        assert slow_response.headers.get_list("set-cookie") == []
        assert (await http.get("/")).json() == {"count": 1, "user": "ada"}
