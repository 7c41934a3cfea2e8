"""SQLite through aiosqlite: WAL, one writer at a time, rowid batches with checkpoints.

The fast path makes an operation one trip to aiosqlite's connection thread; through
SQLAlchemy's adapter a read takes four (execute, fetch, close the cursor, roll back on
check-in), and each trip is a thread wake-up and a wake-up of the event loop, which
cost more than the lookup itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy
from sqlalchemy import Table, bindparam, delete, event, literal_column, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.sql.expression import ClauseElement, ColumnElement

from ....errors import ConfigError
from .._fast import FastPath, Fetch
from ._base import (
    SECRECY,
    CleanupJob,
    ErrorKind,
    OnConflictDialect,
    delete_in_batches,
    key_param,
    reset_only_open_transactions,
    then,
    undo_quietly,
)
from ._merge import MergeStatement, SQLiteMerge

if TYPE_CHECKING:
    from ...._sql_options import SQLOptions

__all__ = ["DatabaseFileGone", "Dialect"]

logger = logging.getLogger("sqlsession")

# SQLite has one writer at a time: a pool larger than this only queues tasks on more
# aiosqlite threads (measured: get p50 1.2 ms with 16 connections, 0.27 ms with 4, for
# 16 busy tasks on 2 cores), and each connection keeps its own page cache.
_POOL_SIZE = 4
# SQLAlchemy 2.1 closes a connection whose "connect" event failed; 2.0 strands it.
_CLOSES_FAILED_CONNECTIONS = tuple(int(part) for part in sqlalchemy.__version__.split(".")[:2]) >= (
    2,
    1,
)
# How long a writer waits for the database lock before giving up.
BUSY_TIMEOUT_MS = 30_000


def create_files_private(engine: AsyncEngine) -> None:
    """Have `engine` create a missing database file readable by its owner only (0600).

    sqlite3 would create it with the umask's mode (0644 as a rule), readable by every
    user of the machine. SQLite gives the ``-wal`` and ``-shm`` files it creates beside
    it the database file's mode. An existing file keeps its mode.
    """

    @event.listens_for(engine.sync_engine, "do_connect")
    def _create(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        path = cargs[0] if cargs else cparams.get("database")
        if not isinstance(path, str) or path in ("", ":memory:") or path.startswith("file:"):
            return
        # Whatever goes wrong here (a missing directory, no permission), SQLite's own
        # connect reports it next.
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class HiddenParameters(tuple[Any, ...]):
    """A statement's parameters that print as a placeholder.

    aiosqlite logs every call it runs on its thread at DEBUG, with the call's
    arguments: the session keys and values. sqlite3 binds any sequence, so wrapping
    the parameters in this tuple keeps them out of that log and changes nothing else.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<parameters hidden>"

    __str__ = __repr__


class Dialect(OnConflictDialect):
    """SQLite 3.35 and later, in a file (WAL mode)."""

    title = "SQLite"
    driver_package = "aiosqlite"
    default_pool_size = _POOL_SIZE
    # A cleanup batch holds SQLite's only write lock. On a table with random session
    # keys 500 rows took 16 ms (median) and at most 38 ms under load, 1000 rows 29 ms
    # and at most 74 ms, 5000 about 300 ms.
    default_cleanup_batch_size = 500

    def __init__(self, table: Table) -> None:
        super().__init__(table)
        c = table.c
        self._insert = sqlite.insert(table)
        self._on_conflict_statements()
        self._read = select(c.value, c.expires_at).where(c.key == key_param("k"))
        self._cleanup = self._cleanup_batch()
        self._autocheckpoint = text("PRAGMA wal_autocheckpoint")
        self._autocheckpoint_off = text("PRAGMA wal_autocheckpoint = 0")
        self._checkpoint = text("PRAGMA wal_checkpoint(PASSIVE)")
        self._merge = SQLiteMerge(sqlite.dialect().identifier_preparer.format_table(table))

    def _cleanup_batch(self, *conditions: ColumnElement[bool]) -> Any:
        expired = self.table.c.expires_at <= bindparam("now")
        # Rows are picked by rowid, so the DELETE fetches each one directly instead of
        # probing the key index again.
        rowid: ColumnElement[Any] = literal_column("rowid")
        batch = (
            select(rowid)
            .select_from(self.table)
            .where(expired, *conditions)
            .limit(bindparam("batch"))
        )
        return delete(self.table).where(rowid.in_(batch.scalar_subquery()), expired)

    @classmethod
    def create_engine(cls, url: str, options: SQLOptions) -> AsyncEngine:
        if make_url(url).database in (None, "", ":memory:"):
            raise ConfigError(
                "An in-memory SQLite database is private to each connection; use a file "
                "URL (sqlite:///sessions.db) or the memory driver (session_drivers.memory())."
            )
        engine = create_async_engine(
            url,
            isolation_level="AUTOCOMMIT",
            **SECRECY,
            # SQLAlchemy before 2.0.38 gives aiosqlite a NullPool by default.
            poolclass=AsyncAdaptedQueuePool,
            pool_size=options.pool_size or cls.default_pool_size,
            max_overflow=0,
            pool_reset_on_return=None,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # The busy timeout comes first, so that switching to WAL waits for other
            # connections instead of failing with "database is locked".
            try:
                cursor = dbapi_connection.cursor()
                cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                cursor.execute("PRAGMA journal_mode = WAL")  # fails in a read-only directory
                cursor.execute("PRAGMA synchronous = NORMAL")
                cursor.close()
            except BaseException:
                # SQLAlchemy before 2.1 leaves a connection whose set-up failed open, and
                # with it aiosqlite's thread, which keeps the process from exiting.
                if not _CLOSES_FAILED_CONNECTIONS:
                    dbapi_connection.close()
                raise

        database = cls.database_file(url)
        if database is not None:
            watch = _FileWatch(database)
            # Before create_files_private's: the driver never creates the file.
            event.listen(engine.sync_engine, "do_connect", watch.on_connect)
            event.listen(engine.sync_engine, "checkout", watch.on_checkout)
        create_files_private(engine)

        @event.listens_for(engine.sync_engine, "do_execute")
        def _execute(cursor: Any, statement: str, parameters: Any, _context: Any) -> bool:
            cursor.execute(statement, HiddenParameters(parameters))
            return True  # executed: SQLAlchemy runs nothing more

        reset_only_open_transactions(engine, lambda conn: bool(conn.in_transaction))
        return engine

    @classmethod
    def migration_engine(cls, url: str) -> AsyncEngine:
        engine = super().migration_engine(url)
        create_files_private(engine)

        @event.listens_for(engine.sync_engine, "connect")
        def _wait_for_the_lock(dbapi_connection: Any, _record: Any) -> None:
            # Every connection of a migration (the engine has no pool) waits as long as
            # the driver's do for another migrator's write lock: sqlite3's own default,
            # 5 s, is shorter than a migration in another process can hold it on a
            # loaded machine ("database is locked" from BEGIN IMMEDIATE).
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.close()

        return engine

    @classmethod
    def database_file(cls, url: str) -> str | None:
        database = make_url(url).database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return os.path.abspath(database)

    @contextlib.asynccontextmanager
    async def locked_row(
        self, conn: AsyncConnection, key: str, *, create: bool = True
    ) -> AsyncIterator[Any]:
        # IMMEDIATE takes the write lock before reading, so no other writer can slip in
        # between the read and the write (whether or not the key exists: `create` is moot).
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield (await conn.execute(self._read, {"k": key})).first()
        except BaseException:
            await undo_quietly(conn, lambda: conn.exec_driver_sql("ROLLBACK"))
            raise
        await conn.exec_driver_sql("COMMIT")

    async def cleanup(self, conn: AsyncConnection, job: CleanupJob) -> int | None:
        """Batches that leave the write lock to the app half of the time.

        A batch of deletes dirties pages all over the file (the key and expiry indexes
        are in random order), so nearly every batch pushes the WAL past the
        autocheckpoint size and its DELETE would also copy those pages into the
        database file: two thirds of the statement's time, spent after the write lock
        is released but still inside the batch. Instead this connection turns its
        autocheckpoint off and checkpoints after each batch itself, PASSIVE, so the
        app's writers can take the write lock while it runs.
        """
        previous = int(await conn.scalar(self._autocheckpoint))
        await conn.execute(self._autocheckpoint_off)
        async with then(conn, text(f"PRAGMA wal_autocheckpoint = {previous}")):
            return await delete_in_batches(
                conn, self._cleanup, job, after=self._checkpoint_now, pause=_give_the_lock_back
            )

    async def _checkpoint_now(self, conn: AsyncConnection) -> None:
        await conn.execute(self._checkpoint)

    def fast_path(
        self, engine: AsyncEngine, statements: Mapping[str, ClauseElement]
    ) -> FastPath | None:
        return (
            _AiosqliteFastPath(engine, statements) if engine.dialect.driver == "aiosqlite" else None
        )

    def merge_statement(self) -> MergeStatement | None:
        return self._merge

    @classmethod
    def refuses_json(cls, error: BaseException) -> bool:
        lowered = str(error).lower()
        return isinstance(error, sqlite3.Error) and (
            "malformed json" in lowered or "json path error" in lowered
        )

    @classmethod
    def driver_errors(cls) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    @classmethod
    def classify(cls, error: BaseException) -> ErrorKind | None:
        if isinstance(error, DatabaseFileGone):
            return ErrorKind.FILE_GONE
        lowered = str(error).lower()
        if "no such table" in lowered:
            return ErrorKind.MISSING_TABLE
        # A file, directory or -wal/-shm file this process may not read or write: a
        # condition of the machine, like a server that is down, not a failed statement.
        if (
            "unable to open database file" in lowered
            or "readonly database" in lowered
            or isinstance(error, OSError)
        ):
            return ErrorKind.UNAVAILABLE
        if "already exists" in lowered:
            return ErrorKind.ALREADY_EXISTS
        return None

    @classmethod
    def write_slots(cls, pool_size: int) -> int | None:
        # Writers waiting for the write lock (held by another process, a cleanup batch)
        # sleep in SQLite's busy handler on their connection; with one connection kept
        # back, reads, which WAL lets run beside a writer, never queue behind them.
        return max(1, pool_size - 1)

    @classmethod
    def unavailable_advice(cls, url: str) -> str:
        path = cls.database_file(url)
        return _access_advice(path) if path is not None else super().unavailable_advice(url)

    @classmethod
    async def prepare_migration(cls, connection: AsyncConnection) -> None:
        # WAL lets readers and a writer work at once; the setting persists in the file,
        # so the driver finds it already on.
        await connection.exec_driver_sql(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await connection.exec_driver_sql("PRAGMA journal_mode = WAL")
        await connection.commit()

    @classmethod
    @contextlib.contextmanager
    def migration_lock(
        cls, connection: Connection, table: str, schema: str | None
    ) -> Iterator[None]:
        # The write lock, taken before alembic reads the version table, so that a second
        # migrator waits (busy_timeout) and then finds the work done.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield


def _access_advice(path: str) -> str:
    """What keeps this process from using the database file `path`, as far as it can tell."""
    folder = os.path.dirname(path)
    who = "this process" + (f" (uid {os.geteuid()})" if hasattr(os, "geteuid") else "")
    effective = os.access in os.supports_effective_ids
    beside = "SQLite creates the database's -wal and -shm files beside it"

    def allowed(target: str, mode: int) -> bool:
        return os.access(target, mode, effective_ids=effective)

    if not os.path.isdir(folder):
        if allowed(os.path.dirname(folder) or "/", os.X_OK):
            return f"The directory {folder!r} does not exist: create it, or fix the path."
    elif not allowed(folder, os.W_OK | os.X_OK):
        return (
            f"{who.capitalize()} has no permission to create files in the directory "
            f"{folder!r} ({beside}): give it write permission there, or move the database "
            "to a directory it may write."
        )
    for target in (path, f"{path}-wal", f"{path}-shm"):
        if os.path.exists(target) and not allowed(target, os.R_OK | os.W_OK):
            return (
                f"{who.capitalize()} has no permission to read and write {target!r}: give "
                "it read and write permission on the file (chown or chmod)."
            )
    return (
        f"Check the path, and that {who} has permission to read and write the file and "
        f"its directory ({beside})."
    )


class DatabaseFileGone(sqlite3.OperationalError):
    """The database file was deleted while the driver had connections open on it."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"The SQLite database file {path!r} is gone (deleted while sqlsession was using "
            "it), so nothing more is written to it; restore it, or create it again"
        )


# Where a connection record keeps the identity of the file its connection opened.
_FILE_IDENTITY = "sqlsession.sqlite_file"


class _FileWatch:
    """Keeps an engine's connections on the file at `path`.

    A pooled SQLite connection keeps the file it opened, even once that file is deleted
    or replaced (a restore with ``mv``): every write it acknowledges would then go to a
    file nobody will read again. So the file's identity (device and inode) is noted
    when a connection opens and compared, with one ``stat``, each time the pool hands
    the connection out. A deleted file fails the checkout (the pool closes that
    connection, the driver the idle ones). A replaced one has the pool replace every
    connection opened before now, each as it is next handed out, so no connection to
    the old file runs another statement. A missing file is never created here.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def identity(self) -> tuple[int, int] | None:
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return None
        return found.st_dev, found.st_ino

    def on_connect(self, _dialect: Any, record: Any, _args: Any, _kwargs: Any) -> None:
        # Read before the file is opened: were it swapped in between, the connection
        # would carry the old identity and be closed at its first checkout, rather than
        # carry the new one while it has the old file open.
        identity = self.identity()
        if identity is None:
            raise DatabaseFileGone(self.path)
        record.info[_FILE_IDENTITY] = identity

    def on_checkout(self, _dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        identity = self.identity()
        if identity is None:
            raise DatabaseFileGone(self.path)
        if identity != record.info.get(_FILE_IDENTITY):
            logger.warning(
                "The SQLite database file %r was replaced; sqlsession closes its "
                "connections to the old file and opens the new one.",
                self.path,
            )
            # The pool closes this connection, opens a new one on the new file and hands
            # that out; every other connection opened before now is replaced likewise.
            raise InvalidatePoolError("the database file was replaced")


async def _give_the_lock_back(elapsed: float) -> None:
    # A writer that waited for the batch sleeps in SQLite's busy handler, each sleep at
    # most as long as it has waited so far (never over 100 ms); without a pause the
    # next batch wins the lock again and the app's writes starve until cleanup ends.
    # Pausing as long as the batch and its checkpoint took (at most 100 ms) leaves the
    # app the database half of the time with the default batch size (measured against
    # pausing only as long as the batch: write p99 during cleanup 24 ms instead of
    # 36 ms, rows/s 8.6k instead of 13.9k).
    await asyncio.sleep(min(elapsed, 0.1))


class _AiosqliteFastPath(FastPath):
    """`FastPath` on aiosqlite connections."""

    # aiosqlite raises ValueError for a connection it has closed.
    errors = (sqlite3.Error, ValueError)
    # The file watch runs at every checkout: a deleted or replaced file must stop the
    # very next operation.
    hands_over = False

    def _abandon(self, conn: Any) -> None:
        # aiosqlite runs each connection on a thread of its own that only a close ends,
        # and a close cannot be awaited here: a left thread would keep the process from
        # exiting (SQLAlchemy 2.0's invalidation cannot close it either). stop() closes
        # the connection on its thread after the statement under way, and ends it.
        stop = getattr(conn, "stop", None)
        if stop is not None:
            stop()

    async def _execute(self, conn: Any, sql: str, args: list[Any], fetch: Fetch) -> Any:
        hidden = HiddenParameters(args)
        if fetch != "count":
            rows = await conn.execute_fetchall(sql, hidden)
            result = None if not rows else rows[0][0] if fetch == "value" else rows[0]
        else:
            result = (await conn.execute(sql, hidden)).rowcount
        # The driver's own engine autocommits; an engine handed to it may leave sqlite3
        # opening a transaction before a write, which must not stay open.
        if conn.in_transaction:
            await conn.commit()
        return result

    def _lost(self, conn: Any, exc: BaseException) -> bool:
        return isinstance(exc, ValueError)
