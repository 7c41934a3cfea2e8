"""SQLite on a bad day: a database file deleted or replaced under a running driver,
permissions that do not allow the work, and reads while writers wait for the lock.

All against real files. The permission tests run their driver in a subprocess as an
unprivileged user when the tests run as root (root ignores file permissions).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlsession import DatabaseUnavailableError, SchemaError
from sqlsession.drivers.sql import SQLDriver
from tests.conftest import BIN, migrate


def file_of(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def keys_in(path: Path) -> set[str]:
    """The keys a fresh reader of the file at `path` sees."""
    with contextlib_closing(sqlite3.connect(path)) as conn:
        return {key for (key,) in conn.execute("SELECT key FROM sqlsession")}


class contextlib_closing:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


async def fill_the_pool(driver: SQLDriver) -> None:
    """Open every pooled connection (reads and writes at once) and one merge's."""
    await asyncio.gather(
        *(driver.set_item(f"before-{n}", n) for n in range(6)),
        *(driver.get_item(f"before-{n}") for n in range(6)),
    )
    await driver.merge_item("before-merge", set={"a": 1})


# -- the file deleted or replaced under a running driver -----------------------------------


async def test_no_write_is_acknowledged_after_the_file_is_deleted(sqlite_url: str) -> None:
    path = file_of(sqlite_url)
    async with SQLDriver(sqlite_url) as driver:
        await fill_the_pool(driver)
        path.unlink()
        outcomes = await asyncio.gather(
            *(driver.set_item(f"after-{n}", n) for n in range(30)),
            *(driver.merge_item(f"merged-{n}", set={"a": n}) for n in range(5)),
            *(driver.touch(f"before-{n}", ttl=60) for n in range(5)),
            return_exceptions=True,
        )
        acknowledged = [o for o in outcomes if not isinstance(o, BaseException)]
        assert acknowledged == []  # were 40 writes acknowledged into the unlinked file
        assert all(isinstance(o, SchemaError) for o in outcomes), outcomes
        messages = {str(o) for o in outcomes}
        assert any("deleted while sqlsession was using it" in m for m in messages)
        assert all(f"sqlsession migrate --url sqlite+aiosqlite:///{path}" in m for m in messages)
        with pytest.raises(SchemaError, match="does not exist"):
            await driver.get_item("before-1")
        assert not path.exists()  # the driver never creates the file again by itself
        # Created again, the same driver works on the new file.
        migrate(sqlite_url)
        await driver.set_item("after", 1)
        assert await driver.get_item("after") == 1
    assert keys_in(path) == {"after"}


async def test_a_replaced_file_is_reopened_and_the_old_one_gets_no_writes(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = file_of(sqlite_url)
    async with SQLDriver(sqlite_url) as driver:
        await fill_the_pool(driver)
        # A restore, as an operator does it: a file of its own moved over the path.
        # (Its WAL first checkpointed and emptied: SQLite's -wal file goes with the path,
        # so what it holds of the old file would be read as part of the new one.)
        with contextlib_closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.link(path, tmp_path / "old.db")  # keep the old file to look into it
        restored = tmp_path / "restore" / "sessions.db"
        restored.parent.mkdir()
        migrate(f"sqlite:///{restored}")
        os.replace(restored, path)
        with caplog.at_level(logging.WARNING, logger="sqlsession"):
            await asyncio.gather(
                *(driver.set_item(f"after-{n}", n) for n in range(8)),
                driver.merge_item("after-merge", set={"a": 1}),
            )
            assert await driver.get_item("before-1") is None  # not in the restored file
        assert "was replaced" in caplog.text
    assert keys_in(path) == {*(f"after-{n}" for n in range(8)), "after-merge"}
    assert not any(key.startswith("after") for key in keys_in(tmp_path / "old.db"))


# -- permissions ---------------------------------------------------------------------------

NOBODY = 65534

# Runs in the subprocess: each operation's outcome, as JSON.
PROBE = """
import asyncio, json, sys
from sqlsession.drivers.sql import SQLDriver
from sqlsession import SessionError

async def main(url):
    outcome = {}
    async with SQLDriver(url) as driver:
        for name in ("get", "set"):
            try:
                await (driver.get_item("k") if name == "get" else driver.set_item("k", 1))
                outcome[name] = "ok"
            except SessionError as exc:
                outcome[name] = [type(exc).__name__, str(exc)]
            except Exception as exc:
                outcome[name] = ["not ours: " + type(exc).__name__, str(exc)]
    print(json.dumps(outcome))

asyncio.run(main(sys.argv[1]))
"""


def as_unprivileged(command: list[str]) -> list[str]:
    """`command`, run as nobody when the tests run as root (root ignores permissions).

    Through util-linux's setpriv (in every Debian), which drops root's capabilities too.
    """
    if os.geteuid() != 0:
        return command
    ids = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return ["setpriv", *ids, *command]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory an unprivileged user may enter (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="sqlsession-perm-"))
    folder.chmod(0o755)
    yield folder
    for root, dirs, _files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(folder)


def migrated_copy(template: str, folder: Path, *, file_mode: int, dir_mode: int) -> Path:
    folder.mkdir()
    path = folder / "sessions.db"
    shutil.copy(file_of(template), path)
    path.chmod(file_mode)
    folder.chmod(dir_mode)
    return path


def probe(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        as_unprivileged([sys.executable, "-c", PROBE, f"sqlite:///{path}"]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def assert_says_permission(outcome: Any, names: Path) -> None:
    kind, message = outcome
    assert kind == DatabaseUnavailableError.__name__, outcome
    assert "permission" in message
    assert "credentials" not in message
    assert repr(str(names)) in message


def test_a_read_only_directory_is_a_permission_error(sqlite_url: str, open_dir: Path) -> None:
    # SQLite needs to create the -wal and -shm files beside the database.
    path = migrated_copy(sqlite_url, open_dir / "data", file_mode=0o666, dir_mode=0o555)
    outcome = probe(path)
    assert_says_permission(outcome["get"], path.parent)  # was SchemaError "not migrated"
    assert_says_permission(outcome["set"], path.parent)


def test_a_read_only_file_is_a_permission_error(sqlite_url: str, open_dir: Path) -> None:
    path = migrated_copy(sqlite_url, open_dir / "data", file_mode=0o444, dir_mode=0o777)
    outcome = probe(path)
    assert outcome["get"] == "ok"
    assert_says_permission(outcome["set"], path)  # was StorageError "readonly database"
    assert "k" not in keys_in(path)


def test_an_unreadable_file_is_a_permission_error(sqlite_url: str, open_dir: Path) -> None:
    path = migrated_copy(sqlite_url, open_dir / "data", file_mode=0o000, dir_mode=0o777)
    outcome = probe(path)
    assert_says_permission(outcome["get"], path)  # was "... check the credentials"
    assert_says_permission(outcome["set"], path)


def test_migrating_into_a_read_only_directory_says_permission(open_dir: Path) -> None:
    folder = open_dir / "data"
    folder.mkdir(mode=0o555)
    folder.chmod(0o555)
    done = subprocess.run(
        as_unprivileged(
            [str(BIN / "sqlsession"), "migrate", "--url", f"sqlite:///{folder}/sessions.db"]
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    (line,) = [line for line in done.stderr.splitlines() if "error" in line]
    assert "permission" in line
    assert "credentials" not in line
    assert stat.S_IMODE(folder.stat().st_mode) == 0o555


# -- readers and writers -------------------------------------------------------------------


async def test_reads_do_not_wait_behind_writers_waiting_for_the_lock(sqlite_url: str) -> None:
    path = file_of(sqlite_url)
    async with SQLDriver(sqlite_url) as driver:
        await driver.set_item("read-me", {"cart": [1]})
        # Another process holds the write lock; six writers wait for it.
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            writers = [
                *(asyncio.ensure_future(driver.set_item(f"w-{n}", n)) for n in range(4)),
                asyncio.ensure_future(driver.merge_item("m", set={"a": 1})),
                asyncio.ensure_future(driver.remove_item("gone")),
            ]
            await asyncio.sleep(0.3)
            assert not any(w.done() for w in writers)
            # Every pooled connection was held by a waiting writer: a read waited as
            # long as the lock was held (up to the 30 s busy timeout).
            reads = asyncio.gather(
                driver.get_item("read-me"),
                driver.has_item("read-me"),
                driver.get_keys("read"),
                driver.stats(),
            )
            value, exists, keys, _ = await asyncio.wait_for(reads, 10)
            assert (value, exists, keys) == ({"cart": [1]}, True, ["read-me"])
            assert not any(w.done() for w in writers)  # the lock is still held
        finally:
            holder.execute("COMMIT")
            holder.close()
        await asyncio.gather(*writers)
        assert await driver.get_keys("w-") == [f"w-{n}" for n in range(4)]
        assert await driver.get_item("m") == {"a": 1}
