"""JSON once: how many times a request encodes and decodes, per kind of request, per backend.

Every JSON encode and decode sqlsession does goes through `sqlsession._codec` (the drivers
too), so the counter wraps its entry points, and ``json.dumps``/``json.loads`` in case
something calls them directly. Calls are told apart by the module that made them: the
session layer (``sqlsession.web``) or the driver (``sqlsession.drivers``). The counts are
taken through the ASGI middleware, over real requests.

Per request, on a `SupportsJSONText` driver (all the built-in ones):

- untouched (the app never reads the session): 1 decode, the row, needed before the app
  runs for the lifetime and user-binding checks; 0 encodes.
- read (scalar values): 1 decode.
- read of a list or dict: 1 decode, and 2 encodes to find changes made in place (one
  when it is handed out, one at commit).
- changed (a scalar assigned): 1 decode + 1 encode; the memory driver's merge adds 1 + 1
  the first time it merges a key, nothing after.
- a new session: 1 encode per value assigned (+1 per list or dict, at commit, for
  changes made in place after the assignment), nothing decoded.
- regenerate: 1 decode + 1 encode (the values the request did not touch, together).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sqlsession import _codec
from sqlsession.web import SessionMiddleware, get_session
from tests.conftest import FakeClock

_ENCODES = ("encode", "encode_trusted", "encode_changed", "encodes_to")
_DECODES = ("decode",)


class JSONCounter:
    """Counts encodes and decodes by who asked: ``web`` (the session layer) or ``driver``."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def clear(self) -> None:
        self.counts.clear()

    def wrap(self, kind: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            # _codec's own calls (encode_changed refusing a value calls encode) are part
            # of the call being counted already.
            if caller != "sqlsession._codec":
                self.counts[(self._layer(caller), kind)] += 1
            return function(*args, **kwargs)

        return counted

    @staticmethod
    def _layer(module: str) -> str:
        if module.startswith("sqlsession.drivers"):
            return "driver"
        if module.startswith("sqlsession.web"):
            return "web"
        return module  # anything else shows up by name, and fails the assertions

    def of(self, layer: str) -> tuple[int, int]:
        """(decodes, encodes) made by `layer`."""
        return self.counts[(layer, "decode")], self.counts[(layer, "encode")]

    def total(self) -> tuple[int, int]:
        decodes = sum(n for (_, kind), n in self.counts.items() if kind == "decode")
        encodes = sum(n for (_, kind), n in self.counts.items() if kind == "encode")
        return decodes, encodes


@pytest.fixture
def json_counter(monkeypatch: pytest.MonkeyPatch) -> JSONCounter:
    counter = JSONCounter()
    for name in _ENCODES:
        monkeypatch.setattr(_codec, name, counter.wrap("encode", getattr(_codec, name)))
    for name in _DECODES:
        monkeypatch.setattr(_codec, name, counter.wrap("decode", getattr(_codec, name)))
    monkeypatch.setattr(json, "dumps", counter.wrap("encode", json.dumps))
    monkeypatch.setattr(json, "loads", counter.wrap("decode", json.loads))
    return counter


class Writes:
    """Forwards to a real driver, recording the writes (no mock storage)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name in {"set_item", "set_text", "merge_existing_text", "remove_item", "merge_item"}:

            async def write(*args: Any, **kwargs: Any) -> Any:
                self.writes.append(name)
                return await attribute(*args, **kwargs)

            return write
        return attribute


# Spelled out, so the driver capabilities are found by isinstance (no __getattr__ magic).
class TextDriver(Writes):
    async def get_item(self, key: str) -> Any:
        return await self.inner.get_item(key)

    async def set_item(self, key: str, value: Any, **kwargs: Any) -> None:
        self.writes.append("set_item")
        await self.inner.set_item(key, value, **kwargs)

    async def remove_item(self, key: str) -> None:
        self.writes.append("remove_item")
        await self.inner.remove_item(key)

    async def touch(self, key: str, ttl: Any = None) -> bool:
        result: bool = await self.inner.touch(key, ttl)
        return result

    async def merge_existing(self, key: str, *args: Any, **kwargs: Any) -> Any:
        self.writes.append("merge_existing")
        return await self.inner.merge_existing(key, *args, **kwargs)

    async def merge_item(self, key: str, *args: Any, **kwargs: Any) -> Any:
        self.writes.append("merge_item")
        return await self.inner.merge_item(key, *args, **kwargs)

    async def get_text(self, key: str) -> str | None:
        result: str | None = await self.inner.get_text(key)
        return result

    async def set_text(self, key: str, text: str, **kwargs: Any) -> None:
        self.writes.append("set_text")
        await self.inner.set_text(key, text, **kwargs)

    async def merge_existing_text(self, key: str, *args: Any, **kwargs: Any) -> bool:
        self.writes.append("merge_existing_text")
        result: bool = await self.inner.merge_existing_text(key, *args, **kwargs)
        return result


async def untouched(request: Request) -> Response:
    return PlainTextResponse("hello")


async def read(request: Request) -> Response:
    return PlainTextResponse(str(request.session["n"]))


async def read_cart(request: Request) -> Response:
    return PlainTextResponse(str(len(request.session["cart"])))


async def change(request: Request) -> Response:
    request.session["n"] = int(request.query_params["n"])
    return PlainTextResponse("ok")


async def append(request: Request) -> Response:
    request.session["cart"].append("pear")
    return PlainTextResponse("ok")


async def start(request: Request) -> Response:
    request.session.update({"n": 1, "cart": ["apple"], "prefs": {"theme": "dark"}})
    return PlainTextResponse("ok")


async def regenerate(request: Request) -> Response:
    get_session(request).regenerate()
    return PlainTextResponse("ok")


def make_app(driver: Any, clock: FakeClock) -> Starlette:
    routes = [
        Route("/untouched", untouched),
        Route("/read", read),
        Route("/read-cart", read_cart),
        Route("/change", change, methods=["POST"]),
        Route("/append", append, methods=["POST"]),
        Route("/start", start, methods=["POST"]),
        Route("/regenerate", regenerate, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(SessionMiddleware, driver=driver, clock=clock)],
    )


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver")


async def test_json_once_per_request_kind(
    driver: Any, backend: str, clock: FakeClock, json_counter: JSONCounter
) -> None:
    wrapped = TextDriver(driver)
    async with client(make_app(wrapped, clock)) as http:

        async def request(method: str, path: str) -> tuple[tuple[int, int], tuple[int, int]]:
            json_counter.clear()
            wrapped.writes.clear()
            response = await http.request(method, path)
            assert response.status_code == 200
            unexpected = {k for k in json_counter.counts if k[0] not in ("web", "driver")}
            assert not unexpected, unexpected
            return json_counter.of("web"), json_counter.of("driver")

        # A new session: one encode per value assigned, and one more per list or dict at
        # commit (a change made to it after the assignment is saved too); nothing
        # decoded, not even by the driver (the row is assembled from those texts).
        web, store = await request("POST", "/start")
        assert (web, store) == ((0, 3 + 2), (0, 0))
        assert wrapped.writes == ["set_text"]

        # Untouched: the row is decoded once (lifetime and user checks run before the
        # app); nothing is encoded or written.
        assert await request("GET", "/untouched") == ((1, 0), (0, 0))
        assert wrapped.writes == []

        # A read of a scalar: the same single decode.
        assert await request("GET", "/read") == ((1, 0), (0, 0))
        assert wrapped.writes == []

        # A read of a list: its text is kept to find changes made in place, and compared
        # at commit. PostgreSQL and MariaDB return the row formatted their own way: the
        # comparison is with our own encoding, so still no write.
        assert await request("GET", "/read-cart") == ((1, 2), (0, 0))
        assert wrapped.writes == []

        # A change: one decode, one encode in the session layer, one merge.
        web, store = await request("POST", "/change?n=2")
        assert web == (1, 1)
        assert wrapped.writes == ["merge_existing_text"]
        if backend == "memory":
            assert store == (1, 1)  # the stored row, to splice the new texts in

        # The next change of the same key: the memory driver splices it in where it put
        # it last time, decoding and encoding nothing.
        web, store = await request("POST", "/change?n=3")
        assert web == (1, 1)
        assert wrapped.writes == ["merge_existing_text"]
        if backend == "memory":
            assert store == (0, 0)
        web, store = await request("POST", "/change?n=2")
        assert web == (1, 1)

        # Writing the value that is already stored writes nothing (and encodes it once).
        web, store = await request("POST", "/change?n=2")
        assert (web, store) == ((1, 2), (0, 0))
        assert wrapped.writes == []

        # A change made in place.
        web, store = await request("POST", "/append")
        assert web == (1, 2)
        assert wrapped.writes == ["merge_existing_text"]

        # Regenerate: the values nobody touched are encoded together, once.
        web, store = await request("POST", "/regenerate")
        assert (web, store) == ((1, 1), (0, 0))
        assert sorted(wrapped.writes) == ["remove_item", "set_text"]

        # Everything persisted as written.
        assert (await http.get("/read")).text == "2"
        assert (await http.get("/read-cart")).text == "2"


def test_the_counter_sees_the_codec(json_counter: JSONCounter) -> None:
    # The counter itself: a broken wrapper would make every count above pass as zero.
    _codec.decode(_codec.encode("k", [1]))
    json.loads(json.dumps(1))
    assert json_counter.total() == (2, 2)


async def test_the_memory_driver_splices_merges_exactly(json_counter: JSONCounter) -> None:
    # A model dict against a long, seeded series of merges that set, replace and delete
    # members, some spliced in before and some not, with set_text and touch in between.
    import random

    from sqlsession.drivers.memory import MemoryDriver

    rng = random.Random(13)
    driver = MemoryDriver()
    model: dict[str, Any] = {"created": 1, "seen": 1, "k:a": {"v": [1]}}
    await driver.set_text("s", _codec.encode("s", model))
    names = ["seen", "k:a", "k:b", "k:c", 'k:"q"', "k:\u00e9\n"]
    for step in range(400):
        if step % 97 == 96:
            await driver.set_text("s", _codec.encode("s", model))  # a whole write in between
        if step % 53 == 52:
            assert await driver.touch("s", None)
        changes = {n: {"v": rng.randrange(1000)} for n in rng.sample(names, rng.randrange(3))}
        delete = [n for n in rng.sample(names, rng.randrange(2)) if n not in changes]
        texts = {n: _codec.encode("s", v) for n, v in changes.items()}
        assert await driver.merge_existing_text("s", set=texts, delete=delete)
        for name in delete:
            model.pop(name, None)
        model.update(changes)
        stored = await driver.get_text("s")
        assert stored is not None
        assert json.loads(stored) == model
    # Merging the same names again costs the driver nothing.
    assert await driver.merge_existing_text("s", set={"seen": "1"}, delete=["k:c"])
    json_counter.clear()
    assert await driver.merge_existing_text("s", set={"seen": "2"}, delete=["k:c"])
    assert json_counter.of("driver") == (0, 0)
