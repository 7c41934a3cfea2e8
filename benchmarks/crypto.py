"""What encryption at rest costs a request, for a 1 KB session, on memory and SQLite.

    .venv/bin/python benchmarks/crypto.py [--rounds 2000]

Each request goes through `SessionMiddleware` (called as ASGI, without a server or an
HTTP client, so that only the session layer and the database are timed):

    read     load the session, read every key, commit (nothing written)
    changed  load, read every key, change the cart in place, commit (one merge)

once with ``encryption_keys`` and once without, on the same driver. The two setups
alternate round by round, so that noise from the shared machine falls on both alike.
Each figure is the median of `--rounds` requests, in microseconds; the ratio is
encrypted / plain within this run. Last, encrypting and decrypting the session's JSON
alone, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlsession._migrate import upgrade
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.web import SessionMiddleware, SessionStore, generate_encryption_key
from sqlsession.web._crypto import Cipher, Sealed

COOKIE = "sid"


def session_data(size: int) -> dict[str, Any]:
    """A signed-in session of about `size` bytes of JSON: a user, prefs and a cart."""
    data: dict[str, Any] = {
        "user": "ada@example.com",
        "prefs": {"theme": "dark", "lang": "en", "tz": "Europe/Paris"},
        "cart": [],
    }
    while len(json.dumps(data)) < size:
        n = len(data["cart"])
        data["cart"].append({"sku": f"SKU-{n:06d}", "qty": n % 5 + 1, "price": 19.99})
    return data


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    session = scope["session"]
    for name in session:
        session[name]
    if scope["path"] == "/changed":
        item = session["cart"][0]
        item["qty"] = item["qty"] % 9 + 1
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class Setup:
    """A middleware on `driver`, and one stored 1 KB session to send requests for."""

    def __init__(self, driver: Any, keys: list[str] | None) -> None:
        self.driver = driver
        self.keys = keys
        self.middleware = SessionMiddleware(
            app, driver=driver, session_cookie=COOKIE, https_only=False, encryption_keys=keys
        )
        self.cookie = b""

    async def start(self) -> None:
        store = SessionStore(self.driver, encryption_keys=self.keys)
        session = await store.load([])
        session.update(session_data(1024))
        change = await store.commit(session)
        assert change is not None
        assert change.session_id is not None
        self.cookie = f"{COOKIE}={change.session_id}".encode()

    async def request(self, path: str) -> float:
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "headers": [(b"cookie", self.cookie)],
        }
        statuses: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        started = time.perf_counter()
        await self.middleware(scope, receive, send)
        elapsed = time.perf_counter() - started
        assert statuses == [200], statuses
        return elapsed


async def measure(driver: Any, rounds: int) -> dict[str, float]:
    plain, sealed = Setup(driver, None), Setup(driver, [generate_encryption_key()])
    await plain.start()
    await sealed.start()
    found: dict[str, float] = {}
    for path in ("/read", "/changed"):
        times: dict[str, list[float]] = {"plain": [], "encrypted": []}
        for _ in range(rounds):
            times["plain"].append(await plain.request(path))
            times["encrypted"].append(await sealed.request(path))
        for label, values in times.items():
            found[f"{path[1:]} {label}"] = statistics.median(values) * 1e6
    return found


def seal_and_open(rounds: int) -> tuple[float, float]:
    """Medians in µs of encrypting and of decrypting the 1 KB session's JSON, alone."""
    cipher = Cipher([generate_encryption_key()])
    text = json.dumps(session_data(1024))
    sealing, opening = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        token = Sealed(cipher.seal(text, b"aad"))
        sealed = time.perf_counter()
        cipher.open(token, b"aad")
        sealing.append(sealed - started)
        opening.append(time.perf_counter() - sealed)
    return statistics.median(sealing) * 1e6, statistics.median(opening) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    rows: dict[str, dict[str, float]] = {}
    rows["memory"] = await measure(MemoryDriver(max=10), args.rounds)
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        upgrade(url, table="sqlsession")
        async with SQLDriver(url) as driver:
            rows["sqlite"] = await measure(driver, args.rounds)
    print("| driver | request | plain | encrypted | ratio |")
    print("|---|---|---:|---:|---:|")
    for name, row in rows.items():
        for kind in ("read", "changed"):
            plain, sealed = row[f"{kind} plain"], row[f"{kind} encrypted"]
            print(f"| {name} | {kind} | {plain:.1f} µs | {sealed:.1f} µs | {sealed / plain:.2f} |")
    seal, open_ = seal_and_open(args.rounds)
    print(f"\nAES-256-GCM alone on 1 KB of JSON: encrypt {seal:.1f} µs, decrypt {open_:.1f} µs")


if __name__ == "__main__":
    asyncio.run(main())
