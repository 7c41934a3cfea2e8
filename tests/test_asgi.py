"""`SessionMiddleware` in a Starlette app, driven in process with httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from sqlsession import ConfigError, InvalidTTLError, SessionError, session_drivers
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.web import Session, SessionMiddleware, get_session
from sqlsession.web.asgi import Receive, Scope, Send
from tests.conftest import FakeClock
from tests.test_session import Recording, storage_key

Handler = Callable[[Request], Awaitable[Response]]


async def show(request: Request) -> Response:
    return JSONResponse(dict(request.session))


async def put(request: Request) -> Response:
    get_session(request).set(
        request.path_params["key"],
        await request.json(),
        ttl=float(request.query_params["ttl"]) if "ttl" in request.query_params else None,
    )
    return PlainTextResponse("ok")


async def remove(request: Request) -> Response:
    del request.session[request.path_params["key"]]
    return PlainTextResponse("ok")


async def regenerate(request: Request) -> Response:
    get_session(request).regenerate()
    return PlainTextResponse("ok")


async def destroy(request: Request) -> Response:
    get_session(request).destroy()
    return PlainTextResponse("ok")


async def boom(request: Request) -> Response:
    request.session["x"] = 1
    raise RuntimeError("the app failed")


async def noop_app(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app that is never called (the middleware's options are refused first)."""


def make_app(driver: Any, extra: list[BaseRoute] | None = None, **options: Any) -> Starlette:
    routes = [
        Route("/", show),
        Route("/put/{key}", put, methods=["POST"]),
        Route("/del/{key}", remove, methods=["POST"]),
        Route("/regenerate", regenerate, methods=["POST"]),
        Route("/destroy", destroy, methods=["POST"]),
        Route("/boom", boom),
        *(extra or []),
    ]
    return Starlette(
        routes=routes, middleware=[Middleware(SessionMiddleware, driver=driver, **options)]
    )


@pytest.fixture
async def memory(clock: FakeClock) -> AsyncIterator[MemoryDriver]:
    async with MemoryDriver(clock=clock) as driver:
        yield driver


def client(app: Any, *, https: bool = True) -> httpx.AsyncClient:
    base = "https://testserver" if https else "http://testserver"
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


# -- Starlette compatibility and cookie attributes ------------------------------------------


async def test_request_session_round_trip_with_secure_defaults(
    memory: MemoryDriver, clock: FakeClock
) -> None:
    app = make_app(memory, clock=clock)
    async with client(app) as http:
        assert (await http.get("/")).json() == {}
        response = await http.post("/put/user", json="ada")
        [header] = set_cookies(response)
        name_value, *attributes = header.split("; ")
        assert name_value.startswith("__Host-session=")
        assert sorted(attributes) == sorted(
            ["Max-Age=1209600", "Path=/", "HttpOnly", "SameSite=Lax", "Secure"]
        )
        assert (await http.get("/")).json() == {"user": "ada"}
        sid = name_value.removeprefix("__Host-session=")
        assert await memory.get_item(storage_key(sid)) is not None


async def test_cookie_options(memory: MemoryDriver, clock: FakeClock) -> None:
    app = make_app(
        memory,
        clock=clock,
        session_cookie="sid",
        max_age=None,
        path="/app",
        same_site="strict",
        https_only=False,
        domain="example.test",
    )
    async with client(app, https=False) as http:
        [header] = set_cookies(await http.post("/put/a", json=1))
    name_value, *attributes = header.split("; ")
    assert name_value.startswith("sid=")
    assert sorted(attributes) == sorted(
        ["Path=/app", "Domain=example.test", "HttpOnly", "SameSite=Strict"]
    )


@pytest.mark.parametrize("name", ["", "a b", "a;b", "a=b", "sess\u00e9", "a,b", 'a"', "a\tb"])
def test_cookie_name_must_be_an_rfc6265_token(memory: MemoryDriver, name: str) -> None:
    with pytest.raises(ConfigError, match="RFC 6265"):
        SessionMiddleware(noop_app, driver=memory, session_cookie=name)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("__Host-sid", {"https_only": False}),
        ("__Host-sid", {"path": "/app"}),
        ("__host-sid", {"domain": "example.test"}),
        ("__Secure-sid", {"https_only": False}),
        ("__SECURE-sid", {"https_only": False}),
    ],
)
def test_cookie_prefix_rules_are_enforced(
    memory: MemoryDriver, name: str, options: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError, match=f"A cookie named '{name}' needs https_only=True"):
        SessionMiddleware(noop_app, driver=memory, session_cookie=name, **options)


async def test_prefixed_cookie_names_that_follow_the_rules(
    memory: MemoryDriver, clock: FakeClock
) -> None:
    named: list[tuple[str, dict[str, Any]]] = [
        ("__Host-sid", {}),
        ("__Secure-sid", {"same_site": "strict"}),
    ]
    for name, options in named:
        app = make_app(memory, clock=clock, session_cookie=name, **options)
        async with client(app) as http:
            [header] = set_cookies(await http.post("/put/a", json=1))
            assert header.startswith(f"{name}=")
            assert "; Secure" in header
            assert (await http.get("/")).json() == {"a": 1}


def test_invalid_options_are_refused_at_construction(memory: MemoryDriver) -> None:
    with pytest.raises(ConfigError, match="Secure"):
        SessionMiddleware(noop_app, driver=memory, same_site="none", https_only=False)
    with pytest.raises(ConfigError, match="same_site"):
        SessionMiddleware(noop_app, driver=memory, same_site="sometimes")
    with pytest.raises(ConfigError, match="path"):
        SessionMiddleware(noop_app, driver=memory, path="/a; Domain=evil.test")
    with pytest.raises(InvalidTTLError, match="idle_timeout"):
        SessionMiddleware(noop_app, driver=memory, idle_timeout=0)
    with pytest.raises(TypeError, match="SessionDriverConfig"):
        SessionMiddleware(noop_app, driver="sqlite:///x.db")


# -- what is read and written ---------------------------------------------------------------


async def test_no_cookie_no_storage_access(memory: MemoryDriver, clock: FakeClock) -> None:
    recording = Recording(memory)
    app = make_app(recording, clock=clock)
    async with client(app) as http:
        response = await http.get("/")
    assert response.json() == {}
    assert set_cookies(response) == []
    assert recording.calls == []


async def test_unchanged_session_is_not_written_and_no_cookie_is_resent(
    memory: MemoryDriver, clock: FakeClock
) -> None:
    recording = Recording(memory)
    app = make_app(recording, clock=clock)
    async with client(app) as http:
        await http.post("/put/a", json=1)
        recording.calls.clear()
        response = await http.get("/")
    assert response.json() == {"a": 1}
    assert set_cookies(response) == []
    assert recording.calls == ["get_item"]


# -- caches: Vary: Cookie --------------------------------------------------------------------


async def untouched(request: Request) -> Response:
    return PlainTextResponse("static")


async def show_varying(request: Request) -> Response:
    vary = request.query_params["vary"]
    return JSONResponse(dict(request.session), headers={"vary": vary})


async def test_vary_cookie_exactly_when_the_response_depends_on_the_session(
    memory: MemoryDriver, clock: FakeClock
) -> None:
    extra: list[BaseRoute] = [Route("/static", untouched), Route("/varying", show_varying)]
    app = make_app(memory, clock=clock, extra=extra)
    async with client(app) as http:
        # Nothing read the session: the response is the same for everybody.
        assert "vary" not in (await http.get("/static")).headers
        # An empty session was read: a visitor with a cookie would see something else.
        assert (await http.get("/")).headers.get_list("vary") == ["Cookie"]
        response = await http.post("/put/a", json=1)
        assert set_cookies(response) != []
        assert response.headers.get_list("vary") == ["Cookie"]
        # A cookie alone does not make a response vary; reading the session does.
        assert "vary" not in (await http.get("/static")).headers
        assert (await http.get("/")).headers.get_list("vary") == ["Cookie"]
        # The app's own Vary is kept, and Cookie is not added twice.
        both = await http.get("/varying", params={"vary": "Accept-Encoding"})
        # Merged into the app's header: some middleware reads only the first Vary.
        assert both.headers.get_list("vary") == ["Accept-Encoding, Cookie"]
        for covered in ("accept, cookie", "*"):
            response = await http.get("/varying", params={"vary": covered})
            assert response.headers.get_list("vary") == [covered]
        # Ending the session changes the cookie, so that response varies too.
        response = await http.post("/destroy")
        assert response.headers.get_list("vary") == ["Cookie"]


READS: dict[str, Callable[[Session], object]] = {
    "get": lambda s: s.get("a"),
    "in": lambda s: "a" in s,
    "len": len,
    "bool": bool,
    "eq": lambda s: s == {},
    "keys": lambda s: list(s.keys()),
    "items": lambda s: list(s.items()),
    "pop": lambda s: s.pop("a", None),
    "setdefault": lambda s: s.setdefault("a", 1),
    "session_id": lambda s: s.session_id,
    "sign_out_everywhere": lambda s: s.sign_out_everywhere(),  # refused: not bound
}


@pytest.mark.parametrize("how", sorted(READS))
async def test_every_way_of_reading_the_session_adds_vary(
    memory: MemoryDriver, clock: FakeClock, how: str
) -> None:
    async def read(request: Request) -> Response:
        with contextlib.suppress(SessionError):
            READS[how](get_session(request))
        return PlainTextResponse("done")

    async def log_it(request: Request) -> Response:
        logging.getLogger("tests").info("session: %r", request.session)
        return PlainTextResponse("logged")

    app = make_app(memory, clock=clock, extra=[Route("/read", read), Route("/log", log_it)])
    async with client(app) as http:
        assert (await http.get("/read")).headers.get_list("vary") == ["Cookie"]
        assert "vary" not in (await http.get("/log")).headers  # a repr is not a read


async def test_delete_only_and_per_key_ttl(memory: MemoryDriver, clock: FakeClock) -> None:
    app = make_app(memory, clock=clock)
    async with client(app) as http:
        await http.post("/put/a", json=1)
        await http.post("/put/flash", json="hi", params={"ttl": "5"})
        assert (await http.get("/")).json() == {"a": 1, "flash": "hi"}
        await http.post("/del/a")
        assert (await http.get("/")).json() == {"flash": "hi"}
        clock.advance(5)
        assert (await http.get("/")).json() == {}


@pytest.mark.parametrize("cookie", ["garbage", "A" * 43, "A" * 42 + "="])
async def test_a_foreign_cookie_is_never_adopted(
    memory: MemoryDriver, clock: FakeClock, cookie: str
) -> None:
    app = make_app(memory, clock=clock)
    async with client(app) as http:
        response = await http.get("/", headers={"cookie": f"__Host-session={cookie}"})
        # Nothing stored under it: the browser is told to drop it.
        [header] = set_cookies(response)
        assert header.startswith("__Host-session=; Max-Age=0;")
        response = await http.post("/put/a", json=1, headers={"cookie": f"__Host-session={cookie}"})
    [header] = set_cookies(response)
    new_id = header.split(";")[0].removeprefix("__Host-session=")
    assert new_id != cookie
    assert len(new_id) == 43


async def test_regenerate_and_destroy_over_http(memory: MemoryDriver, clock: FakeClock) -> None:
    app = make_app(memory, clock=clock)
    async with client(app) as http:
        await http.post("/put/cart", json=[1])
        old = http.cookies["__Host-session"]
        await http.post("/regenerate")
        new = http.cookies["__Host-session"]
        assert new != old
        assert (await http.get("/")).json() == {"cart": [1]}
        assert await memory.get_item(storage_key(old)) is None
        response = await http.post("/destroy")
        assert set_cookies(response)[0].startswith("__Host-session=; Max-Age=0;")
        assert "__Host-session" not in http.cookies
        assert await memory.get_item(storage_key(new)) is None
        # Replaying the old cookies gets nothing.
        for replay in (old, new):
            response = await http.get("/", headers={"cookie": f"__Host-session={replay}"})
            assert response.json() == {}


async def test_idle_timeout_refresh_resends_the_cookie(
    memory: MemoryDriver, clock: FakeClock
) -> None:
    app = make_app(memory, clock=clock, max_age=None, idle_timeout=100)
    async with client(app) as http:
        [header] = set_cookies(await http.post("/put/a", json=1))
        assert "Max-Age=100" in header
        clock.advance(49)
        assert set_cookies(await http.get("/")) == []
        clock.advance(1)
        [header] = set_cookies(await http.get("/"))
        assert "Max-Age=100" in header
        clock.advance(99)
        assert (await http.get("/")).json() == {"a": 1}
        clock.advance(100)
        assert (await http.get("/")).json() == {}


async def test_max_age_ends_an_active_session(memory: MemoryDriver, clock: FakeClock) -> None:
    app = make_app(memory, clock=clock, max_age=60, idle_timeout=30)
    async with client(app) as http:
        await http.post("/put/a", json=0)
        for n in range(1, 6):
            clock.advance(10)
            await http.post("/put/a", json=n)
        clock.advance(9)
        assert (await http.get("/")).json() == {"a": 5}
        clock.advance(1)
        assert (await http.get("/")).json() == {}


# -- concurrency -------------------------------------------------------------------------------


async def test_concurrent_requests_changing_different_keys_both_persist(
    memory: MemoryDriver, clock: FakeClock
) -> None:
    arrived = 0
    both_loaded = asyncio.Event()

    async def slow_put(request: Request) -> Response:
        nonlocal arrived
        # Both requests have loaded the session before either changes it.
        arrived += 1
        if arrived == 2:
            both_loaded.set()
        await asyncio.wait_for(both_loaded.wait(), 5)
        request.session[request.path_params["key"]] = await request.json()
        return PlainTextResponse("ok")

    app = make_app(memory, [Route("/slow/{key}", slow_put, methods=["POST"])], clock=clock)
    async with client(app) as http:
        await http.post("/put/start", json=True)
        await asyncio.gather(http.post("/slow/count", json=1), http.post("/slow/cart", json=["x"]))
        assert (await http.get("/")).json() == {"start": True, "count": 1, "cart": ["x"]}


# -- driver failures ---------------------------------------------------------------------------


class Failing(MemoryDriver):
    """A real memory driver whose reads or writes can be made to fail."""

    fail_reads = False
    fail_writes = False

    async def get_item(self, key: str) -> Any:
        if self.fail_reads:
            raise OSError("database unreachable")
        return await super().get_item(key)

    async def merge_item(self, key: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.fail_writes:
            raise OSError("disk full")
        return await super().merge_item(key, *args, **kwargs)

    async def merge_existing(self, key: str, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        if self.fail_writes:
            raise OSError("disk full")
        return await super().merge_existing(key, *args, **kwargs)

    async def set_item(self, key: str, value: Any, *, ttl: Any = None) -> None:
        if self.fail_writes:
            raise OSError("disk full")
        await super().set_item(key, value, ttl=ttl)

    # The session layer reads and writes sessions as JSON text on this driver.
    async def get_text(self, key: str) -> str | None:
        if self.fail_reads:
            raise OSError("database unreachable")
        return await super().get_text(key)

    async def set_text(self, key: str, text: str, *, ttl: Any = None) -> None:
        if self.fail_writes:
            raise OSError("disk full")
        await super().set_text(key, text, ttl=ttl)

    async def merge_existing_text(self, key: str, *args: Any, **kwargs: Any) -> bool:
        if self.fail_writes:
            raise OSError("disk full")
        return await super().merge_existing_text(key, *args, **kwargs)


async def test_a_failed_load_is_a_logged_500(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    driver = Failing(clock=clock)
    app = make_app(driver, clock=clock)
    async with client(app) as http:
        await http.post("/put/a", json=1)
        driver.fail_reads = True
        with caplog.at_level(logging.ERROR, logger="sqlsession"):
            response = await asyncio.wait_for(http.get("/"), 5)
    assert response.status_code == 500
    assert "Loading the session failed" in caplog.text
    assert "database unreachable" in caplog.text


@pytest.mark.parametrize("path", ["/put/a", "/put/b"])
async def test_a_failed_commit_is_a_logged_500_not_a_success(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    driver = Failing(clock=clock)
    app = make_app(driver, clock=clock)
    async with client(app) as http:
        if path == "/put/b":  # an existing session (merge) rather than a new one (set)
            await http.post("/put/a", json=1)
        driver.fail_writes = True
        with caplog.at_level(logging.ERROR, logger="sqlsession"):
            response = await asyncio.wait_for(http.post(path, json=2), 5)
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert set_cookies(response) == []
    assert "Saving the session failed" in caplog.text


async def test_an_app_error_saves_nothing(memory: MemoryDriver, clock: FakeClock) -> None:
    recording = Recording(memory)
    app = make_app(recording, clock=clock)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    assert recording.writes() == []


async def test_streaming_response_commits_before_the_body(
    memory: MemoryDriver, clock: FakeClock
) -> None:
    async def stream(request: Request) -> Response:
        request.session["streamed"] = True

        async def body() -> AsyncIterator[bytes]:
            yield b"a"
            yield b"b"

        return StreamingResponse(body())

    app = make_app(memory, [Route("/stream", stream)], clock=clock)
    async with client(app) as http:
        response = await http.get("/stream")
        assert response.text == "ab"
        assert (await http.get("/")).json() == {"streamed": True}


# -- driver lifecycle ---------------------------------------------------------------------------


async def run_lifespan(app: Any) -> None:
    """One lifespan cycle, startup then shutdown, as a server runs it."""
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    await asyncio.wait_for(app(scope, receive, send), 5)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_a_config_driver_is_made_once_and_disposed_at_shutdown() -> None:
    middleware = SessionMiddleware(noop_app, driver=session_drivers.memory())
    app = Starlette(routes=[Route("/", show), Route("/put/{key}", put, methods=["POST"])])
    middleware.app = app
    async with client(middleware) as http:
        await http.post("/put/a", json=1)
        store = middleware._store
        assert store is not None
        assert (await http.get("/")).json() == {"a": 1}
        assert middleware._store is store  # not per request
        driver = store.driver
        await run_lifespan(middleware)
        assert middleware._store is None
        assert await driver.get_keys() == []  # MemoryDriver.dispose drops its items


async def test_a_driver_object_is_never_disposed_by_the_middleware(
    memory: MemoryDriver, clock: FakeClock
) -> None:
    app = make_app(memory, clock=clock)
    async with client(app) as http:
        await http.post("/put/a", json=1)
    await run_lifespan(app)
    assert len(await memory.get_keys()) == 1


async def test_websocket_reads_the_session(memory: MemoryDriver, clock: FakeClock) -> None:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(dict(websocket.session))
        await websocket.close()

    app = make_app(memory, [WebSocketRoute("/ws", ws)], clock=clock)
    async with client(app) as http:
        await http.post("/put/user", json="ada")
        sid = http.cookies["__Host-session"]
    incoming = [{"type": "websocket.connect"}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "wss",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"cookie", f"__Host-session={sid}".encode())],
        "server": ("testserver", 443),
        "client": ("127.0.0.1", 1234),
        "subprotocols": [],
        "state": {},
    }
    await asyncio.wait_for(app(scope, receive, send), 5)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == '{"user":"ada"}'


def test_get_session_without_the_middleware() -> None:
    with pytest.raises(LookupError, match="SessionMiddleware"):
        get_session({"type": "http"})


# -- Secure cookies over plain http --------------------------------------------------

# Starlette's TestClient, as app tests use it. Starlette 1.x wants httpx2 for it (a dev
# dependency from Python 3.11 on, where httpx2 exists) and warns when it falls back to httpx.
uses_testclient = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


async def count(request: Request) -> Response:
    request.session["n"] = request.session.get("n", 0) + 1
    return JSONResponse(request.session["n"])


def plain_http_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sqlsession" and "plain http" in r.message]


@uses_testclient
def test_a_secure_cookie_over_http_to_testserver_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from starlette.testclient import TestClient

    app = make_app(MemoryDriver(), [Route("/count", count)])
    with caplog.at_level(logging.WARNING, logger="sqlsession"), TestClient(app) as client:
        first = client.get("/count")
        second = client.get("/count")
        client.get("/count")
    # What the warning is about: TestClient (http://testserver) kept the Secure cookie
    # to itself, so every request started a new session.
    assert (first.json(), second.json()) == (1, 1)
    (record,) = plain_http_warnings(caplog)
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "'testserver'" in message
    assert "https_only=False" in message
    assert "base_url='https://testserver'" in message
    session_id = first.cookies["__Host-session"]
    assert session_id not in caplog.text


@uses_testclient
@pytest.mark.parametrize(
    ("base_url", "options"),
    [
        ("http://testserver", {"https_only": False}),
        ("https://testserver", {}),
        ("http://localhost", {}),
        ("http://127.0.0.1:8000", {}),
        ("http://[::1]:8000", {}),
        ("http://app.localhost", {}),
    ],
)
def test_no_warning_where_the_cookie_is_kept(
    caplog: pytest.LogCaptureFixture, base_url: str, options: dict[str, Any]
) -> None:
    from starlette.testclient import TestClient

    app = make_app(MemoryDriver(), [Route("/count", count)], **options)
    with (
        caplog.at_level(logging.WARNING, logger="sqlsession"),
        TestClient(app, base_url=base_url) as client,
    ):
        client.get("/count")
        counted = client.get("/count").json()
    assert plain_http_warnings(caplog) == []
    if base_url.startswith("https") or options:
        assert counted == 2  # the cookie came back


@uses_testclient
def test_a_request_that_sets_no_cookie_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    from starlette.testclient import TestClient

    with (
        caplog.at_level(logging.WARNING, logger="sqlsession"),
        TestClient(make_app(MemoryDriver())) as client,
    ):
        assert client.get("/").json() == {}
    assert plain_http_warnings(caplog) == []
