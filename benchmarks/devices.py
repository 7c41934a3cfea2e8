"""What device metadata (``record_client``) costs a request through the middleware.

    .venv/bin/python benchmarks/devices.py [--rounds 2000]

A signed-in session (bound with ``bind_user``, so every session is in its user's device
index) goes through `SessionMiddleware` around a minimal ASGI app, with ``record_client``
off and on, on the memory driver and on SQLite:

    read     the app reads two keys; nothing is written
    write    the app increments a counter: one merge of the row
    sign-in  a new session binds the user: the index merge and the whole row

The configurations take turns within each round, so that the machine's load falls on
all of them alike. Each figure is the median in microseconds per request, and the ratio
is on / off, from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlsession._migrate import upgrade
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.web import SessionMiddleware, get_session

AGENT = b"Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    session = get_session(scope)
    path = scope["path"]
    if path.startswith("/signin"):
        user = f"user{path[len('/signin') :]}@example.com"
        session.bind_user(user)
        session["user"] = user
        session["prefs"] = {"theme": "dark", "lang": "en"}
    elif path == "/write":
        session["count"] = session.get("count", 0) + 1
    else:
        _ = session.get("user"), session.get("prefs")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class Client:
    """Sends requests to a middleware directly (no server, no HTTP) and keeps the cookie."""

    def __init__(self, middleware: SessionMiddleware) -> None:
        self.middleware = middleware
        self.cookie: bytes | None = None

    async def request(self, path: str) -> None:
        headers = [(b"user-agent", AGENT)]
        if self.cookie is not None:
            headers.append((b"cookie", b"session=" + self.cookie))
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": headers,
            "client": ("203.0.113.7", 50000),
            "scheme": "http",
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                for name, value in message["headers"]:
                    if name == b"set-cookie" and value.startswith(b"session="):
                        self.cookie = value.split(b";")[0][len(b"session=") :]

        await self.middleware(scope, receive, send)


async def timed(work: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await work()
    return (time.perf_counter() - start) * 1e6


async def main(rounds: int) -> None:
    directory = Path(tempfile.mkdtemp())
    drivers: dict[str, Any] = {"memory": MemoryDriver(max=100_000)}
    url = f"sqlite:///{directory / 'bench.db'}"
    await asyncio.to_thread(upgrade, url)
    drivers["sqlite"] = SQLDriver(url)
    clients: dict[tuple[str, bool], Client] = {}
    for backend, driver in drivers.items():
        for record in (False, True):
            middleware = SessionMiddleware(
                app, driver, https_only=False, record_client=record, idle_timeout=None
            )
            client = Client(middleware)
            await client.request("/signin")
            clients[backend, record] = client
    times: dict[tuple[str, str, bool], list[float]] = {}
    order = [(config, kind) for config in clients for kind in ("read", "write", "sign-in")]
    shuffle = random.Random(12)
    for n in range(rounds):
        shuffle.shuffle(order)  # no configuration always runs first (or after another)
        for (backend, record), kind in order:
            client = clients[backend, record]
            if kind == "sign-in":
                # Another user each time: one user's index would grow by one entry a round.
                fresh = Client(client.middleware)
                elapsed = await timed(lambda c=fresh, u=n: c.request(f"/signin/{u}"))  # type: ignore[misc]
            else:
                path = "/" + kind
                elapsed = await timed(lambda c=client, p=path: c.request(p))  # type: ignore[misc]
            times.setdefault((backend, kind, record), []).append(elapsed)
    print(f"median µs per request over {rounds} rounds; ratio = record_client on / off")
    print(f"{'backend':8} {'request':8} {'off':>9} {'on':>9} {'ratio':>7}")
    for backend in drivers:
        for kind in ("read", "write", "sign-in"):
            off = statistics.median(times[backend, kind, False])
            on = statistics.median(times[backend, kind, True])
            print(f"{backend:8} {kind:8} {off:9.1f} {on:9.1f} {on / off:7.3f}")
    for driver in drivers.values():
        await driver.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    asyncio.run(main(parser.parse_args().rounds))
