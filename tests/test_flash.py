"""Flash messages through `SessionMiddleware`, on every backend, with Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.testclient import TestClient

from sqlsession import (
    ConfigError,
    InvalidKeyError,
    SessionDriverConfig,
    SessionTooLargeError,
    ValueNotSerializableError,
    session_drivers,
)
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.web import Flash, Session, SessionMiddleware, SessionStore, get_session
from tests.conftest import DriverFactory, FakeClock
from tests.test_json_counts import JSONCounter, TextDriver, json_counter

__all__ = ["json_counter"]  # the fixture, imported to be used here

BASE = "https://testserver"


@pytest.fixture
def driver_config(backend: str, request: pytest.FixtureRequest) -> SessionDriverConfig:
    """A config of the parametrised backend: the middleware loads it on the client's loop."""
    if backend == "memory":
        return session_drivers.memory()
    return session_drivers.sql(url=request.getfixturevalue(f"{backend}_url"))


class Counting:
    """Forwards to a real driver and records the storage calls (no mock storage)."""

    def __init__(self, driver: Any) -> None:
        self.inner = driver
        self.calls: list[str] = []

    async def get_item(self, key: str) -> Any:
        self.calls.append("get_item")
        return await self.inner.get_item(key)

    async def set_item(self, key: str, value: Any, *, ttl: Any = None) -> None:
        self.calls.append("set_item")
        await self.inner.set_item(key, value, ttl=ttl)

    async def remove_item(self, key: str) -> None:
        self.calls.append("remove_item")
        await self.inner.remove_item(key)

    async def touch(self, key: str, ttl: Any = None) -> bool:
        self.calls.append("touch")
        result: bool = await self.inner.touch(key, ttl)
        return result

    async def merge_existing(
        self, key: str, set: Any = None, delete: Any = (), *, ttl: Any = None
    ) -> Any:
        self.calls.append("merge_existing")
        return await self.inner.merge_existing(key, set=set, delete=delete, ttl=ttl)

    # The JSON-text capability the session layer uses when the driver has it.
    async def get_text(self, key: str) -> str | None:
        self.calls.append("get_text")
        result: str | None = await self.inner.get_text(key)
        return result

    async def set_text(self, key: str, text: str, *, ttl: Any = None) -> None:
        self.calls.append("set_text")
        await self.inner.set_text(key, text, ttl=ttl)

    async def merge_existing_text(
        self, key: str, set: Any = None, delete: Any = (), *, ttl: Any = None
    ) -> bool:
        self.calls.append("merge_existing_text")
        result: bool = await self.inner.merge_existing_text(key, set=set, delete=delete, ttl=ttl)
        return result

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


def flashes_json(session: Session, category: str | None = None) -> list[list[Any]]:
    return [[f.message, f.category] for f in session.pop_flashes(category)]


async def add(request: Request) -> Response:
    session = get_session(request)
    session["cart"] = [*session.get("cart", []), request.path_params["item"]]
    session.flash(f"Added {request.path_params['item']}.", "success")
    return RedirectResponse("/", status_code=303)


async def page(request: Request) -> Response:
    session = get_session(request)
    return JSONResponse({"flashes": flashes_json(session), "cart": session.get("cart", [])})


async def flash(request: Request) -> Response:
    body = await request.json()
    get_session(request).flash(body["message"], body.get("category", "info"))
    return PlainTextResponse("ok")


async def quiet(request: Request) -> Response:
    return JSONResponse(dict(request.session))


async def pop_category(request: Request) -> Response:
    return JSONResponse(flashes_json(get_session(request), request.path_params["category"]))


async def sign_out(request: Request) -> Response:
    session = get_session(request)
    session.flash("before the sign-out")
    session.clear()
    session.flash("Signed out.")
    return RedirectResponse("/", status_code=303)


ROUTES: list[BaseRoute] = [
    Route("/", page),
    Route("/add/{item}", add, methods=["POST"]),
    Route("/flash", flash, methods=["POST"]),
    Route("/quiet", quiet),
    Route("/pop/{category}", pop_category),
    Route("/sign-out", sign_out, methods=["POST"]),
]


def make_app(driver: Any, **options: Any) -> Starlette:
    return Starlette(
        routes=ROUTES, middleware=[Middleware(SessionMiddleware, driver=driver, **options)]
    )


@pytest.fixture
def http(driver_config: SessionDriverConfig) -> Iterator[TestClient]:
    with TestClient(make_app(driver_config), base_url=BASE) as client:
        yield client


def test_a_flash_survives_the_redirect_and_is_gone_after(http: TestClient) -> None:
    response = http.post("/add/tea")  # 303, followed
    assert response.history[0].status_code == 303
    assert response.json() == {"flashes": [["Added tea.", "success"]], "cart": ["tea"]}
    assert http.get("/").json() == {"flashes": [], "cart": ["tea"]}


def test_flashes_are_kept_until_read_in_order(http: TestClient) -> None:
    http.post("/flash", json={"message": "one"})
    http.post("/flash", json={"message": {"text": "two", "n": 2}, "category": "error"})
    http.post("/flash", json={"message": "three", "category": "info"})
    # Pages that do not read them leave them alone, and do not show them as keys.
    assert http.get("/quiet").json() == {}
    assert http.get("/quiet").json() == {}
    assert http.get("/").json()["flashes"] == [
        ["one", "info"],
        [{"text": "two", "n": 2}, "error"],
        ["three", "info"],
    ]
    assert http.get("/").json()["flashes"] == []


def test_popping_one_category_keeps_the_others(http: TestClient) -> None:
    http.post("/flash", json={"message": "a", "category": "info"})
    http.post("/flash", json={"message": "b", "category": "error"})
    http.post("/flash", json={"message": "c", "category": "info"})
    assert http.get("/pop/error").json() == [["b", "error"]]
    assert http.get("/pop/error").json() == []
    assert http.get("/").json()["flashes"] == [["a", "info"], ["c", "info"]]


def test_clear_drops_earlier_flashes_but_keeps_later_ones(http: TestClient) -> None:
    http.post("/add/tea")
    response = http.post("/sign-out")
    assert response.json() == {"flashes": [["Signed out.", "info"]], "cart": []}


def test_pop_flashes_returns_flash_tuples() -> None:
    session = Session()
    session.flash("saved")
    session.flash(3, category="count")
    popped = session.pop_flashes()
    assert popped == [Flash("saved", "info"), Flash(3, "count")]
    assert popped[0].message == "saved"
    assert popped[1].category == "count"
    assert session.pop_flashes() == []


def test_reserved_keys_are_hidden_and_refused() -> None:
    session = Session()
    session["cart"] = ["tea"]
    session.flash("secret message")
    token = session.csrf_token()
    assert dict(session) == {"cart": ["tea"]}
    assert list(session) == ["cart"]
    assert len(session) == 1
    assert "sqlsession.flashes" not in session
    assert "sqlsession.csrf" not in session
    with pytest.raises(KeyError):
        session["sqlsession.csrf"]
    assert session.get("sqlsession.flashes") is None
    assert "secret message" not in repr(session)
    assert token not in repr(session)
    assert repr(session) == "<Session keys=['cart']>"
    with pytest.raises(InvalidKeyError, match="kept by sqlsession"):
        session["sqlsession.flashes"] = []
    with pytest.raises(InvalidKeyError, match="kept by sqlsession"):
        session.set("sqlsession.csrf", "mine")
    with pytest.raises(InvalidKeyError, match="kept by sqlsession"):
        del session["sqlsession.csrf"]
    with pytest.raises(InvalidKeyError, match="kept by sqlsession"):
        session.update({"sqlsession.anything": 1})
    # Nothing was changed by the refusals.
    assert session.check_csrf_token(token)
    assert session.pop_flashes() == [Flash("secret message", "info")]


def test_an_identity_key_cannot_be_reserved() -> None:
    with pytest.raises(ConfigError, match="keeps for its own keys"):
        SessionStore(MemoryDriver(), identity_key="sqlsession.user")


def test_bad_flashes_are_refused_and_change_nothing() -> None:
    session = Session()
    with pytest.raises(ValueNotSerializableError):
        session.flash({1, 2})
    with pytest.raises(TypeError, match="category must be a str"):
        session.flash("x", category=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="category must be a str"):
        session.pop_flashes(category=b"info")  # type: ignore[arg-type]
    assert not session.modified
    assert session.session_id is None
    limited = Session()
    limited._state.policy = type(limited._state.policy)(max_size=40)
    limited.flash("short")
    with pytest.raises(SessionTooLargeError):
        limited.flash("x" * 100)
    assert limited.pop_flashes() == [Flash("short", "info")]


@pytest.fixture
async def counting(make_driver: DriverFactory) -> Counting:
    return Counting(await make_driver())


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def test_flashes_cost_no_storage_round_trip(counting: Counting, clock: FakeClock) -> None:
    async def set_only(request: Request) -> Response:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse("ok")

    async def set_and_flash(request: Request) -> Response:
        request.session["n"] = request.session.get("n", 0) + 1
        get_session(request).flash("counted")
        get_session(request).flash("twice", "info")
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[*ROUTES, Route("/set", set_only), Route("/set-flash", set_and_flash)],
        middleware=[Middleware(SessionMiddleware, driver=counting, clock=clock)],
    )
    async with _client(app) as http:
        # A visitor without a cookie whose page pops flashes: nothing read or written.
        assert (await http.get("/")).json()["flashes"] == []
        assert counting.take() == []
        assert "set-cookie" not in (await http.get("/")).headers
        counting.take()
        await http.get("/set")
        counting.take()
        await http.get("/set")
        plain = counting.take()
        await http.get("/set-flash")
        assert counting.take() == plain == ["get_text", "merge_existing_text"]
        # Showing them is one write; a page with none to show writes nothing.
        assert len((await http.get("/")).json()["flashes"]) == 2
        assert counting.take() == ["get_text", "merge_existing_text"]
        assert (await http.get("/")).json()["flashes"] == []
        assert counting.take() == ["get_text"]
        assert (await http.get("/pop/info")).json() == []
        assert counting.take() == ["get_text"]


async def test_flashes_and_tokens_decode_and_encode_once(
    driver: Any, clock: FakeClock, json_counter: JSONCounter
) -> None:
    """On the JSON-once path: a flash costs one encode, showing it none, a check nothing."""

    async def start(request: Request) -> Response:
        request.session["n"] = 1
        return PlainTextResponse("ok")

    async def flash_one(request: Request) -> Response:
        get_session(request).flash("saved")
        return PlainTextResponse("ok")

    async def token_route(request: Request) -> Response:
        return PlainTextResponse(get_session(request).csrf_token())

    async def check(request: Request) -> Response:
        session = get_session(request)
        return PlainTextResponse(str(session.check_csrf_token(request.headers["x-token"])))

    wrapped = TextDriver(driver)
    app = Starlette(
        routes=[
            *ROUTES,
            Route("/start", start, methods=["POST"]),
            Route("/flash-one", flash_one, methods=["POST"]),
            Route("/token", token_route),
            Route("/check", check),
        ],
        middleware=[Middleware(SessionMiddleware, driver=wrapped, clock=clock)],
    )
    async with _client(app) as http:

        async def request(method: str, path: str, **kwargs: Any) -> tuple[int, int]:
            json_counter.clear()
            wrapped.writes.clear()
            assert (await http.request(method, path, **kwargs)).status_code == 200
            return json_counter.of("web")

        await request("POST", "/start")
        # Flashing: the row's one decode, the new list's one encode, one merge.
        assert await request("POST", "/flash-one") == (1, 1)
        assert wrapped.writes == ["merge_existing_text"]
        # Showing it: nothing encoded, the key deleted in one merge.
        assert await request("GET", "/") == (1, 0)
        assert wrapped.writes == ["merge_existing_text"]
        # Nothing to show: nothing written.
        assert await request("GET", "/") == (1, 0)
        assert wrapped.writes == []
        # The first token: one encode (the secret) and one merge; later ones, and
        # checks, read the secret the row's decode made, and write nothing.
        token_text = (await http.get("/token")).text
        assert await request("GET", "/token") == (1, 0)
        assert wrapped.writes == []
        assert await request("GET", "/check", headers={"x-token": token_text}) == (1, 0)
        assert wrapped.writes == []
