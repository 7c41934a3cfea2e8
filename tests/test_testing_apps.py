"""The app-test helpers of `sqlsession.testing`: a client put into a session without the UI.

The app under test reads the session as usual; the helpers write and read it through
the app's own middleware, so what they store is what a real request would have stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from sqlsession import SessionError, session_drivers
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.testing import ClientSessions, FakeClock, find_session_middleware
from sqlsession.web import SessionMiddleware, SessionStore, end_user_sessions, get_session

BASE = "https://testserver"


async def me(request: Request) -> JSONResponse:
    session = get_session(request)
    return JSONResponse({"user": session.get("user"), "data": dict(session)})


async def add(request: Request) -> JSONResponse:
    session = get_session(request)
    session["cart"] = [*session.get("cart", []), request.path_params["item"]]
    return JSONResponse(session["cart"])


async def everywhere(request: Request) -> JSONResponse:
    # Raises (a 500) unless the session was bound with bind_user.
    get_session(request).sign_out_everywhere()
    return JSONResponse("signed out")


async def sign_out(request: Request) -> JSONResponse:
    get_session(request).destroy()
    return JSONResponse("bye")


def make_app(driver: Any, **options: Any) -> Starlette:
    return Starlette(
        routes=[
            Route("/me", me),
            Route("/cart/{item}", add, methods=["POST"]),
            Route("/everywhere", everywhere, methods=["POST"]),
            Route("/sign-out", sign_out, methods=["POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, driver=driver, **options)],
    )


@pytest.fixture(params=["memory", "sqlite"])
async def app_driver(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Any]:
    if request.param == "memory":
        driver: Any = MemoryDriver(clock=clock)
    else:
        driver = SQLDriver(request.getfixturevalue("sqlite_url"), clock=clock)
    yield driver
    await driver.dispose()


def test_the_plugin_provides_the_fixtures(
    client_sessions: ClientSessions, session_clock: FakeClock
) -> None:
    assert isinstance(client_sessions, ClientSessions)
    assert session_clock() == FakeClock()()


def test_set_session_is_what_the_app_reads(client_sessions: ClientSessions) -> None:
    driver = MemoryDriver()
    with TestClient(make_app(driver), base_url=BASE) as client:
        session_id = client_sessions.set_session(client, {"user": "ada", "cart": ["tea"]})
        assert session_id is not None
        assert client.cookies["__Host-session"] == session_id
        assert client.get("/me").json() == {
            "user": "ada",
            "data": {"user": "ada", "cart": ["tea"]},
        }
        # What the app then changes is what the helper reads back.
        assert client.post("/cart/milk").json() == ["tea", "milk"]
        assert client_sessions.get_session(client) == {"user": "ada", "cart": ["tea", "milk"]}
        # Setting again replaces the client's session with a new one.
        second = client_sessions.set_session(client, {"user": "bob"})
        assert second != session_id
        assert client.get("/me").json()["data"] == {"user": "bob"}


async def test_sign_in_binds_the_user(app_driver: Any, clock: FakeClock) -> None:
    sessions = ClientSessions()
    transport = httpx.ASGITransport(app=make_app(app_driver, clock=clock))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        await sessions.asign_in(client, "ada", {"user": "ada"})
        assert (await client.get("/me")).json()["user"] == "ada"
        # Bound as bind_user binds: ending the user's sessions ends this one.
        await end_user_sessions(app_driver, "ada")
        assert (await client.get("/me")).json() == {"user": None, "data": {}}
        assert await sessions.aget_session(client) is None

        await sessions.asign_in(client, "ada", {"user": "ada"})
        assert (await client.post("/everywhere")).status_code == 200
        assert await sessions.aget_session(client) is None

        # A session given data without a user is not bound: sign_out_everywhere refuses.
        await sessions.aset_session(client, {"user": "ada"})
        with pytest.raises(SessionError, match="bound to a user"):
            await client.post("/everywhere")


async def test_get_session_reads_what_a_response_left(app_driver: Any, clock: FakeClock) -> None:
    sessions = ClientSessions()
    transport = httpx.ASGITransport(app=make_app(app_driver, clock=clock, max_age=60))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        assert await sessions.aget_session(client) is None  # no cookie yet
        await client.post("/cart/tea")
        assert await sessions.aget_session(client) == {"cart": ["tea"]}
        await client.post("/sign-out")
        assert await sessions.aget_session(client) is None

        await client.post("/cart/tea")
        clock.advance(60)  # the middleware's clock and max_age apply to the helper too
        assert await sessions.aget_session(client) is None
        assert await sessions.aset_session(client, {}) is None  # nothing to store
        assert "__Host-session" not in client.cookies


def test_the_middlewares_own_driver_is_used_when_it_loads_one(
    client_sessions: ClientSessions,
) -> None:
    # A memory driver the middleware loads itself from a config: only the middleware's
    # own instance holds the sessions, so the helper must write through it.
    app = make_app(session_drivers.memory())
    with TestClient(app, base_url=BASE) as client:
        client_sessions.sign_in(client, "ada", {"user": "ada"})
        assert client.get("/me").json()["user"] == "ada"
        store = find_session_middleware(app)._get_store()
        assert isinstance(store.driver, MemoryDriver)


def test_outside_a_with_block_and_with_another_cookie(client_sessions: ClientSessions) -> None:
    app = make_app(MemoryDriver(), session_cookie="__Host-sid")
    client = TestClient(app, base_url=BASE)  # no `with`: a new event loop per request
    client_sessions.set_session(client, {"user": "ada"})
    assert "__Host-session" not in client.cookies
    assert client.get("/me").json()["user"] == "ada"
    assert client_sessions.get_session(client) == {"user": "ada"}


def test_a_mounted_app_takes_an_explicit_store(client_sessions: ClientSessions) -> None:
    driver = MemoryDriver()
    inner = make_app(driver, session_cookie="sid", path="/shop")
    outer = Starlette(routes=[Mount("/shop", app=inner)])
    with TestClient(outer, base_url=BASE) as client:
        with pytest.raises(LookupError, match="No sqlsession SessionMiddleware around Starlette"):
            client_sessions.set_session(client, {"user": "ada"})
        explicit = ClientSessions(store=SessionStore(driver), session_cookie="sid", path="/shop")
        explicit.set_session(client, {"user": "ada"})
        assert client.get("/shop/me").json()["user"] == "ada"
        assert explicit.get_session(client) == {"user": "ada"}


async def test_a_client_without_an_app_needs_app(client_sessions: ClientSessions) -> None:
    app = make_app(MemoryDriver())
    async with httpx.AsyncClient(base_url=BASE) as client:
        with pytest.raises(LookupError, match="pass app="):
            await client_sessions.aset_session(client, {"user": "ada"})
        await client_sessions.aset_session(client, {"user": "ada"}, app=app)
        assert await client_sessions.aget_session(client, app=app) == {"user": "ada"}


def test_a_fastapi_app(client_sessions: ClientSessions, session_clock: FakeClock) -> None:
    from fastapi import FastAPI

    app = FastAPI()
    app.add_middleware(SessionMiddleware, driver=MemoryDriver(), clock=session_clock, max_age=30)

    @app.get("/me")
    async def whoami(request: Request) -> Any:
        return request.session.get("user")

    with TestClient(app, base_url=BASE) as client:
        client_sessions.sign_in(client, "ada", {"user": "ada"})
        assert client.get("/me").json() == "ada"
        session_clock.advance(30)  # the middleware's max_age, on the fixture's clock
        assert client.get("/me").json() is None
        assert client_sessions.get_session(client) is None
