"""What flash messages and CSRFMiddleware add to a request, through the ASGI stack.

    .venv/bin/python benchmarks/flash_csrf.py [--rounds 2000] [--url sqlite:///bench.db]

Each case drives `SessionMiddleware` (optionally around `CSRFMiddleware`) with plain ASGI
messages (no HTTP client, no server), for a session holding about 1 KB, and is paired with
a baseline measured in the same run, interleaved round by round so that machine noise
hits both alike. The ratios are what to read; the absolute times move with the machine.

    set                     POST that changes one key       (baseline for the checks)
    POST + redirected GET   a POST that sets a key, then a page; vs the POST also flashing
                            and the page popping the message (the write that removes it)
    set + header check      ... through CSRFMiddleware, token in X-CSRF-Token
    set + form check        ... urlencoded 1 KB form, token first in it
    show, none kept         GET that pops flashes when there are none (vs one that does not)
    1 MiB upload, checked   multipart upload read by the app, token first (vs unchecked)

Storage calls per request are counted too: flash and the check must add none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlsession import load_driver, session_drivers
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.web import CSRFMiddleware, SessionMiddleware, get_session

Message = dict[str, Any]
BOUNDARY = "benchBoundary7MA4YWxkTrZu0gW"


class Counting:
    """Forwards to the driver and counts its calls."""

    def __init__(self, driver: Any) -> None:
        self.inner = driver
        self.calls = 0

    async def get_item(self, key: str) -> Any:
        self.calls += 1
        return await self.inner.get_item(key)

    async def set_item(self, key: str, value: Any, *, ttl: Any = None) -> None:
        self.calls += 1
        await self.inner.set_item(key, value, ttl=ttl)

    async def remove_item(self, key: str) -> None:
        self.calls += 1
        await self.inner.remove_item(key)

    async def touch(self, key: str, ttl: Any = None) -> bool:
        self.calls += 1
        result: bool = await self.inner.touch(key, ttl)
        return result

    async def merge_existing(
        self, key: str, set: Any = None, delete: Any = (), *, ttl: Any = None
    ) -> Any:
        self.calls += 1
        return await self.inner.merge_existing(key, set=set, delete=delete, ttl=ttl)

    # The JSON-text capability the session layer uses when the driver has it.
    async def get_text(self, key: str) -> str | None:
        self.calls += 1
        result: str | None = await self.inner.get_text(key)
        return result

    async def set_text(self, key: str, text: str, *, ttl: Any = None) -> None:
        self.calls += 1
        await self.inner.set_text(key, text, ttl=ttl)

    async def merge_existing_text(
        self, key: str, set: Any = None, delete: Any = (), *, ttl: Any = None
    ) -> bool:
        self.calls += 1
        result: bool = await self.inner.merge_existing_text(key, set=set, delete=delete, ttl=ttl)
        return result


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body, then does what the path says to the session."""
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    session = get_session(scope)
    path = scope["path"]
    body = b"ok"
    if path == "/token":
        body = session.csrf_token().encode()
    elif path.startswith("/set"):
        session["n"] = session.get("n", 0) + 1
        if path == "/set-flash":
            session.flash("Saved.")
    elif path == "/fill":
        session["prefs"] = {"theme": "dark", "note": "x" * 900}  # about 1 KB of session
    elif path == "/show":
        body = json.dumps([f.message for f in session.pop_flashes()]).encode()
    elif path == "/plain":
        body = json.dumps(session.get("n")).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def call(stack: Any, method: str, path: str, headers: list[Any], body: bytes) -> Message:
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "scheme": "https",
        "headers": headers,
        "server": ("bench", 443),
    }
    await stack(scope, receive, send)
    assert sent[0]["status"] == 200, (path, sent)
    return {"headers": sent[0]["headers"], "body": sent[1]["body"]}


async def paired(
    rounds: int, base: Callable[[], Awaitable[Any]], case: Callable[[], Awaitable[Any]]
) -> tuple[float, float]:
    """Median µs of `base` and of `case`, measured alternately."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for index, step in enumerate((base, case)):
            start = time.perf_counter()
            await step()
            times[index].append(time.perf_counter() - start)
    return statistics.median(times[0]) * 1e6, statistics.median(times[1]) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--url", help="a migrated SQL database (default: the memory driver)")
    args = parser.parse_args()
    inner: Any = (
        MemoryDriver(max=100)
        if args.url is None
        else load_driver(session_drivers.sql(url=args.url))
    )
    driver = Counting(inner)
    plain = SessionMiddleware(app, driver=driver)
    checked = SessionMiddleware(CSRFMiddleware(app), driver=driver)

    first = await call(plain, "GET", "/token", [], b"")
    cookie = next(v for n, v in first["headers"] if n == b"set-cookie").split(b";")[0]
    token = first["body"].decode()
    jar = [(b"cookie", cookie)]
    await call(plain, "POST", "/fill", jar, b"")

    form = f"csrf_token={token}&note=".encode() + b"y" * 1000
    upload = b"z" * (1024 * 1024)
    multipart = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + upload
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    header = [*jar, (b"x-csrf-token", token.encode())]
    form_headers = [*jar, (b"content-type", b"application/x-www-form-urlencoded")]
    multi_headers = [*jar, (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]

    def step(stack: Any, method: str, path: str, headers: list[Any], body: bytes = b"") -> Any:
        async def run() -> None:
            await call(stack, method, path, headers, body)

        return run

    def two(first: Any, second: Any) -> Any:
        async def run() -> None:
            await first()
            await second()

        return run

    set_plain = step(plain, "POST", "/set", jar)
    cases = [
        (
            "POST + redirected GET: set, plain page / set + flash, page pops it",
            two(set_plain, step(plain, "GET", "/plain", jar)),
            two(step(plain, "POST", "/set-flash", jar), step(plain, "GET", "/show", jar)),
        ),
        ("set + header check", set_plain, step(checked, "POST", "/set", header)),
        (
            "set + form check (1 KB form)",
            step(plain, "POST", "/set", form_headers, form),
            step(checked, "POST", "/set", form_headers, form),
        ),
        ("show, none kept", step(plain, "GET", "/plain", jar), step(plain, "GET", "/show", jar)),
        (
            "1 MiB upload, checked",
            step(plain, "POST", "/upload", multi_headers, multipart),
            step(checked, "POST", "/upload", multi_headers, multipart),
        ),
    ]
    print(f"driver: {'memory' if args.url is None else 'SQL'}, rounds: {args.rounds}")
    print("| case | baseline | with | ratio | storage calls (baseline → with) |")
    print("|---|---:|---:|---:|---|")
    for label, base, case in cases:
        driver.calls = 0
        await base()
        base_calls = driver.calls
        driver.calls = 0
        await case()
        case_calls = driver.calls
        await call(plain, "GET", "/show", jar, b"")  # no flashes pile up between rounds
        base_us, case_us = await paired(args.rounds, base, case)
        await call(plain, "GET", "/show", jar, b"")
        print(
            f"| {label} | {base_us:.1f} µs | {case_us:.1f} µs | {case_us / base_us:.2f} | "
            f"{base_calls} → {case_calls} |"
        )
    if hasattr(inner, "dispose"):
        await inner.dispose()


if __name__ == "__main__":
    asyncio.run(main())
