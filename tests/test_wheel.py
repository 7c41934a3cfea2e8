"""The built wheel carries the migrations: ``sqlsession migrate`` works in an empty directory.

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

from .conftest import admin_mysql

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
    } <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    dist_info = wheel.name.split("-py3")[0] + ".dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "\nName: sqlsession-store\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata

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

    return Installed(venv / "bin" / "sqlsession", empty)


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
