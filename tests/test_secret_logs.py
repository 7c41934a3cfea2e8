"""No session id or value reaches a log record when saving a session fails for real.

The database refuses the write (a trigger that raises, as a read-only table or a server
after failover would); every record of every logger is captured at DEBUG and formatted
with its traceback, chained causes included, as a logging handler would print it.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sqlsession.drivers.sql import SQLDriver
from sqlsession.web import SessionMiddleware
from tests.conftest import SQL_BACKENDS, FakeClock, admin, migrate

EMAIL = "alice.9b@example.com"
TOKEN = "tok-" + uuid.uuid4().hex
CART = "cart-item-" + uuid.uuid4().hex


class Capture(logging.Handler):
    """Every record, formatted with its traceback and chained causes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.texts.append(self.format(record))


@pytest.fixture
def capture() -> Iterator[Capture]:
    """Capture every logger at DEBUG, whatever levels earlier tests or configs set.

    SQLAlchemy sets its own logger to WARNING, and alembic's logging config (run by the
    migration tests) sets ``sqlalchemy.engine`` to WARNING: both are lowered here.
    """
    handler = Capture()
    root = logging.getLogger()
    names = ["sqlalchemy", "aiosqlite", "asyncpg", "asyncmy", "sqlsession"]
    loggers = [root, *(logging.getLogger(name) for name in names)]
    loggers += [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and logger.name.startswith(tuple(names))
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    root.addHandler(handler)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


async def sign_in(request: Request) -> Response:
    request.session["email"] = EMAIL
    request.session["token"] = TOKEN
    return PlainTextResponse("ok")


async def add(request: Request) -> Response:
    request.session["cart"] = [CART]
    return PlainTextResponse("ok")


REFUSED = "the session table is read-only"
REFUSED_PG = "session_size_cap"


def refuse_writes(backend: str, url: str, table: str) -> None:
    """Make the database refuse every INSERT and UPDATE on `table`."""
    if backend == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for event in ("INSERT", "UPDATE"):
                conn.execute(
                    f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END"
                )
    elif backend == "postgres":
        # A size cap a DBA might add: PostgreSQL's refusal quotes the whole row in its
        # DETAIL ("Failing row contains (...)"), which asyncpg's error text includes.
        admin(
            url,
            f"ALTER TABLE {table} ADD CONSTRAINT {REFUSED_PG} CHECK (length(value) < 20) NOT VALID",
        )
    else:
        admin(
            url,
            *(
                f"CREATE TRIGGER {table}_refuse_{event.lower()} BEFORE {event} ON {table} "
                f"FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{REFUSED}'"
                for event in ("INSERT", "UPDATE")
            ),
        )


@pytest.fixture(params=SQL_BACKENDS)
async def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str, str]]:
    """(backend, url, table): a migrated table of this test's own."""
    backend = str(request.param)
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
        table = "sqlsession"
        migrate(url)
        yield backend, url, table
        return
    url = request.getfixturevalue(f"{backend}_database")
    table = f"logs_{uuid.uuid4().hex[:12]}"
    migrate(url, table=table)
    yield backend, url, table
    admin(url, f"DROP TABLE {table}", f"DROP TABLE {table}_alembic_version")


def cookie_value(response: httpx.Response) -> str:
    header = response.headers["set-cookie"]
    return header.split(";", 1)[0].split("=", 1)[1]


async def test_a_failed_save_logs_no_id_and_no_value(
    database: tuple[str, str, str], capture: Capture, clock: FakeClock
) -> None:
    backend, url, table = database
    driver = SQLDriver(url, table=table, clock=clock)
    app = Starlette(
        routes=[Route("/sign-in", sign_in, methods=["POST"]), Route("/add", add, methods=["POST"])],
        middleware=[
            Middleware(
                SessionMiddleware,
                driver=driver,
                session_cookie="sid",
                https_only=False,
                clock=clock,
            )
        ],
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            signed_in = await http.post("/sign-in")
            assert signed_in.status_code == 200
            session_id = cookie_value(signed_in)
            refuse_writes(backend, url, table)
            # An existing session (the atomic merge) and a new one (the upsert).
            failed = await http.post("/add")
            http.cookies.clear()
            failed_new = await http.post("/sign-in")
    finally:
        await driver.dispose()
    assert (failed.status_code, failed_new.status_code) == (500, 500)
    errors = [r for r in capture.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, capture.texts
    assert all("Saving the session failed" in r.getMessage() for r in errors)
    assert all(r.exc_info for r in errors)
    logged = "\n".join(capture.texts)
    # The database's refusal is there, so the records say what went wrong ...
    assert (REFUSED_PG if backend == "postgres" else REFUSED) in logged
    # ... but nothing the session holds, nor its id, raw or as stored.
    # (PostgreSQL's DETAIL shows each column's first 64 characters: a prefix of the
    # stored key would be there; the log label is the first 12 hex digits.)
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    for secret in (EMAIL, TOKEN, CART, session_id, digest[:16]):
        assert secret not in logged, f"{secret!r} was logged"
    assert "Failing row" not in logged


async def test_statement_parameters_never_reach_dependency_logs(
    database: tuple[str, str, str], capture: Capture, clock: FakeClock
) -> None:
    # aiosqlite logs every call it runs at DEBUG, SQLAlchemy every statement at INFO
    # when its logger is enabled; neither may print a key or a value of ours.
    _, url, table = database
    key = "s:" + uuid.uuid4().hex
    async with SQLDriver(url, table=table, clock=clock) as driver:
        await driver.set_item(key, {"email": EMAIL})
        await driver.merge_item(key, set={"token": TOKEN})
        await driver.touch(key, ttl=60)
        assert await driver.get_item(key) == {"email": EMAIL, "token": TOKEN}
        assert await driver.get_keys(prefix=key) == [key]
        await driver.remove_item(key)
    logged = "\n".join(capture.texts)
    assert any(r.name.startswith("sqlalchemy.engine") for r in capture.records)
    for secret in (EMAIL, TOKEN, key):
        assert secret not in logged, f"{secret!r} was logged"
