"""What a session accepts is decided at assignment: its size, its keys, its values' depth.

An assignment the commit would refuse is refused at once, with our own error, so the app
can answer it (413 for a session too large); the commit never turns it into a 500.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sqlsession import InvalidKeyError, SessionTooLargeError, ValueNotSerializableError
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.web import DEFAULT_MAX_SIZE, SessionMiddleware, SessionStore
from sqlsession.web._row import VALUE_MAX_DEPTH
from tests.conftest import FakeClock
from tests.test_session import reopen, start


def example_app(**options: Any) -> Any:
    """The example app of ``examples/app.py``, loaded from its file as the e2e tests run it."""
    path = Path(__file__).resolve().parent.parent / "examples" / "app.py"
    spec = importlib.util.spec_from_file_location("sqlsession_example_app", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.create_app(**options)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# -- max_size ----------------------------------------------------------------------------------


async def test_an_assignment_past_max_size_is_refused_and_changes_nothing(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_size=100)
    sid = await start(store, a="x")  # 1 + 3 bytes
    session = await reopen(store, sid)
    # Bytes of UTF-8, key names included: "k" and '"' + 46 x "é" + '"' make 1 + 94.
    session["k"] = "é" * 46
    assert dict(session) == {"a": "x", "k": "é" * 46}  # 99 bytes: within the limit
    with pytest.raises(SessionTooLargeError, match=r"'k'.* 101 bytes.* max_size of 100") as caught:
        session["k"] = "é" * 47
    assert isinstance(caught.value, ValueError)
    assert "é" not in str(caught.value)  # never the value
    assert session["k"] == "é" * 46
    await store.commit(session)
    assert dict(await reopen(store, sid)) == {"a": "x", "k": "é" * 46}


async def test_the_default_max_size_refuses_a_megabyte_and_none_turns_it_off(
    driver: Any, clock: FakeClock
) -> None:
    assert DEFAULT_MAX_SIZE == 256 * 1024
    store = SessionStore(driver, clock=clock)
    session = await store.load([])
    with pytest.raises(SessionTooLargeError):
        session["form"] = "x" * 1_000_000
    assert dict(session) == {}
    unlimited = SessionStore(driver, clock=clock, max_size=None)
    sid = await start(unlimited, form="x" * 1_000_000)
    assert (await reopen(unlimited, sid))["form"] == "x" * 1_000_000


async def test_a_session_grown_past_max_size_in_place_is_a_413_and_not_saved(
    driver: Any, clock: FakeClock
) -> None:
    async def grow(request: Request) -> Response:
        request.session.setdefault("log", []).append("x" * 400)
        return PlainTextResponse("ok")

    async def show(request: Request) -> Response:
        return JSONResponse(dict(request.session))

    app = Starlette(
        routes=[Route("/", show), Route("/grow", grow, methods=["POST"])],
        middleware=[Middleware(SessionMiddleware, driver=driver, clock=clock, max_size=1000)],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        assert (await http.post("/grow")).status_code == 200
        assert (await http.post("/grow")).status_code == 200
        response = await http.post("/grow")
        assert response.status_code == 413
        assert response.headers.get_list("set-cookie") == []
        assert [len(x) for x in (await http.get("/")).json()["log"]] == [400, 400]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_size_must_be_a_positive_int(bad: Any) -> None:
    from sqlsession import ConfigError

    with pytest.raises(ConfigError, match="max_size"):
        SessionStore(MemoryDriver(), max_size=bad)


async def test_the_example_app_caps_what_it_stores(clock: FakeClock) -> None:
    driver = MemoryDriver(clock=clock)
    app = example_app(driver=driver, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        response = await http.post("/cart", data={"item": "x" * 1_000_000})
        assert response.status_code == 413
        response = await http.post("/signin", data={"name": "x" * 1_000_000})
        assert response.status_code == 413
        assert (await http.get("/state")).json() == {}
        for n in range(60):
            await http.post("/cart", data={"item": f"item {n}"})
        cart = (await http.get("/state")).json()["cart"]
        assert cart == [f"item {n}" for n in range(50)]


# -- assignment checks what commit checks --------------------------------------------------------


async def test_a_key_with_a_lone_surrogate_is_refused_at_assignment(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock)
    session = await store.load([])
    session["ok"] = 1
    with pytest.raises(InvalidKeyError, match="surrogate"):
        session["bad\udc80"] = 1
    assert dict(session) == {"ok": 1}
    change = await store.commit(session)  # the rest of the request is saved
    assert change is not None
    assert change.session_id is not None
    assert dict(await reopen(store, change.session_id)) == {"ok": 1}


async def test_values_nested_too_deep_for_the_row_are_refused_at_assignment(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock)
    session = await store.load([])
    for depth in (VALUE_MAX_DEPTH + 1, 970):
        with pytest.raises(ValueNotSerializableError, match=f"more than {VALUE_MAX_DEPTH} levels"):
            session["deep"] = nested(depth)
    session["deep"] = nested(VALUE_MAX_DEPTH)  # the deepest accepted is stored and read back
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    session = await reopen(store, change.session_id)
    assert session["deep"] == nested(VALUE_MAX_DEPTH)
    session["other"] = 1  # and merged into the row on a later request
    await store.commit(session)
    assert (await reopen(store, change.session_id))["other"] == 1
