"""Regression tests from a review of the session layer: corrupt rows, driver errors, streaming."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sqlsession import ConfigError
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.web import CookieChange, SessionMiddleware, SessionStore
from tests.conftest import FakeClock
from tests.test_asgi import Failing
from tests.test_session import reopen, start, storage_key

Message = MutableMapping[str, Any]


# -- stored rows that cannot be read are an empty session, never a 500 -----------------------


@pytest.mark.parametrize(
    "value",
    [
        # Python's JSON decoder accepts NaN, which our encoder refuses.
        '{"created": 1790000000000, "seen": 1790000000000, "k:x": {"v": NaN}}',
        # Deeper than the JSON decoder's recursion limit.
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=["nan", "deep"],
)
async def test_a_corrupt_row_in_sqlite_is_an_empty_session_not_an_error(
    sqlite_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    async with SQLDriver(sqlite_url, clock=clock) as driver:
        store = SessionStore(driver, clock=clock)
        sid = await start(store, user="ada")
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
            conn.execute("UPDATE sqlsession SET value = ? WHERE key = ?", (value, storage_key(sid)))
        with caplog.at_level(logging.WARNING, logger="sqlsession"):
            session = await reopen(store, sid)
        assert dict(session) == {}
        assert session.session_id is None
        assert "cannot be decoded" in caplog.text or "cannot read" in caplog.text
        assert sid not in caplog.text
        assert await store.commit(session) == CookieChange(None)
        assert await driver.has_item(storage_key(sid)) is False


# -- a driver error is an error, not a corrupt row -------------------------------------------


class ConfigFailing(MemoryDriver):
    """A real memory driver whose next read fails with a (ValueError-derived) SessionError."""

    fail_next_read = False

    async def get_item(self, key: str) -> Any:
        if self.fail_next_read:
            self.fail_next_read = False
            raise ConfigError("the driver lost its configuration")
        return await super().get_item(key)

    async def get_text(self, key: str) -> str | None:  # how the session layer reads it
        if self.fail_next_read:
            self.fail_next_read = False
            raise ConfigError("the driver lost its configuration")
        return await super().get_text(key)


async def test_a_driver_error_while_loading_is_raised_and_the_row_kept(clock: FakeClock) -> None:
    driver = ConfigFailing(clock=clock)
    store = SessionStore(driver, clock=clock)
    sid = await start(store, user="ada")
    driver.fail_next_read = True
    with pytest.raises(ConfigError):
        await reopen(store, sid)
    assert dict(await reopen(store, sid)) == {"user": "ada"}


# -- the ASGI layer ---------------------------------------------------------------------------


def http_scope(**extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 443),
        "client": ("127.0.0.1", 1234),
        "state": {},
    }
    scope.update(extra)
    return scope


async def test_an_endless_stream_stops_once_a_failed_commit_was_answered_with_500(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    chunks = 0

    async def events(request: Request) -> Response:
        request.session["subscribed"] = True

        async def body() -> AsyncIterator[bytes]:
            nonlocal chunks
            while True:  # a server-sent event stream: it ends when sending fails
                chunks += 1
                yield b"data: tick\n\n"
                await asyncio.sleep(0)

        return StreamingResponse(body(), media_type="text/event-stream")

    driver = Failing(clock=clock)
    driver.fail_writes = True
    app = Starlette(
        routes=[Route("/", events)],
        middleware=[Middleware(SessionMiddleware, driver=driver, clock=clock)],
    )
    sent: list[Message] = []
    done = asyncio.Event()

    async def receive() -> Message:
        await done.wait()  # uvicorn (spec 2.4) never reports the disconnect here
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if sent and sent[-1]["type"] == "http.response.body" and not sent[-1].get("more_body"):
            raise RuntimeError("Unexpected ASGI message after the response completed.")
        sent.append(message)

    with caplog.at_level(logging.ERROR, logger="sqlsession"):
        await asyncio.wait_for(app(http_scope(), receive, send), 5)
    done.set()
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 500
    assert chunks < 10
    assert "Saving the session failed" in caplog.text


async def test_a_stream_gets_its_headers_before_its_first_event(
    memory: MemoryDriver, clock: FakeClock
) -> None:
    headers_sent = asyncio.Event()

    async def events(request: Request) -> Response:
        request.session["subscribed"] = True

        async def body() -> AsyncIterator[bytes]:
            # A server-sent event stream whose first event waits for something to happen;
            # the client must see the response (and its cookie) before that.
            await headers_sent.wait()
            yield b"data: first\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    app = Starlette(
        routes=[Route("/", events)],
        middleware=[Middleware(SessionMiddleware, driver=memory, clock=clock)],
    )
    sent: list[Message] = []

    async def receive() -> Message:
        await asyncio.Event().wait()  # no disconnect (spec 2.4)
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.start":
            headers_sent.set()

    await asyncio.wait_for(app(http_scope(), receive, send), 5)
    assert [m["type"] for m in sent] == ["http.response.start", *["http.response.body"] * 2]
    cookies = [v for k, v in sent[0]["headers"] if k == b"set-cookie"]
    assert len(cookies) == 1
    sid = cookies[0].decode().split(";")[0].removeprefix("__Host-session=")
    assert await memory.get_item(storage_key(sid)) is not None


async def test_head_and_not_modified_responses_commit_and_carry_the_cookie(
    memory: MemoryDriver, clock: FakeClock
) -> None:
    async def not_modified(request: Request) -> Response:
        request.session["seen"] = True
        return Response(status_code=304)

    app = Starlette(
        routes=[Route("/", not_modified, methods=["GET", "HEAD"])],
        middleware=[Middleware(SessionMiddleware, driver=memory, clock=clock)],
    )
    for method in ("HEAD", "GET"):
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message, sent: list[Message] = sent) -> None:
            sent.append(message)

        await asyncio.wait_for(app(http_scope(method=method), receive, send), 5)
        assert sent[0]["type"] == "http.response.start"
        assert sent[0]["status"] == 304
        assert any(k == b"set-cookie" for k, _ in sent[0]["headers"])
        assert sum(m["type"] == "http.response.start" for m in sent) == 1
    assert len(await memory.get_keys()) == 2


@pytest.fixture
async def memory(clock: FakeClock) -> AsyncIterator[MemoryDriver]:
    async with MemoryDriver(clock=clock) as driver:
        yield driver
