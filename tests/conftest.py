"""Shared fixtures: a movable clock, migrated SQLite files, PostgreSQL and MariaDB databases.

PostgreSQL comes from ``SQLSESSION_TEST_POSTGRES_URL``, MySQL/MariaDB from
``SQLSESSION_TEST_MYSQL_URL``. Without one, its tests skip with a reason; with
``SQLSESSION_TEST_NO_SKIP=1`` (set by ``.ci/run``) every skip is turned into a failure,
so CI cannot go green without the server tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver

# Re-exported: the tests import it from here.
from sqlsession.testing import FakeClock as FakeClock

# The venv's scripts (sqlsession, alembic), next to the interpreter running the tests.
BIN = Path(sys.executable).parent
POSTGRES_ENV = "SQLSESSION_TEST_POSTGRES_URL"
MYSQL_ENV = "SQLSESSION_TEST_MYSQL_URL"
NO_SKIP_ENV = "SQLSESSION_TEST_NO_SKIP"
BACKENDS = ["memory", "sqlite", "postgres", "mysql"]
SQL_BACKENDS = ["sqlite", "postgres", "mysql"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def migrate(url: str, table: str = "sqlsession", schema: str | None = None) -> None:
    """Run our migrations to head, as ``sqlsession migrate`` does."""
    from sqlsession import _migrate

    _migrate.upgrade(url, table=table, schema=schema)


# -- SQLite ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Migrating once and copying the file keeps each test's fresh database cheap.
    path = tmp_path_factory.mktemp("template") / "sessions.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    """A fresh SQLite file with the table ``sqlsession`` migrated, as a URL."""
    path = tmp_path / "sessions.db"
    shutil.copy(_sqlite_template, path)
    return f"sqlite:///{path}"


# -- PostgreSQL --------------------------------------------------------------------------


def postgres_base_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"set {POSTGRES_ENV}=postgresql://user@host/db to run PostgreSQL tests")
    return url


def admin_sql(url: str, statement: str) -> None:
    """Run one statement on PostgreSQL with raw asyncpg, from sync or async code."""
    import asyncpg

    async def run() -> None:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    # A fixture may be set up from inside a running event loop (getfixturevalue in an
    # async fixture), where asyncio.run is not allowed: use a thread of its own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of our own for this test session, dropped at the end, as a URL."""
    base = postgres_base_url()
    name = f"sqlsession_test_{uuid.uuid4().hex[:12]}"
    admin_sql(base, f'CREATE DATABASE "{name}"')
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    yield url
    admin_sql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The test session's PostgreSQL database with an empty, migrated ``sqlsession`` table."""
    admin_sql(postgres_database, "DELETE FROM sqlsession")
    return postgres_database


# -- MySQL / MariaDB ---------------------------------------------------------------------


def mysql_base_url() -> str:
    url = os.environ.get(MYSQL_ENV)
    if not url:
        pytest.skip(f"set {MYSQL_ENV}=mysql://user@host/db to run MySQL/MariaDB tests")
    return url


def admin_mysql(url: str, *statements: str) -> None:
    """Run statements on MySQL/MariaDB with raw asyncmy, from sync or async code."""
    import asyncmy

    async def run() -> None:
        parts = make_url(url)
        conn = await asyncmy.connect(
            host=parts.host or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            database=parts.database,
            autocommit=True,
        )
        try:
            async with conn.cursor() as cursor:
                for statement in statements:
                    await cursor.execute(statement)
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture(scope="session")
def mysql_database() -> Iterator[str]:
    """A database of our own on the MySQL/MariaDB server, dropped at the end, as a URL."""
    base = mysql_base_url()
    name = f"sqlsession_test_{uuid.uuid4().hex[:12]}"
    admin_mysql(base, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    yield url
    admin_mysql(base, f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def mysql_url(mysql_database: str) -> str:
    """The test session's MySQL/MariaDB database with an empty, migrated table."""
    admin_mysql(mysql_database, "DELETE FROM sqlsession")
    return mysql_database


def table_names(url: str) -> set[str]:
    """The tables of the database `url` names (its default schema), from sync test code."""
    from sqlalchemy import inspect
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from sqlsession._url import resolve_url

    async def read() -> set[str]:
        engine = create_async_engine(resolve_url(url), poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


def admin(url: str, *statements: str) -> None:
    """Run statements on the server database of `url` (PostgreSQL or MySQL)."""
    if url.startswith(("mysql", "mariadb")):
        admin_mysql(url, *statements)
    else:
        admin_sql(url, ";".join(statements))


# -- drivers -----------------------------------------------------------------------------

DriverFactory = Callable[..., Awaitable[Any]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_driver(
    backend: str, request: pytest.FixtureRequest, clock: FakeClock
) -> AsyncIterator[DriverFactory]:
    """Build drivers of the parametrised backend, all on one database and one clock."""
    url = None
    if backend != "memory":
        url = request.getfixturevalue(f"{backend}_url")
    made: list[Any] = []

    async def make(**options: Any) -> Any:
        options.setdefault("clock", clock)
        driver: Any = MemoryDriver(**options) if url is None else SQLDriver(url, **options)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        await driver.dispose()


@pytest.fixture
async def driver(make_driver: DriverFactory) -> Any:
    """A driver of the parametrised backend with no default ttl."""
    return await make_driver()


# -- CI: a skip is a failure -------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if os.environ.get(NO_SKIP_ENV) == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped, but {NO_SKIP_ENV}=1 forbids skips: {reason}"
    return report


def run_script(
    name: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one of the venv's console scripts as a user would, without our SQLSESSION_URL.

    `env` adds to (or overrides) the inherited environment.
    """
    environ = {k: v for k, v in os.environ.items() if k != "SQLSESSION_URL"}
    environ.update(env or {})
    return subprocess.run(
        [str(BIN / name), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
