"""PostgreSQL through asyncpg: upsert with ON CONFLICT, advisory locks, ctid batches.

The fast path runs the driver's statements as prepared statements: each is prepared
once per connection under a name unique to this process, so an operation is one
Bind/Execute round trip. Behind a pooler in transaction mode (pgbouncer) a server
connection serves many clients, so a statement prepared on one is missing on the next:
with prepared statements off (the option, the URL's ``statement_cache_size=0``, or
on the first statement the server has lost) every statement is sent unnamed, parsed
and run in one exchange the pooler keeps on one server connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import (
    String,
    Table,
    any_,
    bindparam,
    delete,
    event,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.expression import ClauseElement, ColumnElement

from .._fast import FastPath, Fetch
from ._base import (
    SECRECY,
    CleanupJob,
    ErrorKind,
    OnConflictDialect,
    key_param,
    lock_id,
    undo_quietly,
)
from ._merge import MergeStatement, PostgresMerge

if TYPE_CHECKING:
    from ...._sql_options import SQLOptions

__all__ = ["Dialect"]

# SQLSTATE classes and codes (PostgreSQL's appendix A).
_UNAVAILABLE_CLASSES = ("08", "28", "3D", "57")  # connection, auth, database, shutdown
_UNAVAILABLE_CODES = ("53300", "55000")  # too many connections, not accepting them
_QUERY_CANCELED = "57014"  # class 57, but a cancelled statement, not a server going away
_CONFLICTS = ("40001", "40P01")  # serialization failure, deadlock
_UNAVAILABLE_TEXT = (
    "connect call failed",
    "password authentication failed",
    # pgbouncer's own refusals carry a protocol-violation code (08P01).
    "no more connections allowed",
    "no such database",
    "pgbouncer cannot connect to server",
    # asyncpg, when no host of a multi-host URL is what target_session_attrs asks for
    # (in a failover, before the standby is promoted).
    "match the target attribute",
)
# The connection itself went away: the server ended it (a shutdown, a terminated
# backend) or it broke mid-operation; a fresh connection may do.
_LOST_CODES = ("08003", "08006", "57P01", "57P02")
_LOST_TEXT = ("connection was closed", "cannot switch to state", "connection is closed")
# A prepared statement the server does not have, or has twice: a pooler in transaction
# mode handed this client another server connection.
_STATEMENT_LOST = ("26000", "42P05")
_READ_ONLY = "25006"


class _Preparing:
    """Whether an engine's connections prepare named statements; switched off for good."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.replaced = not on  # the connections made while it was on are gone
        # Held while they are replaced, so no caller retries on one of them meanwhile.
        self.replacing = asyncio.Lock()

    def connect_args(self) -> dict[str, Any]:
        if not self.on:
            # Unnamed statements only, in asyncpg and in SQLAlchemy's adapter.
            return {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
        # SQLAlchemy's adapter prepares under names unique to this process, so a
        # statement another process prepared on a pooled server connection is never
        # taken for ours: the server says it is missing instead.
        return {"prepared_statement_name_func": _unique_name}


async def _connect_to_the_end(*args: Any, **kwargs: Any) -> Any:
    """asyncpg's connect, run to its end when the caller is cancelled.

    A connect cancelled in the middle of its TLS negotiation leaves a future holding
    "unexpected connection_lost() call" that asyncio logs as never retrieved. Left to
    finish, the connect's outcome is collected here: a connection nobody wants any more
    is closed, a failure is dropped.
    """
    import asyncpg

    connecting = asyncio.ensure_future(asyncpg.connect(*args, **kwargs))
    try:
        return await asyncio.shield(connecting)
    except asyncio.CancelledError:
        connecting.add_done_callback(_close_unwanted)
        raise


def _close_unwanted(connecting: asyncio.Future[Any]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().terminate()


def _unique_name() -> str:
    return f"__sqlsession_{uuid.uuid4().hex}__"


# The engines this module created, and whether they prepare.
_PREPARING: weakref.WeakKeyDictionary[Engine, _Preparing] = weakref.WeakKeyDictionary()


class Dialect(OnConflictDialect):
    """PostgreSQL 12 and later."""

    extra = "postgres"
    driver_package = "asyncpg"
    title = "PostgreSQL"
    supports_schema = True
    supports_statement_timeout = True

    def __init__(self, table: Table) -> None:
        super().__init__(table)
        c = table.c
        self._insert = postgresql.insert(table)
        self._on_conflict_statements()
        self._lock_key = int.from_bytes(
            lock_id("cleanup", table.name, table.schema), "big", signed=True
        )
        # merge_item: lock (or create) the row and read what it holds, in one statement.
        self._lock_row = (
            self._insert.values(key=key_param("k"), value="{}", expires_at=None)
            .on_conflict_do_update(index_elements=[c.key], set_={"key": self._insert.excluded.key})
            .returning(c.value, c.expires_at)
        )
        # merge_existing: lock the row if there is one; create nothing.
        self._read_locked = (
            select(c.value, c.expires_at).where(c.key == key_param("k")).with_for_update()
        )
        expired = c.expires_at <= bindparam("now")
        # Rows are picked by their physical address, so the DELETE fetches each one
        # directly instead of probing the key index again: about three times the rows
        # per second. No ORDER BY: with many rows expired the planner reads the table
        # in physical order, so a batch dirties few pages (index order was 4x slower).
        ctid: ColumnElement[Any] = literal_column("ctid")
        self._cleanup = self._cleanup_batch()
        # The sweep: the rows of one range of pages, read by a TID range scan.
        in_pages = (
            select(ctid)
            .select_from(table)
            .where(ctid >= bindparam("lo"), ctid < bindparam("hi"), expired)
            .with_for_update(skip_locked=True)
        )
        self._sweep_range = delete(table).where(
            ctid == any_(func.array(in_pages.scalar_subquery())), expired
        )
        # Identifiers here are validated by check_identifier, and quoted.
        self._qualified_name = (
            f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
        )
        self._explain_expired = text(
            f"EXPLAIN SELECT ctid FROM {self._qualified_name} WHERE expires_at <= :now"
        )
        self._relation_pages = text(
            "SELECT pg_relation_size(CAST(:name AS regclass)) / current_setting('block_size')::int"
        )
        # Transaction-scoped: released when the batch's transaction ends, on whatever
        # server connection a pooler gave it, so it can never outlive its work.
        self._try_lock = text("SELECT pg_try_advisory_xact_lock(:k)").bindparams(k=self._lock_key)
        self._wait_lock = text(
            "SELECT true FROM (SELECT pg_advisory_xact_lock(:k)) AS taken"
        ).bindparams(k=self._lock_key)

    def _cleanup_batch(self, *conditions: ColumnElement[bool]) -> Any:
        expired = self.table.c.expires_at <= bindparam("now")
        ctid: ColumnElement[Any] = literal_column("ctid")
        # Rows a writer holds are skipped rather than waited for, and the outer
        # condition re-checks expiry on the row version the DELETE actually sees, so a
        # session refreshed during cleanup is never deleted. The locks also keep each
        # picked ctid pointing at the same row until the DELETE reaches it.
        batch = (
            select(ctid)
            .select_from(self.table)
            .where(expired, *conditions)
            .limit(bindparam("batch"))
            .with_for_update(skip_locked=True)
        )
        # ctid = ANY(ARRAY(...)) is what PostgreSQL runs as a TID scan.
        return delete(self.table).where(ctid == any_(func.array(batch.scalar_subquery())), expired)

    @classmethod
    def table_definition(cls) -> dict[str, Any]:
        # The "C" collation orders keys by code point, as SQLite does, so prefix ranges
        # agree across databases and can use the primary key index.
        return {"key_type": String(255, collation="C")}

    @classmethod
    def connect_args(cls, url: str, options: SQLOptions) -> dict[str, Any]:
        settings: dict[str, str] = {}
        if options.durability == "relaxed":
            settings["synchronous_commit"] = "off"
        if options.statement_timeout is not None:
            # Checked by the server, lock waits included; the connection stays usable.
            settings["statement_timeout"] = str(max(1, round(options.statement_timeout * 1000)))
        query = dict(parse_qsl(url.partition("?")[2]))
        if "application_name" in query:
            # libpq takes it in the URL; asyncpg only as a server setting.
            settings["application_name"] = query["application_name"]
        args: dict[str, Any] = {"server_settings": settings} if settings else {}
        if options.connect_timeout is not None:
            args["timeout"] = options.connect_timeout
        if options.prepared_statements is False:
            args.update(statement_cache_size=0, prepared_statement_cache_size=0)
        return args

    @classmethod
    def create_engine(cls, url: str, options: SQLOptions) -> AsyncEngine:
        pool_size = options.pool_size or cls.default_pool_size
        engine = create_async_engine(
            cls.engine_url(url),
            isolation_level="AUTOCOMMIT",
            **SECRECY,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args=cls.connect_args(url, options),
        )
        preparing = _Preparing(options.prepared_statements is not False)
        _PREPARING[engine.sync_engine] = preparing

        @event.listens_for(engine.sync_engine, "do_connect")
        def _on_connect(_dialect: Any, _record: Any, _cargs: Any, cparams: Any) -> None:
            cparams.update(preparing.connect_args())
            cparams["async_creator_fn"] = _connect_to_the_end

        return engine

    @classmethod
    def engine_url(cls, url: str) -> str:
        return _without(url, "application_name")

    @staticmethod
    async def stop_preparing(engine: AsyncEngine) -> bool:
        """Turn named prepared statements off for `engine`, after the server lost one.

        Returns:
            False when the engine was not created here (it is the caller's to set up).
        """
        preparing = _PREPARING.get(engine.sync_engine)
        if preparing is None:
            return False
        preparing.on = False
        async with preparing.replacing:
            if not preparing.replaced:
                # Connections made so far hold named statements: replace them all.
                await engine.dispose()
                preparing.replaced = True
        return True

    @contextlib.asynccontextmanager
    async def locked_row(
        self, conn: AsyncConnection, key: str, *, create: bool = True
    ) -> AsyncIterator[Any]:
        # The engine autocommits; this one connection runs a real transaction, so the
        # row lock taken by the upsert lasts until the write commits.
        await conn.execution_options(isolation_level="READ COMMITTED")
        await conn.begin()
        try:
            lock = self._lock_row if create else self._read_locked
            yield (await conn.execute(lock, {"k": key})).first()
        except BaseException:
            await undo_quietly(conn, conn.rollback)
            raise
        await conn.commit()

    async def cleanup(self, conn: AsyncConnection, job: CleanupJob) -> int | None:
        """One runner at a time per table (an advisory lock); sweeps a mostly expired table.

        When most of the table has expired (the planner would read the whole table to
        find the expired rows), the table is swept in ranges of ``batch_size // 20``
        pages instead, so the work per statement stays bounded and the last batch does
        not scan the whole table again.
        """
        sweep = await self._mostly_expired(conn, job)
        if sweep:
            pages = await conn.scalar(self._relation_pages, {"name": self._qualified_name})
        # Each batch is a transaction of its own from here (ending SQLAlchemy's
        # autobegun one first: on an autocommit connection it holds nothing).
        await conn.commit()
        await conn.execution_options(isolation_level="READ COMMITTED")
        if sweep:
            return await self._sweep(conn, job, int(pages or 0))
        while True:
            first = not job.committed
            started, size = time.perf_counter(), job.size
            deleted = await self._locked(
                conn, self._cleanup, {"now": job.now_ms(), "batch": size}, first
            )
            if deleted is None:
                return None  # another runner holds the lock: it does the work
            # Counted once committed: a retry after a lost connection goes on from here.
            job.committed.append(deleted)
            if deleted < size:
                return sum(job.committed)
            await job.pause(time.perf_counter() - started, _let_others_in)

    async def _locked(
        self, conn: AsyncConnection, statement: Any, params: dict[str, Any], first: bool
    ) -> int | None:
        """Run one batch in a transaction of its own that holds the cleanup lock.

        The first batch of a run only tries the lock; a later one waits for it (another
        runner that came between two batches holds it for one batch), so a run that
        has started finishes the table, taking turns with any other.

        Returns:
            The rows deleted, or None when `first` and another runner holds the lock.
        """
        await conn.begin()
        try:
            if not await conn.scalar(self._try_lock if first else self._wait_lock):
                await conn.rollback()
                return None
            deleted: int = (await conn.execute(statement, params)).rowcount
        except BaseException:
            await undo_quietly(conn, conn.rollback)
            raise
        await conn.commit()
        return deleted

    async def _mostly_expired(self, conn: AsyncConnection, job: CleanupJob) -> bool:
        # The planner's own estimate decides: it reads the whole table when the expired
        # rows are too many for the expires_at index to pay. Batches with a LIMIT would
        # then restart that scan from the first page each time, and the last one would
        # read the entire table to find nothing more.
        plan = await conn.scalar(self._explain_expired, {"now": job.now_ms()})
        return str(plan).lstrip().startswith("Seq Scan")

    async def _sweep(self, conn: AsyncConnection, job: CleanupJob, pages: int) -> int | None:
        first = 0
        # At least one batch, so an empty table still tells whether another runner is on.
        while True:
            step = max(1, job.size // 20)
            started = time.perf_counter()
            params = {"now": job.now_ms(), "lo": (first, 0), "hi": (first + step, 0)}
            deleted = await self._locked(conn, self._sweep_range, params, not job.committed)
            if deleted is None:
                return None
            job.committed.append(deleted)
            first += step
            if first >= pages:
                return sum(job.committed)
            await job.pause(time.perf_counter() - started, _let_others_in)

    def fast_path(
        self, engine: AsyncEngine, statements: Mapping[str, ClauseElement]
    ) -> FastPath | None:
        if engine.dialect.driver != "asyncpg":
            return None
        return _AsyncpgFastPath(engine, statements, _PREPARING.get(engine.sync_engine))

    def merge_statement(self) -> MergeStatement | None:
        return PostgresMerge(self._qualified_name)

    @classmethod
    def refuses_json(cls, error: BaseException) -> bool:
        # Class 22, data exception: invalid JSON text (22P02), a \u0000 a text cannot
        # hold (22P05), a NUL byte (22021).
        return str(getattr(error, "sqlstate", None) or "").startswith("22")

    @classmethod
    def driver_errors(cls) -> tuple[type[BaseException], ...]:
        import asyncpg

        return (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)

    @classmethod
    def classify(cls, error: BaseException) -> ErrorKind | None:
        sqlstate = str(
            getattr(error, "sqlstate", None)
            or getattr(getattr(error, "__cause__", None), "sqlstate", None)
            or ""
        )
        lowered = str(error).lower()
        if sqlstate in _STATEMENT_LOST or (
            "prepared statement" in lowered and "does not exist" in lowered
        ):
            return ErrorKind.STATEMENT_LOST
        if sqlstate == "42P01" or ("relation" in lowered and "does not exist" in lowered):
            return ErrorKind.MISSING_TABLE
        if sqlstate in _LOST_CODES or any(t in lowered for t in _LOST_TEXT):
            return ErrorKind.LOST
        if sqlstate == _QUERY_CANCELED and "timeout" in lowered:
            return ErrorKind.TIMEOUT
        if sqlstate == _READ_ONLY:
            return ErrorKind.READ_ONLY
        if (
            (sqlstate[:2] in _UNAVAILABLE_CLASSES and sqlstate != _QUERY_CANCELED)
            or sqlstate in _UNAVAILABLE_CODES
            or any(t in lowered for t in _UNAVAILABLE_TEXT)
        ):
            return ErrorKind.UNAVAILABLE
        if sqlstate in _CONFLICTS:
            return ErrorKind.CONFLICT
        if sqlstate == "55P03":
            return ErrorKind.LOCK_TIMEOUT
        if sqlstate == "42P07":
            return ErrorKind.ALREADY_EXISTS
        if sqlstate == "3F000":
            return ErrorKind.MISSING_SCHEMA
        return None

    @classmethod
    @contextlib.contextmanager
    def migration_lock(
        cls, connection: Connection, table: str, schema: str | None
    ) -> Iterator[None]:
        # Lasts until the migration's transaction ends.
        key = int.from_bytes(lock_id("migrate", table, schema), "big", signed=True)
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        yield


class _AsyncpgFastPath(FastPath):
    """`FastPath` on asyncpg connections."""

    def __init__(
        self,
        engine: AsyncEngine,
        statements: Mapping[str, ClauseElement],
        preparing: _Preparing | None,
    ) -> None:
        self.errors = (*Dialect.driver_errors(), OSError)
        # An engine handed to the driver prepares as its owner set it up.
        self._preparing = preparing or _Preparing(True)
        # Each connection's prepared statements, by SQL text; dropped with it.
        self._prepared: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        super().__init__(engine, statements)

    async def _execute(self, conn: Any, sql: str, args: list[Any], fetch: Fetch) -> Any:
        if self._preparing.on:
            cache = self._prepared.setdefault(conn, {})
            statement = cache.get(sql)
            if statement is None:
                statement = cache[sql] = await conn.prepare(sql, name=_unique_name())
        else:
            # The unnamed statement: Parse and Bind go out before one Sync, so a pooler
            # keeps them on one server connection.
            statement = await conn.prepare(sql, name="")
        if fetch == "value":
            return await statement.fetchval(*args)
        if fetch == "row":
            return await statement.fetchrow(*args)
        await statement.fetch(*args)
        # The command tag ends with the row count: "UPDATE 1", "INSERT 0 1".
        return int(statement.get_statusmsg().rsplit(" ", 1)[-1])

    def _lost(self, conn: Any, exc: BaseException) -> bool:
        import asyncpg

        if isinstance(exc, TimeoutError):
            return False  # a timeout is never run again into twice the time
        if isinstance(exc, asyncpg.InvalidCachedStatementError):
            # The table changed under a prepared statement (a migration): a new
            # connection prepares afresh; asyncpg only redoes statements of its own cache.
            return True
        return bool(conn.is_closed()) or isinstance(exc, OSError) or _is_lost(exc)

    def _conflict(self, exc: BaseException) -> bool:
        kind = Dialect.classify(exc)
        if kind is ErrorKind.STATEMENT_LOST:
            # A pooler between us and the server: from now on, unnamed statements.
            # The statement never ran (Bind found no statement), so it runs again.
            self._preparing.on = False
            return True
        return kind is ErrorKind.CONFLICT


def _is_lost(exc: BaseException) -> bool:
    return Dialect.classify(exc) is ErrorKind.LOST


def _without(url: str, name: str) -> str:
    location, _, query = url.partition("?")
    pairs = [(key, value) for key, value in parse_qsl(query) if key != name]
    return f"{location}?{urlencode(pairs)}" if pairs else location


async def _let_others_in(_elapsed: float) -> None:
    await asyncio.sleep(0)  # the app's own queries go between two batches
