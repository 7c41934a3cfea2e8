"""SQLite files sqlsession creates are readable by their owner only (0600), WAL files too."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from sqlsession._sql_options import SQLOptions
from sqlsession.drivers.sql import SQLDriver
from sqlsession.drivers.sql.dialects import dialect_class
from sqlsession.drivers.sql.dialects.sqlite import DatabaseFileGone
from tests.conftest import run_script


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most systems run with, under which sqlite3 creates files 0644."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_migrate_creates_the_database_and_its_wal_files_0600(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    result = run_script("sqlsession", "migrate", "-q", "--url", f"sqlite:///{path}")
    assert result.returncode == 0, result.stderr
    assert oct(mode(path)) == oct(0o600)
    driver = SQLDriver(f"sqlite:///{path}")
    try:
        await driver.set_item("k", {"secret": 1})
        wal_files = [Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(f.exists() for f in wal_files)
        assert [oct(mode(f)) for f in wal_files] == [oct(0o600)] * 2
    finally:
        await driver.dispose()


async def test_the_drivers_engine_never_creates_a_missing_file(tmp_path: Path) -> None:
    # The driver refuses a missing file before it connects; should the file vanish in
    # between, its engine refuses to connect rather than create an empty file (which
    # would be private, 0600, had anything created it).
    path = tmp_path / "sessions.db"
    url = f"sqlite+aiosqlite:///{path}"
    engine = dialect_class("sqlite").create_engine(url, SQLOptions(url=url))
    try:
        with pytest.raises(OperationalError) as info:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("CREATE TABLE t (x)")
        assert isinstance(info.value.orig, DatabaseFileGone)
    finally:
        await engine.dispose()
    assert not path.exists()
    # A file that exists keeps the mode it has.
    other = tmp_path / "shared.db"
    other.touch()
    other.chmod(0o640)
    result = run_script("sqlsession", "migrate", "-q", "--url", f"sqlite:///{other}")
    assert result.returncode == 0, result.stderr
    assert oct(mode(other)) == oct(0o640)
