"""Fail at startup, not at the first request: the middleware checks its driver in the lifespan.

A real uvicorn refuses to start, with one line, for each cause (driver package missing,
table not migrated, database unreachable); Starlette's TestClient, apps with a lifespan of
their own and apps without lifespan support keep working.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sqlsession import DatabaseUnavailableError, DriverLoadError, SchemaError, session_drivers
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.web import SessionMiddleware
from tests.conftest import FakeClock, migrate

UNREACHABLE = "postgresql://app:s3cret-pw@127.0.0.1:1/app"  # nothing listens on port 1


async def count(request: Request) -> JSONResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return JSONResponse(request.session["n"])


def starlette_app(driver: Any, **kwargs: Any) -> Starlette:
    return Starlette(
        routes=[Route("/", count)],
        middleware=[Middleware(SessionMiddleware, driver=driver, https_only=False)],
        **kwargs,
    )


# -- a real uvicorn ------------------------------------------------------------------------

APP_MODULE = """
import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sqlsession import session_drivers
from sqlsession.web import SessionMiddleware


async def count(request: Request) -> JSONResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return JSONResponse(request.session["n"])


app = Starlette(
    routes=[Route("/", count)],
    middleware=[
        Middleware(
            SessionMiddleware,
            driver=session_drivers.sql(url=os.environ["APP_DATABASE_URL"]),
            https_only=False,
        )
    ],
)
"""

# Runs uvicorn's command line with the import of asyncpg blocked, as on a machine where
# sqlsession-store was installed without the [postgres] extra.
WITHOUT_ASYNCPG = (
    "import sys; sys.modules['asyncpg'] = None; import uvicorn; "
    "sys.argv = ['uvicorn', *sys.argv[1:]]; uvicorn.main()"
)


def uvicorn_command(*, block_asyncpg: bool = False) -> list[str]:
    args = ["app:app", "--host", "127.0.0.1", "--port", "0"]
    if block_asyncpg:
        return [sys.executable, "-c", WITHOUT_ASYNCPG, *args]
    return [sys.executable, "-m", "uvicorn", *args]


def uvicorn_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SQLSESSION_URL"}
    env["APP_DATABASE_URL"] = url
    return env


def run_uvicorn(tmp_path: Path, url: str, *, block_asyncpg: bool = False) -> tuple[int, str]:
    """Start uvicorn on the app; return its exit status and stderr (it must exit by itself)."""
    (tmp_path / "app.py").write_text(APP_MODULE)
    done = subprocess.run(
        uvicorn_command(block_asyncpg=block_asyncpg),
        cwd=tmp_path,
        env=uvicorn_env(url),
        capture_output=True,
        text=True,
        timeout=30,  # a server that started would run until killed here
        check=False,
    )
    return done.returncode, done.stderr


def our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "SessionMiddleware" in line]


def test_uvicorn_refuses_to_start_on_an_unmigrated_table_and_serves_once_migrated(
    tmp_path: Path,
) -> None:
    database = tmp_path / "sessions.db"
    sqlite3.connect(database).close()  # the file exists, the table does not
    status, stderr = run_uvicorn(tmp_path, f"sqlite:///{database}")
    assert status == 3, stderr
    (line,) = our_lines(stderr)
    assert "has not been migrated" in line
    assert f"sqlsession migrate --url sqlite+aiosqlite:///{database} --table sqlsession" in line
    assert "Traceback" not in stderr
    # Once migrated, the same command starts and serves.
    migrate(f"sqlite:///{database}")
    with subprocess.Popen(
        uvicorn_command(),
        cwd=tmp_path,
        env=uvicorn_env(f"sqlite:///{database}"),
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stderr is not None
            port = None
            for line in server.stderr:  # uvicorn logs to stderr; bounded by the finally
                found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
                if found:
                    port = int(found.group(1))
                    break
            assert port is not None
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                assert http.get("/").json() == 1
                assert http.get("/").json() == 2
        finally:
            server.terminate()
            server.wait(timeout=10)


def test_uvicorn_refuses_to_start_on_a_missing_database_file(tmp_path: Path) -> None:
    status, stderr = run_uvicorn(tmp_path, f"sqlite:///{tmp_path / 'missing.db'}")
    assert status == 3, stderr
    (line,) = our_lines(stderr)
    assert "does not exist" in line
    assert "sqlsession migrate" in line
    assert not (tmp_path / "missing.db").exists()


def test_uvicorn_refuses_to_start_on_an_unreachable_database_with_the_redacted_url(
    tmp_path: Path,
) -> None:
    status, stderr = run_uvicorn(tmp_path, UNREACHABLE)
    assert status == 3, stderr
    (line,) = our_lines(stderr)
    assert "Cannot reach the database postgresql+asyncpg://app:***@127.0.0.1:1/app" in line
    assert "s3cret-pw" not in stderr
    assert "Traceback" not in stderr


def test_uvicorn_refuses_to_start_without_the_driver_package_naming_the_extra(
    tmp_path: Path,
) -> None:
    status, stderr = run_uvicorn(tmp_path, UNREACHABLE, block_asyncpg=True)
    assert status == 3, stderr
    (line,) = our_lines(stderr)
    assert "needs the asyncpg package: pip install 'sqlsession-store[postgres]'" in line
    assert "s3cret-pw" not in stderr
    assert "Traceback" not in stderr


# -- Starlette's TestClient ----------------------------------------------------------------


def test_with_test_client_a_failed_check_raises_the_error(tmp_path: Path) -> None:
    database = tmp_path / "sessions.db"
    sqlite3.connect(database).close()
    app = starlette_app(session_drivers.sql(url=f"sqlite:///{database}"))
    with pytest.raises(SchemaError, match="sqlsession migrate"), TestClient(app):
        pass


class CountingMemoryDriver(MemoryDriver):
    """A real memory driver that counts its reads."""

    reads = 0

    async def get_item(self, key: str) -> Any:
        self.reads += 1
        return await super().get_item(key)


def test_test_client_with_and_without_lifespan(clock: FakeClock) -> None:
    driver = CountingMemoryDriver(clock=clock)
    with TestClient(starlette_app(driver)) as http:
        assert driver.reads == 1  # the startup check, before any request
        assert http.get("/").json() == 1
        assert http.get("/").json() == 2
    # Without `with`, no lifespan runs: nothing is checked before the first request,
    # which works as before.
    driver = CountingMemoryDriver(clock=clock)
    http = TestClient(starlette_app(driver))
    assert driver.reads == 0
    assert http.get("/").json() == 1
    assert http.get("/").json() == 2


def test_the_apps_own_lifespan_runs_first_and_is_shut_down_when_the_check_fails(
    tmp_path: Path,
) -> None:
    database = tmp_path / "sessions.db"
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("app startup")
        yield
        events.append("app shutdown")

    app = starlette_app(session_drivers.sql(url=f"sqlite:///{database}"), lifespan=lifespan)
    with pytest.raises(SchemaError, match="does not exist"), TestClient(app):
        pass
    assert events == ["app startup", "app shutdown"]


def test_an_app_that_migrates_in_its_own_lifespan_starts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    events: list[str] = []

    class Driver(SQLDriver):
        async def get_item(self, key: str) -> Any:
            events.append("session read")
            return await super().get_item(key)

    driver = Driver(url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        migrate(url)  # the app's startup comes before the middleware's check
        events.append("migrated")
        yield
        await driver.dispose()

    with TestClient(starlette_app(driver, lifespan=lifespan)) as http:
        assert events == ["migrated", "session read"]
        assert http.get("/").json() == 1


# -- apps without lifespan support ---------------------------------------------------------


async def http_only_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http", "this app only speaks http"
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def run_lifespan(app: Any) -> list[MutableMapping[str, Any]]:
    """Startup then shutdown, as a server sends them; returns what the app sent."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    with contextlib.suppress(DatabaseUnavailableError, DriverLoadError, SchemaError):
        await app(scope, receive, send)
    return sent


async def test_an_app_without_lifespan_support_gets_the_check(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    middleware = SessionMiddleware(http_only_app, driver=session_drivers.sql(url=missing))
    (failed,) = await run_lifespan(middleware)
    assert failed["type"] == "lifespan.startup.failed"
    assert failed["message"].startswith("SessionMiddleware cannot start: The SQLite database")
    assert "\n" not in failed["message"]


async def test_a_driver_object_gets_the_same_check(tmp_path: Path) -> None:
    database = tmp_path / "sessions.db"
    sqlite3.connect(database).close()
    async with SQLDriver(f"sqlite:///{database}") as driver:
        for app in (starlette_app(driver), SessionMiddleware(http_only_app, driver=driver)):
            (failed,) = await run_lifespan(app)
            assert failed["type"] == "lifespan.startup.failed"
            assert "has not been migrated" in failed["message"]
            assert "sqlsession migrate" in failed["message"]


async def test_an_app_without_lifespan_support_starts_and_stops(sqlite_url: str) -> None:
    middleware = SessionMiddleware(http_only_app, driver=session_drivers.sql(url=sqlite_url))
    sent = await run_lifespan(middleware)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert middleware._store is None  # the driver it loaded was disposed at shutdown
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        assert (await http.get("/")).status_code == 204
