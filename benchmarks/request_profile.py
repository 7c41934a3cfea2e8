"""App CPU per request, in process: the end-to-end app's routes driven without a server.

    .venv/bin/python benchmarks/request_profile.py [--requests 2000] [--rounds 3]
        [--only sqlsession-postgres,starsessions-redis,...] [--routes read,write,plain]
        [--postgres-url postgresql://root@127.0.0.1:5432/test]
        [--profile sqlsession-postgres:write] [--top 30]

The app of `_e2e_app.py` (the same routes and ~930-byte signed-in session as e2e.py)
is called as an ASGI app straight from a loop: no uvicorn, no wrk, no sockets to the
client, so what is left is the middleware's, the session layer's and the driver's
Python, plus the database's round trips (whose waiting costs no CPU). CPU is the
process's (``time.process_time``: every thread, so aiosqlite's too), per request, in
microseconds; the contenders take turns for ``--rounds`` rounds and the table gives each
cell's median and its ratio to ``none`` (the routes with no session middleware) and to
``starsessions-redis``. Only ratios from one run mean anything on a shared machine.

``--profile contender:route`` runs that cell once more under cProfile and prints the
functions with the most own time (for instruction counts that a busy machine does not
disturb, run the same with ``valgrind --tool=callgrind python ... --requests 300``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import migrate, normalized, unmigrate
from _e2e_app import Target, build_app

CONTENDERS = (
    "none",
    "cookie",
    "sqlsession-memory",
    "sqlsession-sqlite",
    "sqlsession-postgres",
    "starsessions-redis",
)
ROUTES = ("read", "write", "plain")
_METHOD = {"read": "GET", "write": "POST", "plain": "GET"}
SESSIONS = 16  # the write route's sessions, as e2e.py's "write over 16 sessions"


class Client:
    """Calls an ASGI app with one request at a time, keeping each visitor's cookie."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lifespan: asyncio.Task[None] | None = None
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._lifespan = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {message}")

    async def stop(self) -> None:
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._from_app.get()
        assert self._lifespan is not None
        await self._lifespan

    async def request(self, method: str, path: str, cookie: bytes | None) -> tuple[bytes, bytes]:
        """One request; returns the cookie pair it set (or `cookie`) and its body."""
        headers = [(b"host", b"127.0.0.1:8000")]
        if cookie is not None:
            headers.append((b"cookie", cookie))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        status = 0
        sent = False
        body = bytearray()

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # a disconnect never comes
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, cookie
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"set-cookie":
                        cookie = bytes(value).split(b";", 1)[0]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await self.app(scope, receive, send)
        if status != 200:
            raise RuntimeError(f"{method} {path} answered {status}")
        assert cookie is not None or path == "/plain"
        return cookie or b"", bytes(body)


async def _cell(client: Client, cookies: list[bytes], route: str, requests: int) -> float:
    """CPU µs per request of `requests` requests of `route`, cycling over `cookies`."""
    method, path = _METHOD[route], "/" + route
    count = len(cookies)
    start = time.process_time()
    for i in range(requests):
        # Keep what the response set: the cookie contender's session is the cookie.
        cookies[i % count], _ = await client.request(method, path, cookies[i % count])
    return (time.process_time() - start) / requests * 1e6


async def _check_writes(client: Client, cookies: list[bytes], contender: str) -> None:
    """Fail unless the writes were stored: a contender that drops them cannot look fast."""
    _, body = await client.request("GET", "/read", cookies[0])
    counter = int(body.split()[-1])
    if counter < 1:
        raise RuntimeError(f"{contender}: /write stored nothing (counter {counter})")


async def _sign_in(client: Client, first_user: int) -> list[bytes]:
    cookies = []
    for n in range(first_user, first_user + SESSIONS):
        cookie, _ = await client.request("POST", f"/signin/{n}", None)
        cookies.append(cookie)
    return cookies


def _target(contender: str, args: argparse.Namespace, sqlite_url: str) -> Target:
    url = {"sqlsession-sqlite": sqlite_url, "sqlsession-postgres": args.postgres_url}.get(contender)
    return Target(sql_url=url, table=args.table)


async def _run_contender(
    contender: str, args: argparse.Namespace, sqlite_url: str, round_no: int
) -> dict[str, float]:
    client = Client(build_app(contender, _target(contender, args, sqlite_url)))
    await client.start()
    try:
        cookies = await _sign_in(client, 1 + round_no * SESSIONS)
        # Warm up (connections, caches) before measuring.
        for route in args.routes:
            await _cell(client, cookies, route, 50)
        cells = {r: await _cell(client, cookies, r, args.requests) for r in args.routes}
        if "write" in args.routes:
            await _check_writes(client, cookies, contender)
        return cells
    finally:
        await client.stop()


async def _profile(contender: str, route: str, args: argparse.Namespace, sqlite_url: str) -> str:
    client = Client(build_app(contender, _target(contender, args, sqlite_url)))
    await client.start()
    try:
        cookies = await _sign_in(client, 10_000)
        await _cell(client, cookies, route, 50)
        # CPU time, not wall time: waiting for the database in epoll costs nothing here.
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        await _cell(client, cookies, route, args.requests)
        profiler.disable()
    finally:
        await client.stop()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    return out.getvalue()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(CONTENDERS))
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "SQLSESSION_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--profile", default=None, help="contender:route to profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    args.only = [c for c in args.only.split(",") if c]
    args.routes = [r for r in args.routes.split(",") if r]
    for c in args.only:
        if c not in CONTENDERS:
            parser.error(f"unknown contender {c!r}; choose from {CONTENDERS}")
    for r in args.routes:
        if r not in ROUTES:
            parser.error(f"unknown route {r!r}; choose from {ROUTES}")
    args.table = f"profile_bench_{os.getpid()}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sqlsession-profile-"))
    sqlite_url = f"sqlite:///{tmp / 'sessions.db'}"
    contenders = list(args.only)
    if args.profile:
        contender, _, route = args.profile.partition(":")
        contenders = [contender]
    urls = {
        c: u
        for c in contenders
        if (u := _target(c, args, sqlite_url).sql_url) and c.startswith("sqlsession-")
    }
    for url in urls.values():
        asyncio.run(migrate(url, args.table))
    try:
        if args.profile:
            print(asyncio.run(_profile(contender, route, args, sqlite_url)))
            return 0
        results: dict[str, dict[str, list[float]]] = {
            c: {r: [] for r in args.routes} for c in contenders
        }
        for round_no in range(args.rounds):
            for c in contenders:
                cell = asyncio.run(_run_contender(c, args, sqlite_url, round_no))
                for r, us in cell.items():
                    results[c][r].append(us)
        _print_table(results, args.routes)
    finally:
        for url in urls.values():
            asyncio.run(unmigrate(normalized(url), args.table))
    return 0


def _print_table(results: dict[str, dict[str, list[float]]], routes: list[str]) -> None:
    medians = {
        c: {r: statistics.median(v) for r, v in cells.items()} for c, cells in results.items()
    }
    print("app CPU per request, µs (median of rounds); x none / x starsessions-redis")
    print(f"{'contender':<22}" + "".join(f"{r:>28}" for r in routes))
    for c, cells in medians.items():
        row = f"{c:<22}"
        for r in routes:
            us = cells[r]
            parts = [f"{us:8.0f}"]
            for base in ("none", "starsessions-redis"):
                ref = medians.get(base, {}).get(r)
                parts.append(f"{us / ref:6.2f}x" if ref else "     - ")
            row += f"{' '.join(parts):>28}"
        print(row)


if __name__ == "__main__":
    raise SystemExit(main())
