"""The example app under uvicorn, over real HTTP with cookies, on SQLite and PostgreSQL.

Each server is a separate process on a free loopback port. Time is moved, not waited
for: the app's session middleware and its SQL driver read one clock, real time plus an
offset kept in a file the test writes. Concurrency is forced, not hoped for: a barrier
middleware inside the session middleware holds each request, after its session was
loaded, until the other request has loaded it too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BACKENDS = ["sqlite", "postgres", "mysql"]
MAX_AGE = 300
IDLE_TIMEOUT = 100

pytestmark = pytest.mark.slow

LAUNCHER = textwrap.dedent(
    """
    import asyncio, os, sys, time, uuid
    from pathlib import Path

    sys.path.insert(0, os.environ["E2E_EXAMPLES"])
    from app import create_app, serve
    from starlette.middleware import Middleware
    from sqlsession.drivers.sql import SQLDriver

    offset = Path(os.environ["E2E_CLOCK_FILE"])
    barriers = Path(os.environ["E2E_BARRIER_DIR"])


    def clock():
        return time.time() + float(offset.read_text() or 0)


    class Barrier:
        # Holds a request carrying x-e2e-barrier until two have arrived, in any process.
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            tag = dict(scope.get("headers", [])).get(b"x-e2e-barrier")
            if scope["type"] == "http" and tag:
                name = tag.decode()
                (barriers / f"{name}.{uuid.uuid4().hex}").touch()
                deadline = time.monotonic() + 20
                while len(list(barriers.glob(f"{name}.*"))) < 2:
                    if time.monotonic() > deadline:
                        raise RuntimeError("barrier timed out")
                    await asyncio.sleep(0.01)
            await self.app(scope, receive, send)


    app = create_app(
        SQLDriver(os.environ["E2E_URL"], clock=clock),
        max_age=float(os.environ["E2E_MAX_AGE"]),
        idle_timeout=float(os.environ["E2E_IDLE_TIMEOUT"]),
        clock=clock,
        middleware=[Middleware(Barrier)],
    )
    serve(app, "127.0.0.1", 0)
    """
)


@dataclass
class World:
    """What the servers of one test share: the database, the clock and the barriers."""

    url: str
    directory: Path

    @property
    def clock_file(self) -> Path:
        return self.directory / "clock-offset"

    def advance(self, seconds: float) -> None:
        offset = float(self.clock_file.read_text() or 0)
        self.clock_file.write_text(repr(offset + seconds))


def wait_until_serving(process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> str:
    """The base URL the server printed, once it answers HTTP."""
    deadline = time.monotonic() + timeout
    base = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        found = re.search(r"Open (http://127\.0\.0\.1:\d+)/", log.read_text())
        if found:
            base = found.group(1)
            try:
                httpx.get(base + "/state", timeout=2)
                return base
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"the server did not start serving (base={base}):\n{log.read_text()}")


@contextmanager
def running(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[str]:
    """Run a server process with exactly `env`; yield its base URL; stop it."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield wait_until_serving(process, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def example_server(world: World, name: str = "server") -> Iterator[str]:
    """The example app with the test clock and barrier, on `world`'s database."""
    launcher = world.directory / "launch.py"
    if not launcher.exists():
        launcher.write_text(LAUNCHER)
    env = {
        **os.environ,
        "E2E_EXAMPLES": str(EXAMPLES),
        "E2E_URL": world.url,
        "E2E_CLOCK_FILE": str(world.clock_file),
        "E2E_BARRIER_DIR": str(world.directory / "barriers"),
        "E2E_MAX_AGE": str(MAX_AGE),
        "E2E_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
    }
    with running(
        [sys.executable, str(launcher)], env, world.directory, world.directory / f"{name}.log"
    ) as base:
        yield base


@pytest.fixture(params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    url = request.getfixturevalue(f"{request.param}_url")
    (tmp_path / "barriers").mkdir()
    (tmp_path / "clock-offset").write_text("0")
    return World(url=str(url), directory=tmp_path)


def browser(base: str) -> httpx.Client:
    """A client with its own cookie jar, like one browser."""
    return httpx.Client(base_url=base, timeout=30)


def session_cookie(client: httpx.Client) -> str | None:
    return client.cookies.get("session")


def replay(base: str, cookie: str) -> dict[str, object]:
    """What a request carrying only `cookie` sees."""
    response = httpx.get(base + "/state", headers={"cookie": f"session={cookie}"}, timeout=30)
    result: dict[str, object] = response.json()
    return result


def sign_in(client: httpx.Client, name: str) -> None:
    response = client.post("/signin", data={"name": name})
    assert response.status_code == 303


def state(client: httpx.Client) -> dict[str, object]:
    result: dict[str, object] = client.get("/state").json()
    return result


# -- the flows -----------------------------------------------------------------------------------


def test_sign_in_cart_sign_out_and_replay(world: World) -> None:
    with example_server(world) as base, browser(base) as ada:
        response = ada.post("/cart", data={"item": "apple"})
        header = response.headers["set-cookie"]
        assert re.fullmatch(
            r"session=[A-Za-z0-9_-]{43}; Max-Age=100; Path=/; HttpOnly; SameSite=Lax", header
        )
        anonymous = session_cookie(ada)
        assert anonymous is not None
        sign_in(ada, "ada")
        signed_in = session_cookie(ada)
        assert signed_in not in (None, anonymous)  # regenerated on sign-in
        assert replay(base, anonymous) == {}
        ada.post("/counter")
        ada.post("/counter")
        ada.post("/cart", data={"item": "pear"})
        assert state(ada) == {"cart": ["apple", "pear"], "user": "ada", "count": 2}
        assert "Signed in as <b>ada</b>" in ada.get("/").text
        response = ada.post("/signout")
        assert response.headers["set-cookie"].startswith("session=; Max-Age=0;")
        assert session_cookie(ada) is None
        assert state(ada) == {}
        assert signed_in is not None
        assert replay(base, signed_in) == {}


def test_sign_out_everywhere(world: World) -> None:
    with (
        example_server(world) as base,
        browser(base) as laptop,
        browser(base) as phone,
        browser(base) as bob,
    ):
        sign_in(bob, "bob")
        sign_in(laptop, "ada")
        sign_in(phone, "ada")
        laptop_cookie = session_cookie(laptop)
        assert laptop_cookie is not None
        phone.post("/signout-everywhere")
        assert state(phone) == {}
        assert state(laptop) == {}
        assert replay(base, laptop_cookie) == {}
        assert state(bob) == {"user": "bob"}


def test_concurrent_requests_changing_different_keys_both_persist(world: World) -> None:
    with example_server(world) as base, browser(base) as client:
        sign_in(client, "ada")
        cookie = {"cookie": f"session={session_cookie(client)}"}
        with ThreadPoolExecutor(2) as pool:
            held = {**cookie, "x-e2e-barrier": "pair"}
            counter = pool.submit(httpx.post, base + "/counter", headers=held, timeout=30)
            cart = pool.submit(
                httpx.post, base + "/cart", data={"item": "apple"}, headers=held, timeout=30
            )
            assert counter.result().status_code == 303
            assert cart.result().status_code == 303
        assert state(client) == {"user": "ada", "count": 1, "cart": ["apple"]}


def test_two_processes_on_one_database_merge_concurrent_changes(world: World) -> None:
    with (
        example_server(world, "first") as first,
        example_server(world, "second") as second,
        browser(first) as client,
    ):
        sign_in(client, "ada")
        cookie = {"cookie": f"session={session_cookie(client)}"}
        held = {**cookie, "x-e2e-barrier": "pair"}
        with ThreadPoolExecutor(2) as pool:
            counter = pool.submit(httpx.post, first + "/counter", headers=held, timeout=30)
            cart = pool.submit(
                httpx.post, second + "/cart", data={"item": "apple"}, headers=held, timeout=30
            )
            assert counter.result().status_code == 303
            assert cart.result().status_code == 303
        assert replay(first, str(session_cookie(client))) == replay(
            second, str(session_cookie(client))
        )
        assert state(client) == {"user": "ada", "count": 1, "cart": ["apple"]}


def test_idle_timeout_slides_then_ends_the_session_on_time(world: World) -> None:
    with example_server(world) as base, browser(base) as client:
        sign_in(client, "ada")
        # Each request within IDLE_TIMEOUT (100 s) of the last keeps it going, past it.
        world.advance(60)
        assert state(client) == {"user": "ada"}
        world.advance(98)
        assert state(client) == {"user": "ada"}  # 158 s after sign-in
        world.advance(98)
        assert state(client) == {"user": "ada"}
        world.advance(101)  # 101 s without a request, 357 s after sign-in
        assert state(client) == {}


def test_idle_timeout_is_exact_to_the_second(world: World) -> None:
    with example_server(world) as base, browser(base) as client:
        sign_in(client, "ada")
        world.advance(99)
        assert state(client) == {"user": "ada"}  # 99 s idle: alive (and refreshed)
        world.advance(101)
        assert state(client) == {}


def test_max_age_ends_an_active_session_on_time(world: World) -> None:
    with example_server(world) as base, browser(base) as client:
        sign_in(client, "ada")
        for _ in range(5):
            world.advance(59)
            client.post("/counter")
        assert state(client)["count"] == 5  # 295 s in, active all along
        world.advance(3)
        assert state(client) == {"user": "ada", "count": 5}
        world.advance(3)  # 301 s after sign-in
        assert state(client) == {}


# -- the README's command ------------------------------------------------------------------


def test_readme_command_serves_the_example_on_sqlite(tmp_path: Path) -> None:
    # As a user runs it: the embedded default, sqlsession.db in the working directory.
    env = {k: v for k, v in os.environ.items() if k != "SQLSESSION_URL"}
    sqlsession = Path(sys.executable).with_name("sqlsession")
    subprocess.run([str(sqlsession), "migrate"], cwd=tmp_path, env=env, check=True)
    assert (tmp_path / "sqlsession.db").exists()
    command = [sys.executable, str(EXAMPLES / "app.py"), "--port", "0"]
    with running(command, env, tmp_path, tmp_path / "server.log") as base, browser(base) as client:
        assert base.startswith("http://127.0.0.1:")
        sign_in(client, "ada")
        client.post("/cart", data={"item": "apple"})
        assert state(client) == {"user": "ada", "cart": ["apple"]}
        assert "Signed in as <b>ada</b>" in client.get("/").text
