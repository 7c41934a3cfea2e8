"""The cost of metrics: per driver operation and per request, OpenTelemetry on or absent.

    python benchmarks/metrics_cost.py --rounds 3

Three configurations take turns, each in a subprocess of its own (a meter provider is
set once per process):
    absent  opentelemetry is not importable (an import hook blocks it): plain methods;
    api     opentelemetry-api installed, no SDK configured: the no-op meter;
    sdk     the SDK's MeterProvider with a reader (collected once, at the end).
Each measures, sequentially on one task: `get_item` on the memory driver and on a
SQLite file; a read request (the session loaded) and a write request (a counter
incremented) through sqlsession's ASGI middleware, called in process without HTTP, on
both drivers. Medians per operation over the rounds; ratios against ``absent``. It is
not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIGS = ("absent", "api", "sdk")
BLOCK = """
import sys

class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(name)
        return None

sys.meta_path.insert(0, _Block())
"""


async def _request(app: Any, path: str, cookie: str | None) -> str | None:
    """One GET through the ASGI app; the session cookie it set (or None)."""
    headers = [(b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "server": ("testserver", 443),
        "client": ("127.0.0.1", 1234),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    assert start["status"] == 200, start
    for name, value in start.get("headers", []):
        if name == b"set-cookie":
            return str(value.decode().split(";", 1)[0])
    return None


def _app(driver: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from sqlsession.web import SessionMiddleware

    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("n")))

    async def write(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(str(request.session["n"]))

    app = Starlette(routes=[Route("/read", read), Route("/write", write)])
    return SessionMiddleware(app, driver=driver)


async def _per_op(call: Any, n: int) -> float:
    """Microseconds per awaited call, over `n` calls."""
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - started) / n * 1e6


async def measure(ops: int, requests: int) -> dict[str, float]:
    from sqlsession import _migrate
    from sqlsession.drivers.memory import MemoryDriver
    from sqlsession.drivers.sql import SQLDriver

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'metrics.db'}"
        _migrate.upgrade(url)
        for label, driver, n in (
            ("memory", MemoryDriver(max=10_000), ops),
            ("sqlite", SQLDriver(url), ops // 5),
        ):
            await driver.set_item("k", {"cart": [1, 2, 3]})
            await _per_op(lambda d=driver: d.get_item("k"), n // 10)  # warm up
            out[f"{label} get_item"] = await _per_op(lambda d=driver: d.get_item("k"), n)
            app = _app(driver)
            cookie = await _request(app, "/write", None)
            count = requests if label == "memory" else requests // 3
            for route in ("read", "write"):
                path = f"/{route}"
                await _per_op(lambda a=app, p=path, c=cookie: _request(a, p, c), count // 10)
                out[f"{label} {route} request"] = await _per_op(
                    lambda a=app, p=path, c=cookie: _request(a, p, c), count
                )
            await driver.dispose()
    return out


def child(config: str, ops: int, requests: int) -> None:
    if config == "sdk":
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    result = asyncio.run(measure(ops, requests))
    if config == "sdk":
        assert reader.get_metrics_data() is not None  # something was recorded
    print(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=20_000, help="get_item calls (memory)")
    parser.add_argument("--requests", type=int, default=3_000, help="requests (memory)")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.ops, args.requests)
        return 0
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    here = Path(__file__).resolve()
    for _ in range(args.rounds):
        for config in CONFIGS:
            argv = [str(here), "--child", config, "--ops", str(args.ops)]
            argv += ["--requests", str(args.requests)]
            run = f"import runpy, sys; sys.argv = {argv!r}; "
            run += f"runpy.run_path({str(here)!r}, run_name='__main__')"
            code = (BLOCK if config == "absent" else "") + run
            env = {**os.environ, "PYTHONPATH": str(here.parent.parent)}
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            )
            runs[config].append(json.loads(done.stdout.strip().splitlines()[-1]))
    names = list(runs["absent"][0])
    medians = {c: {n: statistics.median(r[n] for r in runs[c]) for n in names} for c in CONFIGS}
    print(
        f"{'us per call (median of ' + str(args.rounds) + ')':32}"
        + "".join(f"{c:>10}" for c in CONFIGS)
        + "   api/absent  sdk/absent"
    )
    for name in names:
        row = medians["absent"][name], medians["api"][name], medians["sdk"][name]
        print(
            f"{name:32}"
            + "".join(f"{v:10.1f}" for v in row)
            + f"{row[1] / row[0]:12.2f}x{row[2] / row[0]:11.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
