"""MySQL and MariaDB through asyncmy: ON DUPLICATE KEY UPDATE, a lease lock, DELETE ... LIMIT.

Keys are ``VARBINARY``: compared byte for byte (a ``_bin`` collation would still
ignore trailing spaces on MariaDB), and UTF-8 byte order is code point order, so key
order and prefix ranges agree with PostgreSQL's "C" collation and SQLite. Values are
``LONGTEXT`` in utf8mb4 (``TEXT`` stops at 64 KB; MySQL's "utf8" has no emoji).
Sessions run at READ COMMITTED, so a cleanup's range delete takes no gap locks that
would hold up the app's inserts.

The fast path runs the driver's statements on the raw asyncmy connection; asyncmy
interpolates the parameters on the client, as it does under SQLAlchemy.

MariaDB Galera (multi-primary) works with the same statements: the cleanup and
migration locks are lease rows (`_lease.LeaseLock`), which hold across nodes where
``GET_LOCK`` would not; a certification failure is error 1213 like a deadlock, which the
driver retries. A URL may name several hosts (``mysql://user@h1:3306,h2:3306/db``): a
new connection goes to the host that last answered, else to the next one in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Table,
    bindparam,
    event,
    insert,
    inspect,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import ClauseElement

from ...._table import version_table_name
from ....errors import ConfigError, SchemaError
from .._fast import FastPath, Fetch
from ._base import (
    SECRECY,
    CleanupJob,
    ErrorKind,
    SQLDialect,
    delete_in_batches,
    key_param,
    then,
    undo_quietly,
)
from ._lease import LeaseLock
from ._merge import MergeStatement, MySQLMerge

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
        1047,  # Galera: the node is not (or no longer) part of the primary component
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
# Deadlock, or a Galera certification failure (another node committed a change to the
# same row first): the transaction was rolled back and may run again.
_CONFLICT = 1213
_LOCK_TIMEOUT = 1205
_ALREADY_EXISTS = 1050
_DUPLICATE_KEY = 1062
# A merge statement's JSON refused: MariaDB's JSON warnings (invalid text, 32 deep),
# which strict mode makes errors in an UPDATE; a NULL for the NOT NULL value; MySQL's
# invalid JSON text, path, type and depth errors.
_JSON_REFUSED = frozenset({*range(4036, 4050), 1048, 3140, 3141, 3143, 3146, 3157})
# How long a migration waits for another one of the same table, and how long a
# migration's lock outlives a migrator that died holding it.
_MIGRATION_LOCK_WAIT_S = 600
_MIGRATION_LEASE_S = 300
# How long a cleanup's lock outlives a runner that died holding it; a live runner renews
# it after every batch. Measured on the driver's clock.
_CLEANUP_LEASE_MS = 60_000
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
    supports_read_your_writes = True

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
        self._merge = MySQLMerge(name)
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
        # One holder per driver: a cleanup cancelled before it released the lease (its
        # connection closed mid-statement) does not lock this driver out until it passes.
        self._cleanup_lock = LeaseLock(table.name, "cleanup")
        self._cleaning = False

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
        engine = _create_engine(
            url,
            {"init_command": _SETUP, **cls.connect_args(url, options)},
            isolation_level="AUTOCOMMIT",
            **SECRECY,
            pool_size=pool_size,
            max_overflow=pool_size,
            # The server closes connections idle for wait_timeout (8 hours by default).
            pool_recycle=3600,
        )
        if options.read_your_writes:
            _wait_for_the_cluster_on_reads(engine)
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
        """One runner at a time per table, cluster-wide (a lease row), in autocommitted batches.

        Each DELETE re-checks expiry on the row it locks: a session refreshed while
        the batch waited for it is left alone. On Galera a refresh committed on another
        node while a batch runs makes one of the two fail certification (1213), and the
        driver runs it again: the refresh wins either way.
        """
        lock = self._cleanup_lock
        if self._cleaning:
            return None  # this driver's own runs take turns too (the lease is the driver's)
        now = job.now_ms()
        self._cleaning = True
        try:
            if not await _claimed(conn, lock, now, now + _CLEANUP_LEASE_MS):
                return None

            async def renew(conn: AsyncConnection) -> None:
                await conn.execute(lock.renew, {"exp": job.now_ms() + _CLEANUP_LEASE_MS})

            try:
                async with then(conn, lock.release):
                    return await delete_in_batches(conn, self._cleanup, job, after=renew)
            except BaseException:
                if conn.invalidated:  # cancelled mid-statement: `then` could not release
                    await _release_elsewhere(conn.engine, lock)
                raise
        finally:
            self._cleaning = False

    def fast_path(
        self, engine: AsyncEngine, statements: Mapping[str, ClauseElement]
    ) -> FastPath | None:
        return _AsyncmyFastPath(engine, statements) if engine.dialect.driver == "asyncmy" else None

    def merge_statement(self) -> MergeStatement | None:
        return self._merge

    @classmethod
    def refuses_json(cls, error: BaseException) -> bool:
        return _errno(error) in _JSON_REFUSED

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
    def migration_engine(cls, url: str) -> AsyncEngine:
        from ...._sql_options import SQLOptions

        url, settings = SQLOptions(url=url).connection()
        return _create_engine(
            cls.engine_url(url), cls.connect_args(url, settings), poolclass=NullPool, **SECRECY
        )

    @classmethod
    @contextlib.contextmanager
    def migration_lock(
        cls, connection: Connection, table: str, schema: str | None
    ) -> Iterator[None]:
        # A lease row, not a transaction (each DDL statement commits on its own), nor
        # GET_LOCK (per node on Galera). It is claimed on a connection of its own in
        # autocommit, so the other nodes see it at once. The lock table is created here,
        # before any revision runs, as alembic creates its version table, and dropped
        # with the version table at base.
        lock = LeaseLock(table, "migrate")
        # MySQL names every primary key PRIMARY and warns about the names alembic and
        # the migration give theirs; asyncmy logs each warning, which says nothing
        # useful to someone running `sqlsession migrate`.
        asyncmy_log = logging.getLogger("asyncmy")
        asyncmy_log.addFilter(_primary_key_names)
        try:
            with connection.engine.connect() as own:
                own.execution_options(isolation_level="AUTOCOMMIT")
                deadline = time.monotonic() + _MIGRATION_LOCK_WAIT_S
                while not _claimed_for_migration(own, lock):
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"Another migration of {table!r} held its lock for too long."
                        )
                    time.sleep(0.2)
                try:
                    yield
                except BaseException:
                    # The migration's own failure is the one to report; a lease that
                    # could not be released passes in _MIGRATION_LEASE_S.
                    with contextlib.suppress(Exception):
                        own.execute(lock.release)
                    raise
                own.execute(lock.release)
                if not inspect(own).has_table(version_table_name(table)):
                    own.execute(lock.drop)  # at base: nothing of sqlsession's is left
        finally:
            asyncmy_log.removeFilter(_primary_key_names)


def _primary_key_names(record: logging.LogRecord) -> bool:
    return "ignored for PRIMARY key" not in record.getMessage()


async def _claimed(conn: AsyncConnection, lock: LeaseLock, now: int, expires: int) -> bool:
    """Claim `lock` until `expires` (ms); whether this runner holds it now."""
    try:
        await conn.execute(lock.claim, {"now": now, "exp": expires})
    except DBAPIError as exc:
        kind = Dialect.classify(exc.orig or exc)
        if kind is ErrorKind.CONFLICT:
            return False  # another node claimed it in the same instant, and won
        if kind is ErrorKind.MISSING_TABLE:
            raise SchemaError(
                f"The lock table {lock.table!r} is missing: this sqlsession keeps its "
                "cleanup lock there. Run sqlsession migrate (with this URL and table) "
                "once; it creates the lock table."
            ) from exc
        raise
    return bool(await conn.scalar(lock.held_by) == lock.holder)


async def _release_elsewhere(engine: AsyncEngine, lock: LeaseLock) -> None:
    """Release `lock` on a connection of its own, so no other runner waits for the lease."""

    async def release() -> None:
        async with engine.connect() as conn:
            await conn.execute(lock.release)

    with contextlib.suppress(Exception):
        await asyncio.wait_for(release(), 5)


def _claimed_for_migration(conn: Connection, lock: LeaseLock) -> bool:
    """`_claimed` for the migration lock, on real time; creates the lock table if needed."""
    now = int(time.time() * 1000)
    try:
        if not inspect(conn).has_table(lock.table):
            conn.execute(lock.create)  # IF NOT EXISTS: another node may be creating it too
        conn.execute(lock.claim, {"now": now, "exp": now + _MIGRATION_LEASE_S * 1000})
        holder = conn.scalar(lock.held_by)
    except DBAPIError as exc:
        # Lost to another node's claim; or two runners created the lock table at once
        # (IF NOT EXISTS still fails the slower one when the other's CREATE is under
        # way); or the table went with a downgrade to base that finished in between.
        # The next try claims again, creating the table if it is gone.
        if Dialect.classify(exc.orig or exc) in _CLAIM_AGAIN:
            return False
        raise
    return bool(holder == lock.holder)


_CLAIM_AGAIN = (ErrorKind.CONFLICT, ErrorKind.MISSING_TABLE, ErrorKind.ALREADY_EXISTS)


def _create_engine(url: str, connect_args: dict[str, Any], **options: Any) -> AsyncEngine:
    """`create_async_engine` for `url`, which may name several hosts (``h1:p1,h2:p2``)."""
    scheme, _, rest = url.partition("://")
    userinfo, at, location = rest.rpartition("@")
    hostlist, slash, tail = location.partition("/")
    if "," not in hostlist:
        return create_async_engine(url, connect_args=connect_args, **options)
    hosts = [_host_and_port(part) for part in hostlist.split(",")]
    first = make_url(f"{scheme}://{userinfo}{at}{hostlist.split(',')[0]}{slash}{tail}")
    # SQLAlchemy hands a creator nothing: it gets the arguments SQLAlchemy would have
    # connected with (the URL's charset, the found-rows flag), plus ours.
    _, params = first.get_dialect()().create_connect_args(first)
    rotation = _HostRotation(hosts, {**params, **connect_args})
    return create_async_engine(first, async_creator=rotation.connect, **options)


def _host_and_port(part: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (port 3306 by default)."""
    part = part.strip()
    host, colon, port = part.rpartition(":")
    if not colon or (host.count(":") and not host.endswith("]")):  # no port given
        host, port = part, "3306"
    if not host or not port.isdigit():
        raise ConfigError(
            f"A MySQL URL names its hosts as host:port,host:port; got {part!r} among them."
        )
    return host.strip("[]"), int(port)


class _HostRotation:
    """Connects to the host that last answered, else to each of the others in turn.

    Staying on one node while it works keeps an app's writes on one Galera node, where
    they never fail certification against each other.
    """

    def __init__(self, hosts: list[tuple[str, int]], params: dict[str, Any]) -> None:
        self._hosts = hosts
        self._params = params
        self._current = 0

    async def connect(self) -> Any:
        import asyncmy
        from asyncmy.errors import MySQLError

        failure: BaseException | None = None
        for step in range(len(self._hosts)):
            index = (self._current + step) % len(self._hosts)
            host, port = self._hosts[index]
            try:
                conn = await asyncmy.connect(**{**self._params, "host": host, "port": port})
            except (MySQLError, OSError) as exc:
                failure = exc
                continue
            try:
                # A node outside the primary component accepts connections but refuses
                # queries (1047): go on to the next one.
                async with conn.cursor() as cursor:
                    await cursor.execute("SELECT 1")
            except (MySQLError, OSError) as exc:
                conn.close()
                failure = exc
                continue
            self._current = index
            return conn
        assert failure is not None
        raise failure


def _wait_for_the_cluster_on_reads(engine: AsyncEngine) -> None:
    """Make every read wait for the writes the cluster committed before it (Galera)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SET SESSION wsrep_sync_wait = 1")
        finally:
            cursor.close()


class _AsyncmyFastPath(FastPath):
    """`FastPath` on asyncmy connections."""

    def __init__(self, engine: AsyncEngine, statements: Mapping[str, ClauseElement]) -> None:
        self.errors = (*Dialect.driver_errors(), OSError)
        super().__init__(engine, statements)

    async def _execute(self, conn: Any, sql: str, args: list[Any], fetch: Fetch) -> Any:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, args)
            if fetch == "count":
                result = cursor.rowcount
            else:
                row = await cursor.fetchone()
                result = None if row is None else row[0] if fetch == "value" else row
        if not conn.get_autocommit():
            # An engine the app passed in without autocommit: the statement opened a
            # transaction that the pool would roll back at checkin (losing a write), and
            # that would pin a kept connection's reads to an old snapshot. Commit it.
            await conn.commit()
        return result

    def _lost(self, conn: Any, exc: BaseException) -> bool:
        return (
            not conn.connected
            or isinstance(exc, OSError)
            or Dialect.classify(exc) is ErrorKind.LOST
        )

    def _conflict(self, exc: BaseException) -> bool:
        return Dialect.classify(exc) is ErrorKind.CONFLICT
