"""Session fixation: the cookie's name, `clear()`, `identity_key` and `bind_user`, on every backend.

An app written for Starlette's cookie sessions signs in with ``request.session["user"] =
name`` and out with ``request.session.clear()``. With the defaults and
``identity_key="user"`` those two lines must do what `Session.bind_user` does: an id
planted in the visitor's browser before sign-in never becomes the signed-in session.
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sqlsession.web import SessionMiddleware, SessionStore, get_session
from tests.conftest import FakeClock
from tests.test_session import reopen, start, storage_key

HOST_COOKIE = "__Host-session"


async def show(request: Request) -> Response:
    return JSONResponse(dict(request.session))


async def login(request: Request) -> Response:
    request.session["user"] = await request.json()  # the Starlette idiom
    return PlainTextResponse("ok")


async def logout(request: Request) -> Response:
    request.session.clear()  # the Starlette idiom
    return PlainTextResponse("ok")


async def forget_user(request: Request) -> Response:
    request.session.pop("user", None)
    return PlainTextResponse("ok")


async def put(request: Request) -> Response:
    request.session[request.path_params["key"]] = await request.json()
    return PlainTextResponse("ok")


async def everywhere(request: Request) -> Response:
    get_session(request).sign_out_everywhere()
    return PlainTextResponse("ok")


def starlette_app(driver: Any, clock: FakeClock, **options: Any) -> Starlette:
    routes = [
        Route("/", show),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/forget", forget_user, methods=["POST"]),
        Route("/put/{key}", put, methods=["POST"]),
        Route("/everywhere", everywhere, methods=["POST"]),
    ]
    middleware = Middleware(SessionMiddleware, driver=driver, clock=clock, **options)
    return Starlette(routes=routes, middleware=[middleware])


def browser(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="https://testserver")


def cookie_names(response: httpx.Response) -> list[str]:
    return [h.split("=", 1)[0] for h in response.headers.get_list("set-cookie")]


# -- the default cookie name ----------------------------------------------------------------


async def test_the_default_cookie_name_carries_the_strongest_prefix_that_fits(
    clock: FakeClock,
) -> None:
    from sqlsession.drivers.memory import MemoryDriver

    cases: list[tuple[dict[str, Any], str, bool]] = [
        ({}, HOST_COOKIE, True),
        ({"domain": "example.com"}, "__Secure-session", True),
        ({"path": "/app"}, "__Secure-session", True),
        ({"https_only": False}, "session", False),  # no prefix is allowed without Secure
        ({"session_cookie": "sid"}, "sid", True),  # a name the app gives is used as is
        ({"session_cookie": "sid", "https_only": False}, "sid", False),
    ]
    for options, name, secure in cases:
        app = starlette_app(MemoryDriver(clock=clock), clock, **options)
        async with browser(app) as http:
            response = await http.post("/put/a", json=1)
        [header] = response.headers.get_list("set-cookie")
        assert header.split("=", 1)[0] == name, options
        assert ("; Secure" in header) is secure


# -- fixation through the Starlette idiom, on every backend -----------------------------------


async def test_a_planted_id_is_not_signed_in_by_the_starlette_idiom(
    driver: Any, clock: FakeClock
) -> None:
    app = starlette_app(driver, clock, identity_key="user")
    async with browser(app) as attacker, browser(app) as victim:
        # The attacker gets a valid id of their own ...
        response = await attacker.post("/put/theme", json="dark")
        assert cookie_names(response) == [HOST_COOKIE]
        planted = attacker.cookies[HOST_COOKIE]
        # ... and plants it in the victim's browser, who then signs in.
        planted_cookie = {"cookie": f"{HOST_COOKIE}={planted}"}
        response = await victim.post("/login", json="victim", headers=planted_cookie)
        assert response.status_code == 200
        signed_in = victim.cookies[HOST_COOKIE]
        assert signed_in != planted
        assert (await victim.get("/")).json() == {"theme": "dark", "user": "victim"}
        # The planted id holds nothing signed in: its row is gone.
        response = await attacker.get("/")
        assert response.json() == {}
        assert await driver.get_item(storage_key(planted)) is None


async def test_assigning_the_identity_key_binds_the_user_so_sign_out_everywhere_works(
    driver: Any, clock: FakeClock
) -> None:
    app = starlette_app(driver, clock, identity_key="user")
    async with browser(app) as laptop, browser(app) as phone, browser(app) as other:
        await laptop.post("/login", json="ada")
        await phone.post("/login", json="ada")
        await other.post("/login", json="bob")
        await laptop.post("/everywhere")
        assert (await phone.get("/")).json() == {}
        assert (await laptop.get("/")).json() == {}
        assert (await other.get("/")).json() == {"user": "bob"}


async def test_clear_and_deleting_the_identity_key_sign_out_under_a_new_id(
    driver: Any, clock: FakeClock
) -> None:
    app = starlette_app(driver, clock, identity_key="user")
    async with browser(app) as http:
        await http.post("/put/cart", json=[1])
        await http.post("/login", json="ada")
        signed_in = http.cookies[HOST_COOKIE]
        await http.post("/forget")
        # Signed out: a new id, no user; the rest of the session stays.
        assert http.cookies[HOST_COOKIE] != signed_in
        assert (await http.get("/")).json() == {"cart": [1]}
        assert await driver.get_item(storage_key(signed_in)) is None
        await http.post("/login", json="ada")
        signed_in = http.cookies[HOST_COOKIE]
        response = await http.post("/logout")
        assert response.headers["set-cookie"].startswith(f"{HOST_COOKIE}=; Max-Age=0;")
        assert await driver.get_item(storage_key(signed_in)) is None


async def test_signing_in_again_as_the_same_user_keeps_the_id(
    driver: Any, clock: FakeClock
) -> None:
    app = starlette_app(driver, clock, identity_key="user")
    async with browser(app) as http:
        await http.post("/login", json="ada")
        first = http.cookies[HOST_COOKIE]
        response = await http.post("/login", json="ada")
        assert response.headers.get_list("set-cookie") == []
        assert http.cookies[HOST_COOKIE] == first


async def test_a_non_str_identity_is_the_user_of_its_json_text(
    driver: Any, clock: FakeClock
) -> None:
    from sqlsession.web import end_user_sessions

    app = starlette_app(driver, clock, identity_key="user")
    async with browser(app) as http:
        await http.post("/login", json=42)
        assert (await http.get("/")).json() == {"user": 42}
        await end_user_sessions(driver, "42")
        assert (await http.get("/")).json() == {}


# -- clear() and bind_user() through the store ---------------------------------------------------


async def test_clear_gives_a_new_id_and_removes_the_old_row(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, cart=[1], user="ada")
    session = await reopen(store, sid)
    session.clear()
    session["theme"] = "dark"
    change = await store.commit(session)
    assert change is not None
    assert change.session_id not in (None, sid)
    assert await driver.get_item(storage_key(sid)) is None
    assert dict(await reopen(store, sid)) == {}
    assert change.session_id is not None
    assert dict(await reopen(store, change.session_id)) == {"theme": "dark"}


async def test_clear_unbinds_the_user(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    session = await store.load([])
    session.bind_user("ada")
    session.clear()
    session["a"] = 1
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    stored = await driver.get_item(storage_key(change.session_id))
    assert "user" not in stored


async def sign_in(store: SessionStore, user: str, **data: Any) -> str:
    session = await store.load([])
    session.update(data)
    session.bind_user(user)
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    return change.session_id


async def test_bind_user_as_another_user_starts_from_an_empty_session(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await sign_in(store, "ada", secret="ada's", cart=[1])
    session = await reopen(store, sid)
    session.bind_user("ada")  # the same user again: the data stays
    assert dict(session) == {"secret": "ada's", "cart": [1]}
    session.bind_user("bob")
    assert dict(session) == {}
    session["greeting"] = "hi bob"
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    assert dict(await reopen(store, change.session_id)) == {"greeting": "hi bob"}


async def test_assigning_another_user_to_the_identity_key_empties_the_session(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, identity_key="user")
    session = await store.load([])
    session["user"] = "ada"
    session["cart"] = [1]
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    session = await reopen(store, change.session_id)
    session["user"] = "bob"
    assert dict(session) == {"user": "bob"}


async def test_assigning_none_to_the_identity_key_signs_out_and_keeps_the_rest(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, identity_key="user", max_size=60)
    session = await store.load([])
    session["user"] = "ada"
    session["cart"] = ["x" * 30]
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    signed_in = change.session_id
    session = await reopen(store, signed_in)
    session["user"] = None
    assert session.session_id != signed_in
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    stored = await driver.get_item(storage_key(change.session_id))
    assert "user" not in stored  # no binding left
    assert dict(await reopen(store, change.session_id)) == {"user": None, "cart": ["x" * 30]}
    assert await driver.get_item(storage_key(signed_in)) is None
