"""MySQL and MariaDB through asyncmy: ON DUPLICATE KEY UPDATE, GET_LOCK, DELETE ... LIMIT.

Keys are ``VARBINARY``: compared byte for byte (a ``_bin`` collation would still
ignore trailing spaces on MariaDB), and UTF-8 byte order is code point order, so key
order and prefix ranges agree with PostgreSQL's "C" collation and SQLite. Values are
``LONGTEXT`` in utf8mb4 (``TEXT`` stops at 64 KB; MySQL's "utf8" has no emoji).
Sessions run at READ COMMITTED, so a cleanup's range delete takes no gap locks that
would hold up the app's inserts.

The fast path runs the driver's statements on the raw asyncmy connection; asyncmy
interpolates the parameters on the client, as it does under SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, insert, literal_column, or_, select, text, update
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import ClauseElement

from .._fast import FastPath, Fetch
from ._base import (
    SECRECY,
    CleanupJob,
    ErrorKind,
    SQLDialect,
    delete_in_batches,
    key_param,
    lock_id,
    then,
    undo_quietly,
)

if TYPE_CHECKING:
    from ...._sql_options import SQLOptions

__all__ = ["Dialect"]

# Server and client error numbers (MariaDB's and MySQL's are the same for these).
_MISSING_TABLE = 1146
_UNAVAILABLE = frozenset(
    {
        1040,  # too many connections
        1044,  # access denied to the database
        1045,  # access denied (password)
        1049,  # unknown database
        1053,  # server shutdown in progress
        1698,  # access denied (auth plugin)
        1927,  # connection killed
        2002,  # can't connect through the socket
        2003,  # can't connect to the server
        2005,  # unknown host
        2006,  # server has gone away
        2013,  # lost connection during query
        2055,  # lost connection at the system level
    }
)
_LOST = frozenset({1927, 2006, 2013, 2055})
_CONFLICT = 1213  # deadlock: the transaction was rolled back and may run again
_LOCK_TIMEOUT = 1205
_ALREADY_EXISTS = 1050
_DUPLICATE_KEY = 1062
# How long a migration waits for another one of the same table (GET_LOCK's seconds).
_MIGRATION_LOCK_WAIT_S = 600
_SETUP = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"


def _errno(error: BaseException) -> int | None:
    code = error.args[0] if error.args else None
    return code if isinstance(code, int) else None


class Dialect(SQLDialect):
    """MariaDB 10.5+ and MySQL 8.0+, InnoDB."""

    extra = "mysql"
    driver_package = "asyncmy"
    title = "MySQL/MariaDB"
    transactional_ddl = False  # DDL commits on its own

    def __init__(self, table: Table) -> None:
        super().__init__(table)
        c = table.c
        self._insert = mysql.insert(table)
        # A claim that locks the row whether it exists or not: the insert takes an
        # exclusive lock on the duplicate it finds, or creates the row (an empty dict)
        # and holds it. A locking read alone would take no lock on a missing key at
        # READ COMMITTED, and two merges of a new key would then overwrite each other.
        self._claim = self._insert.values(
            key=key_param("k"), value="{}", expires_at=None
        ).on_duplicate_key_update(key=literal_column("VALUES(`key`)"))
        self._read_locked = (
            select(c.value, c.expires_at).where(c.key == key_param("k")).with_for_update()
        )
        name = mysql.dialect().identifier_preparer.format_table(table)
        # No ORDER BY: the expires_at index hands the expired rows over in its own order.
        self._cleanup = text(f"DELETE FROM {name} WHERE expires_at <= :now LIMIT :batch")
        self._cleanup_from = text(
            f"DELETE FROM {name} WHERE `key` >= :low AND expires_at <= :now LIMIT :batch"
        )
        self._cleanup_range = text(
            f"DELETE FROM {name} WHERE `key` >= :low AND `key` < :high AND expires_at <= :now "
            "LIMIT :batch"
        )
        # Put-if-absent: neither MySQL nor MariaDB can tell, from an upsert's row count,
        # a new row from a duplicate left as it was (SQLAlchemy connects with
        # CLIENT_FOUND_ROWS, which reports 1 for both), so a plain INSERT tries first.
        self._insert_new = insert(table).values(
            key=key_param("k"), value=bindparam("v"), expires_at=bindparam("exp")
        )
        expired = c.expires_at <= bindparam("now")
        self._replace_expired = (
            update(table)
            .where(c.key == key_param("k"), c.expires_at.is_not(None), expired)
            .values(value=bindparam("v"), expires_at=bindparam("exp"))
        )
        # Get-and-renew: no UPDATE ... RETURNING on either, so a short transaction.
        self._renew = (
            update(table)
            .where(c.key == key_param("k"), c.expires_at > bindparam("now"))
            .values(expires_at=bindparam("exp"))
        )
        live = or_(c.expires_at.is_(None), c.expires_at > bindparam("now"))
        self._read_live = select(c.value, c.expires_at).where(c.key == key_param("k"), live)
        # A named lock is held by the server session: released by RELEASE_LOCK, and by
        # the server when the connection dies with the process that took it.
        lock_name = "sqlsession.cleanup." + lock_id("cleanup", table.name, table.schema).hex()
        self._try_lock = text("SELECT GET_LOCK(:name, 0)").bindparams(name=lock_name)
        self._unlock = text("SELECT RELEASE_LOCK(:name)").bindparams(name=lock_name)

    @classmethod
    def table_definition(cls) -> dict[str, Any]:
        return {
            "key_type": mysql.VARBINARY(4 * 255),  # 255 characters of up to 4 bytes
            "value_type": mysql.LONGTEXT(charset="utf8mb4"),
            "mysql_charset": "utf8mb4",
        }

    @classmethod
    def connect_args(cls, url: str, options: SQLOptions) -> dict[str, Any]:
        if options.connect_timeout is None:
            return {}
        return {"connect_timeout": options.connect_timeout}

    @classmethod
    def create_engine(cls, url: str, options: SQLOptions) -> AsyncEngine:
        pool_size = options.pool_size or cls.default_pool_size
        engine = create_async_engine(
            url,
            isolation_level="AUTOCOMMIT",
            **SECRECY,
            pool_size=pool_size,
            max_overflow=pool_size,
            # The server closes connections idle for wait_timeout (8 hours by default).
            pool_recycle=3600,
            connect_args={"init_command": _SETUP, **cls.connect_args(url, options)},
        )
        # SQLAlchemy rolls back every connection it closes or returns to the pool; on
        # an autocommit connection that is a no-op for asyncpg and aiosqlite, but asyncmy
        # sends each ROLLBACK to the server: a second round trip for every operation.
        # Only this engine's dialect object is changed.
        rollback = engine.dialect.do_rollback

        def do_rollback(dbapi_connection: Any) -> None:
            connection = dbapi_connection._connection
            # A connection asyncmy closed (a cancelled query) still reports the status of
            # its last answer: roll it back all the same, so the failure has the pool
            # throw it away instead of handing it out again.
            if not connection.connected or connection.get_transaction_status():
                rollback(dbapi_connection)

        engine.dialect.do_rollback = do_rollback  # type: ignore[method-assign]
        return engine

    def upsert(self) -> Insert:
        # VALUES(col), not the row alias of MySQL 8.0.19+: MariaDB has no alias.
        return self._insert.values(
            key=key_param("k"), value=bindparam("v"), expires_at=bindparam("exp")
        ).on_duplicate_key_update(
            value=literal_column("VALUES(value)"), expires_at=literal_column("VALUES(expires_at)")
        )

    def upsert_rows(self, rows: list[dict[str, Any]]) -> Insert:
        return self._insert.values(rows).on_duplicate_key_update(
            value=literal_column("VALUES(value)"), expires_at=literal_column("VALUES(expires_at)")
        )

    async def add_item(self, conn: AsyncConnection, params: dict[str, Any]) -> bool:
        """A new row in one INSERT; a duplicate is replaced only when it has expired.

        Two statements when the key exists: the UPDATE re-checks expiry on the row it
        locks, so of concurrent callers exactly one writes.
        """
        try:
            await conn.execute(self._insert_new, params)
            return True
        except IntegrityError as exc:
            if _errno(exc.orig) != _DUPLICATE_KEY:  # type: ignore[arg-type]
                raise
        return bool((await conn.execute(self._replace_expired, params)).rowcount == 1)

    async def renew_entry(self, conn: AsyncConnection, params: dict[str, Any]) -> Any:
        # The UPDATE holds the row until the read has seen its own renewal.
        await conn.execution_options(isolation_level="READ COMMITTED")
        await conn.begin()
        try:
            await conn.execute(self._renew, params)
            row = (await conn.execute(self._read_live, params)).first()
        except BaseException:
            await undo_quietly(conn, conn.rollback)
            raise
        await conn.commit()
        return row

    def prefix_cleanup(self, bounded: bool) -> Any:
        return self._cleanup_range if bounded else self._cleanup_from

    def decode_key(self, key: Any) -> str:
        return key.decode("utf-8") if isinstance(key, bytes | bytearray) else str(key)

    @contextlib.asynccontextmanager
    async def locked_row(
        self, conn: AsyncConnection, key: str, *, create: bool = True
    ) -> AsyncIterator[Any]:
        await conn.execution_options(isolation_level="READ COMMITTED")
        await conn.begin()
        try:
            if create:
                await conn.execute(self._claim, {"k": key})
            yield (await conn.execute(self._read_locked, {"k": key})).first()
        except BaseException:
            await undo_quietly(conn, conn.rollback)
            raise
        await conn.commit()

    async def cleanup(self, conn: AsyncConnection, job: CleanupJob) -> int | None:
        """One runner at a time per table (a named lock), in autocommitted batches.

        Each DELETE re-checks expiry on the row it locks: a session refreshed while
        the batch waited for it is left alone.
        """
        if await conn.scalar(self._try_lock) != 1:
            return None
        async with then(conn, self._unlock):
            return await delete_in_batches(conn, self._cleanup, job)

    def fast_path(
        self, engine: AsyncEngine, statements: Mapping[str, ClauseElement]
    ) -> FastPath | None:
        return _AsyncmyFastPath(engine, statements) if engine.dialect.driver == "asyncmy" else None

    @classmethod
    def driver_errors(cls) -> tuple[type[BaseException], ...]:
        from asyncmy.errors import MySQLError

        return (MySQLError,)

    @classmethod
    def classify(cls, error: BaseException) -> ErrorKind | None:
        code = _errno(error)
        if code == _MISSING_TABLE:
            return ErrorKind.MISSING_TABLE
        if code in _LOST:
            return ErrorKind.LOST
        if code in _UNAVAILABLE or isinstance(error, OSError):
            return ErrorKind.UNAVAILABLE
        if code == _CONFLICT:
            return ErrorKind.CONFLICT
        if code == _LOCK_TIMEOUT:
            return ErrorKind.LOCK_TIMEOUT
        if code == _ALREADY_EXISTS:
            return ErrorKind.ALREADY_EXISTS
        return None

    @classmethod
    @contextlib.contextmanager
    def migration_lock(
        cls, connection: Connection, table: str, schema: str | None
    ) -> Iterator[None]:
        # A named lock, not a transaction: each DDL statement commits on its own.
        name = "sqlsession.migrate." + lock_id("migrate", table, schema).hex()
        # MySQL names every primary key PRIMARY and warns about the names alembic and
        # the migration give theirs; asyncmy logs each warning, which says nothing
        # useful to someone running `sqlsession migrate`.
        asyncmy_log = logging.getLogger("asyncmy")
        asyncmy_log.addFilter(_primary_key_names)
        got = connection.scalar(
            text("SELECT GET_LOCK(:name, :wait)"), {"name": name, "wait": _MIGRATION_LOCK_WAIT_S}
        )
        if got != 1:
            raise TimeoutError(f"Another migration of {table!r} held its lock for too long.")
        try:
            yield
        finally:
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
            asyncmy_log.removeFilter(_primary_key_names)


def _primary_key_names(record: logging.LogRecord) -> bool:
    return "ignored for PRIMARY key" not in record.getMessage()


class _AsyncmyFastPath(FastPath):
    """`FastPath` on asyncmy connections."""

    def __init__(self, engine: AsyncEngine, statements: Mapping[str, ClauseElement]) -> None:
        self.errors = (*Dialect.driver_errors(), OSError)
        super().__init__(engine, statements)

    async def _execute(self, conn: Any, sql: str, args: list[Any], fetch: Fetch) -> Any:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, args)
            if fetch == "count":
                return cursor.rowcount
            row = await cursor.fetchone()
            return None if row is None else row[0] if fetch == "value" else row

    def _lost(self, conn: Any, exc: BaseException) -> bool:
        return (
            not conn.connected
            or isinstance(exc, OSError)
            or Dialect.classify(exc) is ErrorKind.LOST
        )

    def _conflict(self, exc: BaseException) -> bool:
        return Dialect.classify(exc) is ErrorKind.CONFLICT
