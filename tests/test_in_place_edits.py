"""Changes made in place to values read from the session persist, on every backend.

As with Starlette's sessions: ``session["cart"].append(x)`` and a key set in a nested dict
are saved, found by comparing what was loaded with what is there at commit, and only the
keys that changed are merged into the stored row.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sqlsession import ValueNotSerializableError
from sqlsession.web import SessionMiddleware, SessionStore
from tests.conftest import FakeClock
from tests.test_session import Recording, reopen, start


async def test_appending_to_a_list_read_from_the_session_persists(
    driver: Any, clock: FakeClock
) -> None:
    recording = Recording(driver)
    store = SessionStore(recording, clock=clock)
    sid = await start(store, cart=["apple"], prefs={"a": [1]})
    session = await reopen(store, sid)
    session["cart"].append("pear")
    assert session["cart"] == ["apple", "pear"]  # within the request, too
    assert await store.commit(session) is None  # same id, no cookie change
    assert dict(await reopen(store, sid)) == {"cart": ["apple", "pear"], "prefs": {"a": [1]}}
    # Reading every value and changing none writes nothing.
    recording.calls.clear()
    session = await reopen(store, sid)
    assert dict(session) == {"cart": ["apple", "pear"], "prefs": {"a": [1]}}
    assert await store.commit(session) is None
    assert recording.writes() == []


async def test_setting_a_key_in_a_nested_dict_persists(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, prefs={"ui": {"theme": "light"}, "lang": "en"})
    session = await reopen(store, sid)
    session["prefs"]["ui"]["theme"] = "dark"
    del session["prefs"]["lang"]
    await store.commit(session)
    assert dict(await reopen(store, sid)) == {"prefs": {"ui": {"theme": "dark"}}}


async def test_a_value_changed_after_assignment_persists(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    session = await store.load([])
    cart: list[str] = []
    session["cart"] = cart
    cart.append("apple")
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    assert dict(await reopen(store, change.session_id)) == {"cart": ["apple"]}


async def test_only_the_keys_changed_in_place_are_merged(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, cart=[], count=0, note="x")
    first, second = await reopen(store, sid), await reopen(store, sid)
    first["cart"].append("apple")
    assert first["note"] == "x"  # read, not changed: not written back
    second["count"] = 1
    second["note"] = "y"
    await store.commit(second)
    await store.commit(first)
    assert dict(await reopen(store, sid)) == {"cart": ["apple"], "count": 1, "note": "y"}


async def test_a_change_in_place_into_a_non_json_value_is_refused_at_commit(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, cart=[])
    session = await reopen(store, sid)
    session["cart"].append({1, 2})
    with pytest.raises(ValueNotSerializableError, match="cart"):
        await store.commit(session)
    assert dict(await reopen(store, sid)) == {"cart": []}


# -- through the middleware, as a Starlette app writes it ------------------------------------


async def add(request: Request) -> Response:
    request.session.setdefault("cart", []).append(await request.json())
    return PlainTextResponse("ok")


async def show(request: Request) -> Response:
    return JSONResponse(dict(request.session))


async def test_a_starlette_cart_appended_in_place_keeps_every_item(
    driver: Any, clock: FakeClock
) -> None:
    app = Starlette(
        routes=[Route("/", show), Route("/add", add, methods=["POST"])],
        middleware=[Middleware(SessionMiddleware, driver=driver, clock=clock)],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        for item in ("apple", "pear", "plum"):
            assert (await http.post("/add", json=item)).status_code == 200
        assert (await http.get("/")).json() == {"cart": ["apple", "pear", "plum"]}
