"""End-to-end HTTP benchmark: one app under uvicorn, wrk as the load, session stores taking turns.

    apt-get install -y wrk               # Debian's wrk, the load generator
    pip install -e '.[bench]'
    python benchmarks/e2e.py [--seconds 10] [--rounds 2] [--only a,b] [--routes read,write]
        [--json out.json]

Every contender serves the same Starlette app (`_e2e_app.py`; Litestar its own with the
same routes, `_e2e_litestar.py`) under uvicorn with one worker and no access log; only
the session store differs. wrk runs one thread with 16 connections, so on a 2-core
machine the app keeps a core of its own. Routes: `read` (a signed-in session of about
930 bytes, read and left unchanged), `write` (cart append + counter) over 16 sessions,
`write-one` (one session from all 16 connections) and `plain` (a page that does not touch
the session). Before each cell the visitors are signed in anew; after it the harness
reads their counters back: a write cell whose writes did not land, or any error or
non-2xx answer, fails the cell.

Each cell runs `--seconds` in all, split over `--rounds` rounds; each round every
contender takes its turn (each round started by another), so a slow spell of the machine
weighs on all alike. Figures: req/s, p50 and p99 (wrk's, the mean of the rounds), app CPU
per request (the uvicorn process) and database CPU per request (PostgreSQL: the app's
backends; MariaDB, Redis: the server process; SQLite and memory stores run in the app).

sqlsession uses its public SessionMiddleware with a driver URL, on a table of the
harness's own (migrated first, dropped after); the Redis contenders use their own db
number and key prefix, and only those keys are deleted after. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _e2e_probe as probe
from _common import migrate, normalized, unmigrate
from _e2e_client import HarnessError, Server, wrk_path
from _e2e_report import LABELS, ROUTE_LABELS, Cell, markdown

CONNECTIONS = 16
WARMUP_SECONDS = 1
ROUTES = {  # name: (method, path, sessions)
    "read": ("GET", "/read", CONNECTIONS),
    "write": ("POST", "/write", CONNECTIONS),
    "write-one": ("POST", "/write", 1),
    "plain": ("GET", "/plain", CONNECTIONS),
}
# In the order they take their turns in the first round.
CONTENDERS = [
    "none",
    "cookie",
    "starsessions-redis",
    "starsessions-memory",
    "litestar-redis",
    "sqlsession-postgres",
    "sqlsession-mariadb",
    "sqlsession-sqlite",
    "sqlsession-memory",
]
DATABASE = {  # the server whose CPU a contender's requests cost
    "starsessions-redis": "redis",
    "litestar-redis": "redis",
    "sqlsession-postgres": "postgres",
    "sqlsession-mariadb": "mariadb",
}
# A write cell fails when fewer of its requests than this show in the counters. Requests
# on one session that overlap lose updates (each contender's last write wins), which
# is rare with a session per connection and the rule with 16 connections on one.
MIN_LANDED = {"write": 0.5, "write-one": 0.01}


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.table = f"e2e_bench_{os.getpid()}"
        self.tmp = Path(tempfile.mkdtemp(prefix="sqlsession-e2e-"))
        self.sqlite_url = f"sqlite:///{self.tmp / 'sessions.db'}"
        self.users = itertools.count(1)
        self.cells: dict[str, dict[str, Cell]] = {
            c: {r: Cell() for r in args.routes} for c in args.only
        }
        self.raw: list[dict[str, Any]] = []

    # -- set up and tear down ---------------------------------------------------------

    def sql_url(self, contender: str) -> str | None:
        return {
            "sqlsession-postgres": self.args.postgres_url,
            "sqlsession-mariadb": self.args.mysql_url,
            "sqlsession-sqlite": self.sqlite_url,
        }.get(contender)

    def setup(self) -> None:
        wrk_path()
        if any(DATABASE.get(c) == "redis" for c in self.args.only):
            asyncio.run(self.ping_redis())
        for contender in self.args.only:
            url = self.sql_url(contender)
            if url:
                try:
                    asyncio.run(migrate(url, self.table))
                except Exception as exc:
                    raise HarnessError(f"{contender}: cannot migrate {self.table}: {exc}") from exc

    async def ping_redis(self) -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(self.args.redis_url)
        try:
            await client.ping()
        except Exception as exc:
            raise HarnessError(
                f"Redis at {self.args.redis_url} does not answer ({exc}); "
                "leave the Redis contenders out with --only"
            ) from exc
        finally:
            await client.aclose()

    def teardown(self) -> None:
        # asyncmy logs MariaDB's note that DROP TABLE IF EXISTS found no version table
        # (the downgrade dropped it already): not news.
        logging.getLogger("asyncmy").setLevel(logging.ERROR)
        for contender in self.args.only:
            url = self.sql_url(contender)
            if url and contender != "sqlsession-sqlite":
                try:
                    asyncio.run(unmigrate(normalized(url), self.table))
                except Exception as exc:
                    print(f"could not drop {self.table} on {contender}: {exc}", file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if any(DATABASE.get(c) == "redis" for c in self.args.only):
            try:
                asyncio.run(self.forget_redis_keys())
            except Exception as exc:
                print(f"could not delete the Redis keys: {exc}", file=sys.stderr)

    async def forget_redis_keys(self) -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(self.args.redis_url)
        try:
            async for key in client.scan_iter(match=self.args.redis_prefix + "*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()

    def server_options(self, contender: str) -> list[str]:
        options = ["--redis-url", self.args.redis_url, "--redis-prefix", self.args.redis_prefix]
        url = self.sql_url(contender)
        if url:
            options += ["--sql-url", url, "--table", self.table]
        return options

    # -- the run ----------------------------------------------------------------------

    def run(self) -> None:
        names = self.args.only
        seconds = max(1, round(self.args.seconds / self.args.rounds))
        for round_no in range(self.args.rounds):
            shift = round_no * len(names) // self.args.rounds
            for contender in names[shift:] + names[:shift]:
                self.run_contender(round_no, contender, seconds)

    def run_contender(self, round_no: int, contender: str, seconds: int) -> None:
        server = Server(contender, self.server_options(contender))
        try:
            server.wait_ready()
            # Warm up (pools filled, statements prepared) on writes, not measured.
            cookies = [server.sign_in(next(self.users)) for _ in range(CONNECTIONS)]
            server.wrk("POST", "/write", cookies, WARMUP_SECONDS, CONNECTIONS)
            for route in self.args.routes:
                self.run_cell(server, round_no, route, seconds)
        finally:
            server.stop()

    def run_cell(self, server: Server, round_no: int, route: str, seconds: int) -> None:
        method, path, sessions = ROUTES[route]
        contender = server.contender
        cookies = [server.sign_in(next(self.users)) for _ in range(sessions)]
        before = [server.read(cookie) for cookie in cookies]
        db = probe.DatabaseProbe(DATABASE.get(contender))
        app0, db0 = probe.cpu_seconds(server.ps), db.snapshot(server.ps)
        result = server.wrk(method, path, cookies, seconds, CONNECTIONS)
        app1, db1 = probe.cpu_seconds(server.ps), db.snapshot(server.ps)
        after = [server.read(cookie) for cookie in cookies]

        cell = self.cells[contender][route]
        failures = [f"{n} {kind} errors" for kind, n in result.errors.items() if n]
        landed = None
        if method == "POST":
            landed, failure = self.check_writes(server, route, cookies, before, after, result)
            failures += [failure] if failure else []
        elif after != before:
            failures.append(f"a read changed the session: {before[0]} -> {after[0]}")
        cell.requests += result.requests
        cell.seconds += result.seconds
        cell.app_cpu += app1 - app0
        cell.db_cpu += probe.delta(db0, db1)
        cell.p50_ms.append(result.p50_ms)
        cell.p99_ms.append(result.p99_ms)
        if landed is not None:
            cell.landed.append(landed)
        cell.failures += failures
        self.raw.append(
            {
                "round": round_no,
                "contender": contender,
                "route": route,
                "requests": result.requests,
                "seconds": result.seconds,
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "app_cpu_s": app1 - app0,
                "db_cpu_s": probe.delta(db0, db1),
                "writes_landed": landed,
                "failures": failures,
            }
        )
        state = "FAILED: " + "; ".join(failures) if failures else "ok"
        print(
            f"  round {round_no + 1} {contender:20} {route:9} "
            f"{result.requests / result.seconds:8,.0f} req/s  p99 {result.p99_ms:6.1f} ms  {state}",
            file=sys.stderr,
            flush=True,
        )

    def check_writes(
        self,
        server: Server,
        route: str,
        cookies: list[str],
        before: list[tuple[str, int, int]],
        after: list[tuple[str, int, int]],
        result: Any,
    ) -> tuple[float | None, str | None]:
        """The share of the cell's writes that its counters show, and a failure or None."""
        if server.contender == "cookie":
            # The session travels in the cookie, which wrk does not keep: check that a
            # write answers with the session counted one up instead.
            status, body, set_cookies = server.request("POST", "/write", cookies[0])
            if status != 200 or body != str(before[0][2] + 1) or not set_cookies:
                return None, f"a cookie write answered {status} {body!r}"
            return None, None
        advanced = sum(a[2] - b[2] for a, b in zip(after, before, strict=True))
        landed = advanced / result.requests if result.requests else 0.0
        if any(a[2] <= b[2] for a, b in zip(after, before, strict=True)):
            return landed, "a session's counter did not advance"
        if landed < MIN_LANDED[route]:
            return landed, f"only {landed:.1%} of the writes show in the counters"
        return landed, None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="End-to-end HTTP benchmark of session stores (uvicorn + wrk)."
    )
    parser.add_argument("--seconds", type=float, default=10, help="per cell, all rounds")
    parser.add_argument("--rounds", type=int, default=2, help="turns each contender takes")
    parser.add_argument("--only", default=",".join(CONTENDERS), help="contenders, by comma")
    parser.add_argument("--routes", default=",".join(ROUTES), help="routes, by comma")
    parser.add_argument("--json", metavar="PATH", help="write every figure there as JSON")
    parser.add_argument("--postgres-url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--redis-prefix", default="sqlsession-e2e:")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    args.routes = [name.strip() for name in args.routes.split(",") if name.strip()]
    for name in args.only:
        if name not in CONTENDERS:
            parser.error(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")
    for name in args.routes:
        if name not in ROUTES:
            parser.error(f"unknown route {name!r}; choose from {', '.join(ROUTES)}")
    if args.rounds < 1 or args.seconds < args.rounds:
        parser.error("--rounds must be at least 1 and --seconds at least --rounds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness = Harness(args)
    seconds = max(1, round(args.seconds / args.rounds))
    started, load_before = time.monotonic(), os.getloadavg()[0]
    try:
        harness.setup()
        harness.run()
    except HarnessError as exc:
        print(f"e2e: {exc}", file=sys.stderr)
        return 2
    finally:
        harness.teardown()
    elapsed = time.monotonic() - started
    failed = [
        f"{c} {r}: {'; '.join(cell.failures)}"
        for c, routes in harness.cells.items()
        for r, cell in routes.items()
        if cell.failures
    ]
    # What uvicorn's "auto" settings pick: uvloop and httptools when they are installed.
    stack = ", ".join(
        name if importlib.util.find_spec(name) else fallback
        for name, fallback in (("uvloop", "asyncio"), ("httptools", "h11"))
    )
    given = argv if argv is not None else sys.argv[1:]
    if "--json" in given:  # where the figures go is no part of how they were measured
        at = given.index("--json")
        given = given[:at] + given[at + 2 :]
    command = " ".join(["python benchmarks/e2e.py", *given])
    plural = "s" if args.rounds > 1 else ""
    print(
        f"One run of `{command.strip()}` on {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}: uvicorn ({stack}) "
        f"with one worker and no access log; wrk with 1 thread (so the app keeps a core) and "
        f"{CONNECTIONS} connections; {args.rounds} round{plural} of {seconds} s per cell, "
        f"{elapsed / 60:.1f} minutes in all. Load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (other work on the machine slows every "
        f"contender; CPU per request is the steadier figure). Ratios against starsessions + Redis "
        f"(sqlsession memory: against starsessions in memory).\n"
    )
    print(markdown(harness.cells, args.routes))
    if failed:
        print("\nFailed cells:\n" + "\n".join(failed))
    if args.json:
        data = {
            "settings": {
                "connections": CONNECTIONS,
                "wrk_threads": 1,
                "rounds": args.rounds,
                "seconds_per_round": seconds,
                "contenders": args.only,
                "routes": args.routes,
                "labels": {**LABELS, **ROUTE_LABELS},
                "elapsed_s": round(elapsed, 1),
            },
            "results": {
                c: {r: cell.summary() for r, cell in routes.items()}
                for c, routes in harness.cells.items()
            },
            "cells": harness.raw,
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
