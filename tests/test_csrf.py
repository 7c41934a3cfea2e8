"""CSRF tokens and `CSRFMiddleware`, on every backend, with Starlette's TestClient."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from sqlsession import ConfigError, SessionDriverConfig
from sqlsession.web import CSRFMiddleware, Session, SessionMiddleware, get_session
from sqlsession.web.asgi import Message
from tests.conftest import DriverFactory, FakeClock
from tests.test_flash import BASE, Counting, driver_config

__all__ = ["driver_config"]  # the fixture, imported to be used here

UNSAFE = ["POST", "PUT", "PATCH", "DELETE"]
BOUNDARY = "----sqlsessionBoundary7MA4YWxkTrZu0gW"


class Calls:
    count = 0


async def token(request: Request) -> Response:
    return PlainTextResponse(get_session(request).csrf_token())


async def echo(request: Request) -> Response:
    Calls.count += 1
    body = await request.body()
    return JSONResponse(
        {
            "sha256": hashlib.sha256(body).hexdigest(),
            "length": len(body),
            "content_type": request.headers.get("content-type"),
        }
    )


async def regenerate(request: Request) -> Response:
    get_session(request).regenerate()
    return PlainTextResponse("ok")


async def bind(request: Request) -> Response:
    get_session(request).bind_user("ada")
    return PlainTextResponse("ok")


async def sign_in(request: Request) -> Response:
    request.session["user"] = "bob"
    return PlainTextResponse("ok")


async def clear(request: Request) -> Response:
    request.session.clear()
    return PlainTextResponse("ok")


async def keep(request: Request) -> Response:
    request.session["n"] = request.session.get("n", 0) + 1
    return PlainTextResponse("ok")


ECHO_METHODS = ["GET", "HEAD", "OPTIONS", *UNSAFE]
ROUTES = [
    Route("/token", token),
    Route("/echo", echo, methods=ECHO_METHODS),
    Route("/hooks/{name}", echo, methods=ECHO_METHODS),
    Route("/ping", echo, methods=ECHO_METHODS),
    Route("/ping/sub", echo, methods=ECHO_METHODS),
    Route("/regenerate", regenerate, methods=["POST"]),
    Route("/bind", bind, methods=["POST"]),
    Route("/sign-in", sign_in, methods=["POST"]),
    Route("/clear", clear, methods=["POST"]),
    Route("/keep", keep, methods=["POST"]),
]


def make_app(driver: Any, csrf: dict[str, Any] | None = None, **options: Any) -> Starlette:
    return Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(SessionMiddleware, driver=driver, identity_key="user", **options),
            Middleware(CSRFMiddleware, **(csrf or {"exempt_paths": ["/hooks/", "/ping"]})),
        ],
    )


@pytest.fixture
def http(driver_config: SessionDriverConfig) -> Iterator[TestClient]:
    Calls.count = 0
    with TestClient(make_app(driver_config), base_url=BASE) as client:
        yield client


@contextlib.contextmanager
def another_session(client: TestClient) -> Iterator[None]:
    """Another visitor on the same client (one client: the app's driver lives on its loop)."""
    jar = client.cookies
    client.cookies = {}
    try:
        yield
    finally:
        client.cookies = jar


def multipart(*parts: tuple[str, bytes, str | None]) -> bytes:
    """A multipart/form-data body of (name, content, filename) parts."""
    out = b""
    for name, content, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
FORM = "application/x-www-form-urlencoded"


def digest(body: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}


# -- the token --------------------------------------------------------------------------


def test_tokens_are_masked_per_response_and_all_pass(http: TestClient) -> None:
    tokens = [http.get("/token").text for _ in range(3)]
    assert len(set(tokens)) == 3  # a fresh mask each time: no page repeats it (BREACH)
    assert all(len(t) == 86 and t.isascii() and "=" not in t for t in tokens)
    for each in tokens:
        assert http.post("/echo", headers={"X-CSRF-Token": each}).status_code == 200
    # Changed in any one character, a token fails.
    for index in (0, 20, 43, 84):  # not 85: its last 4 bits are base64 padding
        flipped = "A" if tokens[0][index] != "A" else "B"
        bad = tokens[0][:index] + flipped + tokens[0][index + 1 :]
        assert http.post("/echo", headers={"X-CSRF-Token": bad}).status_code == 403
    for bad in ("", "x" * 86, tokens[0][:-1], tokens[0] + "A", tokens[0] + "=="):
        assert http.post("/echo", headers={"X-CSRF-Token": bad}).status_code == 403
    non_ascii = "csrf_token=" + "%C3%A9" * 86
    assert http.post("/echo", content=non_ascii, headers={"content-type": FORM}).status_code == 403
    assert Calls.count == 3


@pytest.mark.parametrize("route", ["/regenerate", "/bind", "/sign-in", "/clear"])
def test_the_token_rotates_with_the_id(http: TestClient, route: str) -> None:
    before = http.get("/token").text
    cookie = http.cookies["__Host-session"]
    assert http.post(route, headers={"X-CSRF-Token": before}).status_code == 200
    # A new id (or none: /clear, and /regenerate of a session holding only its token,
    # leave nothing to keep).
    assert http.cookies.get("__Host-session") != cookie
    after = http.get("/token").text
    assert after != before
    # The old token no longer passes; the new one does.
    assert http.post("/echo", headers={"X-CSRF-Token": before}).status_code == 403
    assert http.post("/echo", headers={"X-CSRF-Token": after}).status_code == 200


def test_a_token_from_another_session_is_refused(http: TestClient) -> None:
    mine = http.get("/token").text
    with another_session(http):
        http.get("/token")
        response = http.post("/echo", headers={"X-CSRF-Token": mine})
        assert response.status_code == 403
        response = http.post("/echo", content=f"csrf_token={mine}", headers={"content-type": FORM})
        assert response.status_code == 403
    assert Calls.count == 0


def test_checking_never_makes_a_token() -> None:
    session = Session()
    assert not session.check_csrf_token("anything")
    assert not session.check_csrf_token(None)
    assert not session.modified
    assert session.session_id is None
    token_value = session.csrf_token()
    assert session.check_csrf_token(token_value)
    assert session.check_csrf_token(session.csrf_token())
    assert not session.check_csrf_token(token_value[:-1])
    assert not session.check_csrf_token(token_value + "x")
    assert not session.check_csrf_token("é" * 86)  # not ASCII: fails, never raises
    assert not session.check_csrf_token("!" * 86)  # not base64
    assert not session.check_csrf_token(token_value.encode())
    session.destroy()
    assert not session.check_csrf_token(token_value)


# -- the middleware ---------------------------------------------------------------------


@pytest.mark.parametrize("method", UNSAFE)
def test_unsafe_methods_need_the_token(http: TestClient, method: str) -> None:
    good = http.get("/token").text
    body = b"a=1&b=two"
    cases = [
        ({}, b"", "missing"),
        ({"X-CSRF-Token": "wrong"}, b"", "incorrect"),
        ({"X-CSRF-Token": ""}, b"", "incorrect"),
        ({"content-type": FORM}, body, "missing"),
        ({"content-type": FORM}, body + b"&csrf_token=wrong", "incorrect"),
        ({"content-type": MULTIPART}, multipart(("a", b"1", None)), "missing"),
        ({"content-type": MULTIPART}, multipart(("csrf_token", b"wrong", None)), "incorrect"),
        # A token in a JSON body does not count: JSON needs the header.
        ({"content-type": "application/json"}, f'{{"csrf_token": "{good}"}}'.encode(), "missing"),
        # A file part named like the field is not the field.
        ({"content-type": MULTIPART}, multipart(("csrf_token", good.encode(), "t.txt")), "missing"),
    ]
    for headers, content, why in cases:
        response = http.request(method, "/echo", headers=headers, content=content)
        assert response.status_code == 403, (headers, content)
        assert response.text.startswith(f"Forbidden: CSRF token {why}"), response.text
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert Calls.count == 0
    passing = [
        ({"X-CSRF-Token": good}, b""),
        ({"content-type": FORM}, f"csrf_token={good}&".encode() + body),
        ({"content-type": FORM}, body + f"&csrf_token={good}".encode()),
        ({"content-type": f"{FORM}; charset=UTF-8"}, f"csrf_token={good}".encode()),
        (
            {"content-type": MULTIPART},
            multipart(("a", b"1", None), ("csrf_token", good.encode(), None)),
        ),
        ({"content-type": "application/json", "X-CSRF-Token": good}, b'{"a": 1}'),
    ]
    for headers, content in passing:
        response = http.request(method, "/echo", headers=headers, content=content)
        assert response.status_code == 200, (headers, content, response.text)
        assert response.json() == {**digest(content), "content_type": headers.get("content-type")}
    assert Calls.count == len(passing)


def test_safe_methods_and_exempt_paths_pass(http: TestClient) -> None:
    for method in ("GET", "HEAD", "OPTIONS"):
        assert http.request(method, "/echo").status_code == 200
    assert http.post("/hooks/stripe").status_code == 200
    assert http.post("/ping").status_code == 200
    # "/ping" exempts itself only; "/hooks/" everything under it.
    assert http.post("/ping/sub").status_code == 403
    assert Calls.count == 5


def test_large_multipart_bodies_reach_the_app_intact(http: TestClient) -> None:
    good = http.get("/token").text.encode()
    upload = bytes(range(256)) * (12 * 1024)  # 3 MiB, past the scan limit
    for body in (
        # The field first: found at once, whatever follows.
        multipart(("csrf_token", good, None), ("file", upload, "big.bin")),
        # After a file, within the scan limit.
        multipart(("file", upload[:300_000], "small.bin"), ("csrf_token", good, None)),
    ):
        response = http.post("/echo", content=body, headers={"content-type": MULTIPART})
        assert response.status_code == 200
        assert response.json() == {**digest(body), "content_type": MULTIPART}
    # After a file larger than the scan limit: not found, refused.
    late = multipart(("file", upload, "big.bin"), ("csrf_token", good, None))
    response = http.post("/echo", content=late, headers={"content-type": MULTIPART})
    assert response.status_code == 403
    large_form = b"csrf_token=" + good + b"&data=" + b"x" * 2_000_000
    response = http.post("/echo", content=large_form, headers={"content-type": FORM})
    assert response.json() == {**digest(large_form), "content_type": FORM}


async def test_the_body_is_replayed_chunk_by_chunk(
    make_driver: DriverFactory, clock: FakeClock
) -> None:
    """Pure ASGI, with a body in many chunks: the field is found early, the rest streams."""
    driver = Counting(await make_driver())
    seen: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = scope["session"]
        if scope["path"] == "/token":
            body = session.csrf_token().encode()
        else:
            while True:
                message = await receive()
                seen.append(message)
                if not message.get("more_body"):
                    break
            body = b"ok"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    stack = SessionMiddleware(CSRFMiddleware(app, scan_limit=1000), driver=driver, clock=clock)

    async def call(method: str, path: str, headers: list[Any], chunks: list[bytes]) -> Any:
        received: list[int] = []
        sent: list[Message] = []
        pending = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]

        async def receive() -> Message:
            received.append(1)
            return pending.pop(0) if pending else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "scheme": "https",
            "headers": headers,
            "server": ("testserver", 443),
        }
        await stack(scope, receive, send)
        return sent, len(received)

    sent, _ = await call("GET", "/token", [], [b""])
    cookie = next(v for n, v in sent[0]["headers"] if n == b"set-cookie").split(b";")[0]
    good = sent[1]["body"]
    chunks = [b"csrf_to", b"ken=" + good[:10], good[10:] + b"&a=", *[b"y" * 500] * 20]
    headers = [(b"cookie", cookie), (b"content-type", FORM.encode())]
    sent, reads = await call("POST", "/echo", headers, chunks)
    assert sent[0]["status"] == 200
    assert [m["body"] for m in seen] == chunks  # as they came, in the same chunks
    assert reads == len(chunks)  # nothing read twice, nothing held back
    # A field that never comes: refused once the scan limit is read, not the whole body.
    seen.clear()
    sent, reads = await call("POST", "/echo", headers, [b"a=" + b"z" * 400] * 20)
    assert sent[0]["status"] == 403
    assert reads == 3
    assert seen == []


async def test_the_check_costs_no_storage_round_trip(
    make_driver: DriverFactory, clock: FakeClock
) -> None:
    driver = Counting(await make_driver())
    with_csrf = make_app(driver, clock=clock)
    without = Starlette(
        routes=ROUTES,
        middleware=[Middleware(SessionMiddleware, driver=driver, clock=clock)],
    )
    transport = httpx.ASGITransport(app=with_csrf)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        good = (await http.get("/token")).text
        driver.take()
        assert (await http.post("/keep", headers={"X-CSRF-Token": good})).status_code == 200
        checked = driver.take()
        http._transport = httpx.ASGITransport(app=without)
        assert (await http.post("/keep")).status_code == 200
        assert driver.take() == checked == ["get_text", "merge_existing_text"]


class DictSessions:
    """Puts a plain dict in scope["session"], as Starlette's cookie sessions do."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope["session"] = {}
        await self.app(scope, receive, send)


def test_misconfiguration_is_refused_clearly(driver_config: SessionDriverConfig) -> None:
    outside = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(CSRFMiddleware),
            Middleware(SessionMiddleware, driver=driver_config),
        ],
    )
    with (
        TestClient(outside, base_url=BASE) as client,
        pytest.raises(ConfigError, match=r"inside sqlsession\.web\.SessionMiddleware"),
    ):
        client.get("/token")
    starlettes = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(DictSessions),
            Middleware(CSRFMiddleware),
        ],
    )
    with (
        TestClient(starlettes, base_url=BASE) as client,
        pytest.raises(ConfigError, match="no sqlsession Session"),
    ):
        client.post("/echo")
    app = ROUTES[0].app
    for options in (
        {"field_name": ""},
        {"header_name": "X CSRF"},
        {"exempt_paths": "/hooks/"},
        {"exempt_paths": ["hooks"]},
        {"scan_limit": 0},
        {"scan_limit": True},
    ):
        with pytest.raises(ConfigError):
            CSRFMiddleware(app, **options)


def test_tokens_never_reach_the_logs(http: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good = http.get("/token").text
    http.post("/echo", headers={"X-CSRF-Token": good + "x"})
    http.post("/echo", content=f"csrf_token={good[:-1]}", headers={"content-type": FORM})
    refused = [r for r in caplog.records if r.getMessage().startswith("Refused POST /echo")]
    assert len(refused) == 2
    for record in caplog.records:
        assert good[:-1] not in record.getMessage()
