"""The built wheel works as users install it, from an empty directory.

``sqlsession migrate``, ``sqlsession alembic ...`` and ``alembic -c "$(sqlsession
alembic-ini)"`` migrate with the scripts inside the wheel; ``show``, ``list`` and
``delete`` read sessions the wheel's web layer wrote; an application's own alembic
autogenerate keeps sqlsession's tables with the wheel's ``sqlsession.alembic`` filter; a
third party's tests subclass the wheel's ``sqlsession.testing`` contract classes and use
its pytest plugin's fixtures.

The wheel is built from this checkout and installed, without its dependencies, into a
new virtual environment. The dependencies (SQLAlchemy, alembic, aiosqlite) are lent
from the test environment by a ``.pth`` line, so the test needs no network; that line
does not run the test environment's own ``.pth`` files, so the editable install of
sqlsession stays invisible and only the wheel's copy can be imported.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import admin_mysql, admin_sql, postgres_base_url, table_names

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # Nothing of the checkout may leak in through the environment.
        env={"PATH": "/usr/bin:/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result


@dataclass
class Installed:
    """A venv with only the built wheel installed, and an empty working directory."""

    sqlsession: Path
    empty: Path
    python: Path
    site: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp_path = tmp_path_factory.mktemp("wheel")
    dist = tmp_path / "dist"
    # Build with the test environment's hatchling when it has one: no download needed.
    offline = ["--no-isolation"] if importlib.util.find_spec("hatchling") else []
    run(sys.executable, "-m", "build", "--wheel", *offline, "--outdir", dist, ROOT)
    # The distribution is sqlsession-store; wheel names spell it with an underscore.
    (wheel,) = dist.glob("sqlsession_store-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "sqlsession/_migrations/env.py",
        "sqlsession/_migrations/script.py.mako",
        "sqlsession/_migrations/versions/0001_create_session_table.py",
        "sqlsession/cli.py",
        "sqlsession/drivers/sql/dialects/mysql.py",
        "sqlsession/drivers/sql/dialects/postgresql.py",
        "sqlsession/drivers/sql/dialects/sqlite.py",
        "sqlsession/web/asgi.py",
        "sqlsession/web/_inspect.py",
        "sqlsession/alembic.ini",
        "sqlsession/alembic.py",
        "sqlsession/_alembic_cli.py",
        "sqlsession/_pytest_plugin.py",
        "sqlsession/testing/__init__.py",
        "sqlsession/testing/_contract.py",
    } <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    dist_info = wheel.name.split("-py3")[0] + ".dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "\nName: sqlsession-store\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata
    assert "\nProvides-Extra: testing\n" in metadata
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "[pytest11]\nsqlsession = sqlsession._pytest_plugin\n" in entry_points

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel
    )
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout
    (Path(site.strip()) / "lend_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    where = run(
        python,
        "-c",
        "import sqlsession, sqlsession._migrate as m; print(sqlsession.__file__); "
        "print(m.script_location())",
        cwd=empty,
    ).stdout.split()
    assert where == [
        str(Path(site.strip()) / "sqlsession" / "__init__.py"),
        str(Path(site.strip()) / "sqlsession" / "_migrations"),
    ]

    return Installed(venv / "bin" / "sqlsession", empty, python, Path(site.strip()))


@pytest.mark.slow
def test_migrate_from_an_installed_wheel_in_an_empty_directory(installed: Installed) -> None:
    sqlsession, empty = installed.sqlsession, installed.empty
    result = run(sqlsession, "migrate", "--url", "sqlite:///x.db", cwd=empty)
    assert "from base (no table) to 0001" in result.stdout
    assert sorted(path.name for path in empty.iterdir() if not path.name.startswith("x.db-")) == [
        "x.db"
    ]
    with sqlite3.connect(empty / "x.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        version = conn.execute("SELECT version_num FROM sqlsession_alembic_version").fetchall()
    conn.close()
    assert {"sqlsession", "sqlsession_alembic_version", "sqlsession_expires_at_idx"} <= tables
    assert version == [("0001",)]

    stats = run(sqlsession, "stats", "--json", "--url", "sqlite:///x.db", cwd=empty).stdout
    assert json.loads(stats) == {"sessions": 0, "users": 0, "live": 0, "expired": 0}


@pytest.mark.slow
def test_migrate_mysql_from_an_installed_wheel(installed: Installed, mysql_database: str) -> None:
    table = "w_" + uuid.uuid4().hex[:12]
    args = ["--url", mysql_database, "--table", table]
    try:
        result = run(installed.sqlsession, "migrate", *args, cwd=installed.empty)
        assert "from base (no table) to 0001" in result.stdout
        stats = run(installed.sqlsession, "stats", "--json", *args, cwd=installed.empty).stdout
        assert json.loads(stats) == {"sessions": 0, "users": 0, "live": 0, "expired": 0}
        result = run(installed.sqlsession, "downgrade", "base", *args, cwd=installed.empty)
        assert "from 0001 to base (no table)" in result.stdout
    finally:
        admin_mysql(
            mysql_database,
            f"DROP TABLE IF EXISTS {table}",
            f"DROP TABLE IF EXISTS {table}_alembic_version",
        )


def fresh(tmp_path: Path, name: str = "work") -> Path:
    """An empty directory of the test's own (the module's `empty` is shared)."""
    folder = tmp_path / name
    folder.mkdir()
    return folder


def tables_of(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        found = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    return found


@pytest.mark.slow
def test_version_names_the_distribution(installed: Installed) -> None:
    result = run(installed.sqlsession, "--version", cwd=installed.empty)
    assert result.stdout == "sqlsession-store 0.1.0\n"


@pytest.mark.slow
def test_sqlsession_alembic_from_the_wheel_in_an_empty_directory(
    installed: Installed, tmp_path: Path
) -> None:
    work = fresh(tmp_path)
    url = ["--url", "sqlite:///w.db"]

    result = run(installed.sqlsession, "alembic", *url, "upgrade", "head", cwd=work)
    assert "Running upgrade  -> 0001" in result.stderr  # alembic's own log
    assert "sqlsession: using" not in result.stderr  # --url was given
    assert tables_of(work / "w.db") >= {"sqlsession", "sqlsession_alembic_version"}

    result = run(installed.sqlsession, "alembic", "current", *url, cwd=work)
    assert result.stdout == "0001 (head)\n"
    result = run(installed.sqlsession, "alembic", "history", cwd=work)
    assert "<base> -> 0001 (head), Create the session table" in result.stdout
    # No --url: the command says which database it would use.
    assert result.stderr.startswith(
        f"sqlsession: using sqlite:///{work / 'sqlsession.db'} (no --url and no SQLSESSION_URL)"
    )
    result = run(installed.sqlsession, "alembic", *url, "check", cwd=work)
    assert result.stdout == "No new upgrade operations detected.\n"

    run(installed.sqlsession, "alembic", *url, "downgrade", "base", cwd=work)
    assert tables_of(work / "w.db") == set()  # the version table went too
    assert sorted(p.name for p in work.iterdir() if not p.name.startswith("w.db-")) == ["w.db"]


@pytest.mark.slow
def test_sqlsession_alembic_from_the_wheel_on_postgresql(installed: Installed) -> None:
    url = postgres_base_url()
    table = "w_" + uuid.uuid4().hex[:12]
    args = ["--url", url, "--table", table]
    try:
        run(installed.sqlsession, "alembic", *args, "upgrade", "head", cwd=installed.empty)
        result = run(installed.sqlsession, "alembic", *args, "current", cwd=installed.empty)
        assert result.stdout == "0001 (head)\n"
        run(installed.sqlsession, "alembic", *args, "check", cwd=installed.empty)
        run(installed.sqlsession, "alembic", *args, "downgrade", "base", cwd=installed.empty)
        assert not {table, f"{table}_alembic_version"} & table_names(url)
    finally:
        admin_sql(
            url, f"DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_alembic_version"
        )


@pytest.mark.slow
def test_alembic_with_the_wheels_ini(installed: Installed, tmp_path: Path) -> None:
    ini = run(installed.sqlsession, "alembic-ini", cwd=installed.empty).stdout.strip()
    assert ini == str(installed.site / "sqlsession" / "alembic.ini")
    work = fresh(tmp_path)
    x = ["-x", "url=sqlite:///a.db"]
    run(installed.python, "-m", "alembic", "-c", ini, *x, "upgrade", "head", cwd=work)
    assert tables_of(work / "a.db") >= {"sqlsession", "sqlsession_alembic_version"}
    run(installed.python, "-m", "alembic", "-c", ini, *x, "downgrade", "base", cwd=work)
    assert tables_of(work / "a.db") == set()


MAKE_SESSIONS = """
import asyncio, json
from sqlsession.drivers.sql import SQLDriver
from sqlsession.web import SessionStore

async def main():
    async with SQLDriver("sqlite:///s.db") as driver:
        store = SessionStore(driver)
        made = []
        for user in (None, "alice"):
            session = await store.load([])
            if user:
                session.bind_user(user)
            session["cart"] = ["apple"]
            made.append((await store.commit(session)).session_id)
        print(json.dumps(made))

asyncio.run(main())
"""


@pytest.mark.slow
def test_show_list_and_delete_from_the_wheel(installed: Installed, tmp_path: Path) -> None:
    work = fresh(tmp_path)
    url = ["--url", "sqlite:///s.db"]
    run(installed.sqlsession, "migrate", *url, cwd=work)
    anonymous, alice = json.loads(run(installed.python, "-c", MAKE_SESSIONS, cwd=work).stdout)

    shown = run(installed.sqlsession, "show", anonymous, *url, cwd=work).stdout
    assert shown.splitlines()[-1] == "keys       cart"
    assert anonymous not in shown
    listed = run(installed.sqlsession, "list", *url, cwd=work).stdout.splitlines()
    assert len(listed) == 3  # the header and two sessions
    shown = json.loads(run(installed.sqlsession, "show", alice, "--json", *url, cwd=work).stdout)
    assert shown["user"]["signed_in"] is True

    run(installed.sqlsession, "delete", alice, *url, cwd=work)
    result = subprocess.run(
        [installed.sqlsession, "show", alice, *url],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    stats = run(installed.sqlsession, "stats", "--json", *url, cwd=work).stdout
    # live: the anonymous session and alice's device index, whose entry for the deleted
    # session is pruned when her sessions are next listed (or expires with the index).
    assert json.loads(stats) == {"sessions": 1, "users": 0, "live": 2, "expired": 0}


APP_INI = """
[alembic]
script_location = %(here)s/app_migrations
path_separator = os
"""

APP_ENV = """
import asyncio

from alembic import context
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from sqlsession.alembic import include_object

target_metadata = MetaData()
Table(
    "app_users",
    target_metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50)),
)
filtered = context.get_x_argument(as_dictionary=True).get("filter") == "on"


def run(connection):
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        **({"include_object": include_object} if filtered else {}),
    )
    with context.begin_transaction():
        context.run_migrations()


async def main():
    engine = create_async_engine("sqlite+aiosqlite:///app.db", poolclass=NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run)
    await engine.dispose()


asyncio.run(main())
"""


@pytest.mark.slow
def test_an_apps_autogenerate_with_the_wheels_filter(installed: Installed, tmp_path: Path) -> None:
    import alembic

    work = fresh(tmp_path)
    run(installed.sqlsession, "migrate", "--url", "sqlite:///app.db", cwd=work)
    run(installed.sqlsession, "migrate", "--url", "sqlite:///app.db", "--table", "web", cwd=work)
    project = work / "app_migrations"
    (project / "versions").mkdir(parents=True)
    (project / "env.py").write_text(APP_ENV)
    template = Path(alembic.__file__).parent / "templates" / "generic" / "script.py.mako"
    (project / "script.py.mako").write_text(template.read_text())
    (work / "app.ini").write_text(APP_INI)

    def autogenerate(filter_: str, rev: str) -> str:
        run(
            installed.python, "-m", "alembic", "-c", "app.ini", "-x", f"filter={filter_}",
            "revision", "--autogenerate", "-m", rev, "--rev-id", rev, cwd=work,
        )  # fmt: skip
        script = project / "versions" / f"{rev}_{rev}.py"
        text = script.read_text()
        script.unlink()  # the next run compares against the same database again
        return text

    unfiltered = autogenerate("off", "a1")
    for table in ("sqlsession", "sqlsession_alembic_version", "web", "web_alembic_version"):
        assert f"op.drop_table('{table}')" in unfiltered
    filtered = autogenerate("on", "a2")
    assert "op.create_table('app_users'" in filtered
    for table in ("sqlsession", "web"):
        assert f"'{table}'" not in filtered
        assert f"'{table}_alembic_version'" not in filtered


THIRD_PARTY_TESTS = """
import sqlsession
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sqlsession.drivers.memory import MemoryDriver
from sqlsession.testing import DriverContract, InputValidationContract
from sqlsession.web import SessionMiddleware


def test_sqlsession_is_the_wheels(tmp_path):
    assert sqlsession.__file__ == {init!r}


class TestMemoryFromTheWheel(DriverContract, InputValidationContract):
    drivers_share_storage = False

    @pytest.fixture
    def driver_factory(self):
        return lambda clock, **options: MemoryDriver(clock=clock, max=5000, **options)


async def whoami(request):
    return JSONResponse(request.session.get("user"))


def test_the_plugins_fixture(client_sessions):
    app = Starlette(
        routes=[Route("/", whoami)],
        middleware=[Middleware(SessionMiddleware, driver=MemoryDriver())],
    )
    with TestClient(app, base_url="https://testserver") as client:
        client_sessions.sign_in(client, "ada", {{"user": "ada"}})
        assert client.get("/").json() == "ada"
"""


@pytest.mark.slow
def test_a_third_party_runs_the_contract_from_the_wheel(
    installed: Installed, tmp_path: Path
) -> None:
    work = fresh(tmp_path)
    init = str(installed.site / "sqlsession" / "__init__.py")
    (work / "test_third_party.py").write_text(THIRD_PARTY_TESTS.format(init=init))
    result = run(installed.python, "-m", "pytest", "-p", "no:cacheprovider", "-q", cwd=work)
    summary = result.stdout.strip().splitlines()[-1]
    # Every test of both contract classes, the plugin's fixture and the import check;
    # nothing skipped, failed or warned about.
    assert summary.startswith("129 passed in "), result.stdout
