"""The ``sqlsession`` command line: every command, exit code and error.

Most tests call `main` in-process (fast); the ones about signals, tracebacks and the
installed script run it as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from sqlsession._table import version_table_name
from sqlsession._url import resolve_url
from sqlsession.cli import main
from sqlsession.drivers.sql import SQLDriver
from tests.conftest import BIN, mysql_base_url, run_script, table_names

PG_ENV = "SQLSESSION_TEST_POSTGRES_URL"
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"


@dataclass
class Db:
    kind: str
    url: str
    table: str


@dataclass
class Run:
    code: int
    out: str
    err: str


def postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql://root@127.0.0.1/test)")
    return url


async def execute(url: str, *statements: str) -> None:
    engine = create_async_engine(resolve_url(url), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The default database is sqlsession.db in the working directory.
    monkeypatch.delenv("SQLSESSION_URL", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "mysql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """An unmigrated session table on a SQLite file or a test server database."""
    table = "t_" + uuid.uuid4().hex[:12]
    if request.param == "sqlite":
        yield Db("sqlite", f"sqlite:///{tmp_path / 'sessions.db'}", table)
        return
    url = postgres_url() if request.param == "postgresql" else mysql_base_url()
    try:
        yield Db(request.param, url, table)
    finally:
        # Both names are plain identifiers, which neither database needs quoted.
        asyncio.run(
            execute(
                url,
                f"DROP TABLE IF EXISTS {table}",
                f"DROP TABLE IF EXISTS {version_table_name(table)}",
            )
        )


Cli = Callable[..., Run]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Call `main` in-process and collect its exit code and output."""

    def run(*args: str) -> Run:
        code = main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def migrated(cli: Cli, db: Db) -> list[str]:
    """The --url/--table arguments of `db`, after migrating it."""
    args = ["--url", db.url, "--table", db.table]
    result = cli("migrate", *args)
    assert result.code == 0, result.err
    return args


def fill(db: Db) -> None:
    """Store a live dict, a stored None, and an item that expired an hour ago."""

    async def go() -> None:
        an_hour_ago = time.time() - 3600
        async with SQLDriver(db.url, table=db.table, clock=lambda: an_hour_ago) as past:
            await past.set_item("gone", {"old": True}, ttl=60)
        async with SQLDriver(db.url, table=db.table) as driver:
            await driver.set_item("cart", {"items": [1, 2], "user": "Zoë", "n": 2**70})
            await driver.set_item("nothing", None)

    asyncio.run(go())


NOTE = "sqlsession: using "


def one_line_error(run: Run, *phrases: str, note: bool = False) -> None:
    """Exit 3, one line of error on stderr; with `note`, after the line naming the database.

    `note` is for commands run without --url: they say which database they use first.
    """
    assert run.code == 3, run
    assert run.out == ""
    lines = run.err.splitlines(keepends=True)
    assert [line.startswith(NOTE) for line in lines] == [*([True] if note else []), False], run.err
    assert lines[-1].count("\n") == 1
    assert "Traceback" not in run.err
    for phrase in phrases:
        assert phrase in lines[-1]


def sqlsession(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_script("sqlsession", *args, env=env)


# -- migrate and downgrade -----------------------------------------------------------


def test_migrate_downgrade_and_migrate_again(cli: Cli, db: Db) -> None:
    run = cli
    args = ["--url", db.url, "--table", db.table]

    result = run("migrate", *args)
    assert result.code == 0, result.err
    assert result.out.startswith(f"Migrated the session table '{db.table}' in ")
    assert result.out.endswith("from base (no table) to 0001.\n")

    result = run("migrate", *args)
    assert (result.code, result.out.split(" is ")[1]) == (0, "already at migration 0001.\n")

    result = run("downgrade", "base", *args)
    assert result.code == 0, result.err
    assert result.out.endswith("from 0001 to base (no table).\n")
    assert not {db.table, version_table_name(db.table)} & table_names(db.url)

    result = run("migrate", "0001", *args)
    assert result.code == 0, result.err
    assert result.out.endswith("to 0001.\n")


def test_migrate_uses_sqlsession_url(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQLSESSION_URL", f"sqlite:///{tmp_path / 'from-env.db'}")
    result = cli("migrate")
    assert result.code == 0, result.err
    assert "from-env.db" in result.out
    assert (tmp_path / "from-env.db").exists()
    assert not (tmp_path / "sqlsession.db").exists()


def test_migrate_defaults_to_sqlsession_db_in_the_working_directory(
    cli: Cli, tmp_path: Path
) -> None:
    result = cli("migrate")
    assert result.code == 0, result.err
    assert "'sqlsession' in sqlite+aiosqlite:///sqlsession.db" in result.out
    assert (tmp_path / "sqlsession.db").exists()


@pytest.mark.postgres
def test_migrate_and_stats_with_a_postgresql_schema(cli: Cli) -> None:
    url = postgres_url()
    schema = "s_" + uuid.uuid4().hex[:12]
    asyncio.run(execute(url, f'CREATE SCHEMA "{schema}"'))
    try:
        args = ["--url", url, "--table", "web_sessions", "--schema", schema]
        result = cli("migrate", *args)
        assert result.code == 0, result.err
        assert f"'{schema}.web_sessions'" in result.out
        result = cli("stats", "--json", *args)
        assert (result.code, json.loads(result.out)) == (
            0,
            {"sessions": 0, "users": 0, "live": 0, "expired": 0},
        )
    finally:
        asyncio.run(execute(url, f'DROP SCHEMA "{schema}" CASCADE'))


# -- stats, get, cleanup -------------------------------------------------------------


def test_stats_counts_live_and_expired_items(cli: Cli, db: Db) -> None:
    args = migrated(cli, db)
    fill(db)
    result = cli("stats", *args)
    # The items here were stored through the driver, not by the web layer: live rows,
    # but no sessions and no users.
    assert (result.code, result.out) == (0, "sessions: 0\nusers: 0\nlive: 2\nexpired: 1\n")
    result = cli("stats", "--json", *args)
    assert result.code == 0
    assert json.loads(result.out) == {"sessions": 0, "users": 0, "live": 2, "expired": 1}


def test_get_prints_the_value_as_json(cli: Cli, db: Db) -> None:
    args = migrated(cli, db)
    fill(db)
    result = cli("get", "cart", *args)
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"items": [1, 2], "user": "Zoë", "n": 2**70}

    result = cli("get", "nothing", *args)
    assert (result.code, result.out) == (0, "null\n")


@pytest.mark.parametrize("key", ["gone", "never-stored"])
def test_get_of_an_absent_or_expired_key_exits_1(cli: Cli, db: Db, key: str) -> None:
    args = migrated(cli, db)
    fill(db)
    result = cli("get", key, *args)
    assert (result.code, result.out) == (1, "")
    assert f"no live item {key!r}" in result.err


def test_cleanup_deletes_expired_items_only(cli: Cli, db: Db) -> None:
    args = migrated(cli, db)
    fill(db)
    result = cli("cleanup", *args)
    assert result.code == 0, result.err
    assert result.out.startswith(f"Deleted 1 expired session from '{db.table}' in ")
    result = cli("stats", "--json", *args)
    assert json.loads(result.out) == {"sessions": 0, "users": 0, "live": 2, "expired": 0}
    result = cli("cleanup", "--batch-size", "1", *args)
    assert result.out.startswith("Deleted 0 expired sessions")


@pytest.mark.postgres
async def test_cleanup_says_another_cleanup_is_running(tmp_path: Path) -> None:
    url = postgres_url()
    table = "t_" + uuid.uuid4().hex[:12]
    args = ["--url", url, "--table", table]
    engine = create_async_engine(resolve_url(url), poolclass=NullPool)
    try:
        migrate = await asyncio.create_subprocess_exec(str(BIN / "sqlsession"), "migrate", *args)
        assert await migrate.wait() == 0
        # Hold the advisory lock a running cleanup of this table would hold.
        dialect: Any = SQLDriver(url, table=table)._dialect
        lock_key = dialect._lock_key
        async with engine.connect() as holder:
            await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key})
            cleanup = await asyncio.create_subprocess_exec(
                str(BIN / "sqlsession"),
                "cleanup",
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await cleanup.communicate()
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key})
        assert (cleanup.returncode, err) == (0, b"")
        assert b"Another cleanup of the session table" in out
        assert b"is running" in out
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
            await conn.execute(text(f'DROP TABLE IF EXISTS "{version_table_name(table)}"'))
        await engine.dispose()


# -- cleanup --every -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cleanup_every_stops_cleanly_on_a_signal(tmp_path: Path, signum: int) -> None:
    url = f"sqlite:///{tmp_path / 'every.db'}"
    assert main(["migrate", "--url", url]) == 0
    process = subprocess.Popen(
        [str(BIN / "sqlsession"), "cleanup", "--every", "0.1", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    # Two runs printed: the signal handlers are in place.
    first, second = process.stdout.readline(), process.stdout.readline()
    process.send_signal(signum)
    out, err = process.communicate(timeout=10)
    assert (process.returncode, err) == (0, "")
    assert first.startswith("Deleted 0 expired sessions from 'sqlsession'")
    assert second == first
    assert out.splitlines()[-1].startswith("Stopped cleaning up the session table 'sqlsession'")


@pytest.mark.slow
def test_cleanup_every_stops_a_long_run_promptly(tmp_path: Path) -> None:
    path = tmp_path / "backlog.db"
    url = f"sqlite:///{path}"
    assert main(["migrate", "--url", url]) == 0
    backlog = 100_000
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO sqlsession (key, value, expires_at) VALUES (?, '1', 1)",
            ((f"k{i}",) for i in range(backlog)),
        )
    conn.close()

    def remaining() -> int:
        with sqlite3.connect(path) as conn:
            count: int = conn.execute("SELECT count(*) FROM sqlsession").fetchone()[0]
        conn.close()
        return count

    process = subprocess.Popen(
        [str(BIN / "sqlsession"), "cleanup", "--every", "60", "--batch-size", "1", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while remaining() == backlog and time.monotonic() < deadline:
        time.sleep(0.02)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert (process.returncode, err) == (0, "")
    assert time.monotonic() - signalled < 5
    assert "Stopped cleaning up" in out
    assert 0 < remaining() < backlog  # stopped mid-run; committed batches stay deleted


@pytest.mark.slow
def test_cleanup_every_stops_with_3_when_the_table_is_missing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'every.db'}"
    assert main(["migrate", "--url", url]) == 0
    result = sqlsession("cleanup", "--every", "0.1", "--url", url, "--table", "missing")
    one_line_error(Run(result.returncode, result.stdout, result.stderr), "sqlsession migrate")


# -- errors and exit codes -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["downgrade"],
        ["get"],
        ["get", ""],
        ["stats", "--table", "bad-name"],
        ["stats", "--schema", "1abc"],
        ["cleanup", "--every", "0"],
        ["cleanup", "--every", "soon"],
        ["cleanup", "--batch-size", "0"],
        ["stats", "--bogus"],
    ],
)
def test_usage_errors_exit_2(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.code == 2
    assert "usage: sqlsession" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("args", [["--help"], ["migrate", "--help"], ["--version"]])
def test_help_and_version_exit_0(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.code == 0
    assert "sqlsession" in result.out


def test_version_names_the_distribution(cli: Cli) -> None:
    from sqlsession import __version__

    result = cli("--version")
    assert (result.code, result.out) == (0, f"sqlsession-store {__version__}\n")


def test_the_distribution_name_is_the_one_in_pyproject() -> None:
    import importlib.metadata
    import re

    from sqlsession import __version__
    from sqlsession._dist import DISTRIBUTION

    # tomllib is 3.11+; the project's one name line is enough here.
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert re.findall(r'^name = "(.*)"$', pyproject, re.MULTILINE) == [DISTRIBUTION]
    assert importlib.metadata.version(DISTRIBUTION) == __version__


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (["stats", "--url", "mssql://app@db/app"], ["Unsupported database URL scheme 'mssql'"]),
        (["get", "k", "--url", "sqlite:sessions.db"], ["Database URL must look like"]),
        (["get", "k", "--url", "sqlite://sessions.db"], ["three slashes"]),
        (["stats", "--url", UNREACHABLE], ["Cannot reach", "127.0.0.1:1"]),
        (["stats", "--url", "mysql://root@127.0.0.1:1/x"], ["Cannot reach", "127.0.0.1:1"]),
        (["migrate", "--url", "mysql://root@127.0.0.1:1/x"], ["Cannot reach", "127.0.0.1:1"]),
        (["stats", "--url", "mysql://root@127.0.0.1/x", "--schema", "s"], ["PostgreSQL option"]),
        (["migrate", "--url", UNREACHABLE], ["Cannot reach", "127.0.0.1:1"]),
        (["cleanup", "--url", UNREACHABLE], ["Cannot reach"]),
        (["stats", "--url", "sqlite:///absent.db"], ["does not exist", "sqlsession migrate"]),
        (["migrate", "nope"], ["Unknown migration revision 'nope'"]),
        (["migrate", "--url", "sqlite:///no/such/dir/x.db"], ["directory", "does not exist"]),
        (["stats", "--schema", "public"], ["PostgreSQL option"]),
        (["migrate", "--schema", "public"], ["PostgreSQL option"]),
    ],
)
def test_failures_exit_3_with_one_line(cli: Cli, args: list[str], phrases: list[str]) -> None:
    one_line_error(cli(*args), *phrases, note="--url" not in args)


def test_a_missing_table_exits_3_and_says_to_migrate(cli: Cli, db: Db) -> None:
    migrated(cli, db)
    for command in (["stats"], ["get", "k"], ["cleanup"]):
        result = cli(*command, "--url", db.url, "--table", db.table + "_x")
        one_line_error(result, "sqlsession migrate", f"--table {db.table}_x")


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_password_is_hidden_in_errors(cli: Cli, scheme: str) -> None:
    result = cli("stats", "--url", f"{scheme}://app:s3cret@127.0.0.1:1/app")
    one_line_error(result, "app:***@127.0.0.1:1")
    assert "s3cret" not in result.err


def test_a_password_in_the_query_is_hidden_too(cli: Cli) -> None:
    result = cli("stats", "--url", "postgresql://app@127.0.0.1:1/app?password=s3cret&ssl=disable")
    one_line_error(result, "?password=***&ssl=disable")
    assert "s3cret" not in result.err


def test_mysqls_passwd_spelling_is_hidden_too() -> None:
    from sqlsession._url import redact_url

    assert (
        redact_url("mysql://root@db/app?passwd=s3cret&x=1") == "mysql://root@db/app?passwd=***&x=1"
    )


# -- which database ------------------------------------------------------------------


def test_without_url_the_default_database_is_named_on_stderr(cli: Cli, tmp_path: Path) -> None:
    result = cli("stats")
    lines = result.err.splitlines()
    assert lines[0] == (
        f"sqlsession: using sqlite:///{tmp_path / 'sqlsession.db'} (no --url and no SQLSESSION_URL)"
    )
    # The error says that no URL was given and where SQLSESSION_URL comes in, rather than
    # only suggesting to create the file.
    one_line_error(result, "No database URL was given", "Set SQLSESSION_URL", note=True)
    assert not (tmp_path / "sqlsession.db").exists()


def test_a_url_from_the_environment_is_named_redacted(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQLSESSION_URL", "postgresql://app:s3cret@127.0.0.1:1/app")
    result = cli("stats", "--json")
    assert result.err.splitlines()[0] == (
        "sqlsession: using postgresql://app:***@127.0.0.1:1/app (from SQLSESSION_URL)"
    )
    assert "s3cret" not in result.err
    monkeypatch.setenv("SQLSESSION_URL", f"sqlite:///{tmp_path / 'absent.db'}")
    result = cli("stats")
    one_line_error(result, "(from $SQLSESSION_URL) does not exist", "sqlsession migrate", note=True)


def test_a_given_url_or_quiet_prints_no_note(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("migrate", "--url", url)
    assert (result.code, result.err) == (0, "")
    result = cli("migrate", "-q")
    assert (result.code, result.out, result.err) == (0, "", "")
    result = cli("stats", "--quiet", "--json")
    assert result.err == ""
    assert json.loads(result.out)["live"] == 0


def test_the_alembic_command_names_the_database_too(cli: Cli, tmp_path: Path) -> None:
    result = cli("alembic", "history")
    assert result.code == 0, result.err
    assert result.err.startswith(
        f"sqlsession: using sqlite:///{tmp_path / 'sqlsession.db'} (no --url and no SQLSESSION_URL)"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["stats", "--url", "mssql://x/y"], "Unsupported database URL scheme"),
        (["migrate", "--url", UNREACHABLE], "Cannot reach"),
        (["get", "k", "--table", "missing"], "sqlsession migrate"),
    ],
)
def test_the_installed_script_prints_one_line_and_no_traceback(
    tmp_path: Path, args: list[str], phrase: str
) -> None:
    assert main(["migrate", "--url", f"sqlite:///{tmp_path / 'sqlsession.db'}"]) == 0
    result = run_script("sqlsession", *args, cwd=tmp_path)
    one_line_error(
        Run(result.returncode, result.stdout, result.stderr), phrase, note="--url" not in args
    )


@pytest.mark.slow
def test_python_m_sqlsession_and_a_cheap_import() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sqlsession", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "migrate" in result.stdout
    check = "import sys, sqlsession.cli; assert 'sqlalchemy' not in sys.modules, 'heavy import'"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
