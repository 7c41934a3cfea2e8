"""PostgreSQL through asyncpg: upsert with ON CONFLICT, advisory locks, ctid batches.

The fast path runs the driver's statements as asyncpg prepared statements: asyncpg
prepares each once per connection and keeps it in its statement cache, so an operation
is one Bind/Execute round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, Table, any_, bindparam, delete, func, literal_column, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import ClauseElement, ColumnElement

from .._fast import FastPath, Fetch
from ._base import (
    SECRECY,
    CleanupJob,
    ErrorKind,
    SQLDialect,
    delete_in_batches,
    key_param,
    lock_id,
    on_conflict_insert_if_absent,
    on_conflict_upsert,
    renew_returning,
    then,
    undo_quietly,
)

if TYPE_CHECKING:
    from ...._sql_options import SQLOptions

__all__ = ["Dialect"]

# SQLSTATE classes and codes (PostgreSQL's appendix A).
_UNAVAILABLE_CLASSES = ("08", "28", "3D", "57")  # connection, auth, database, shutdown
_UNAVAILABLE_CODES = ("53300",)  # too many connections
_QUERY_CANCELED = "57014"  # class 57, but a cancelled statement, not a server going away
_CONFLICTS = ("40001", "40P01")  # serialization failure, deadlock
_UNAVAILABLE_TEXT = ("connect call failed", "password authentication failed")


class Dialect(SQLDialect):
    """PostgreSQL 12 and later."""

    extra = "postgres"
    driver_package = "asyncpg"
    title = "PostgreSQL"
    supports_schema = True

    def __init__(self, table: Table) -> None:
        super().__init__(table)
        c = table.c
        self._insert = postgresql.insert(table)
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
        self._add = on_conflict_insert_if_absent(self._insert, table)
        self._renew = renew_returning(table)
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
        self._try_lock = text("SELECT pg_try_advisory_lock(:k)").bindparams(k=self._lock_key)
        self._unlock = text("SELECT pg_advisory_unlock(:k)").bindparams(k=self._lock_key)

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
    def create_engine(cls, url: str, options: SQLOptions) -> AsyncEngine:
        connect_args: dict[str, Any] = {}
        if options.durability == "relaxed":
            connect_args["server_settings"] = {"synchronous_commit": "off"}
        pool_size = options.pool_size or cls.default_pool_size
        return create_async_engine(
            url,
            isolation_level="AUTOCOMMIT",
            **SECRECY,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args=connect_args,
        )

    def upsert(self) -> Insert:
        return on_conflict_upsert(self._insert, self.table)

    def upsert_rows(self, rows: list[dict[str, Any]]) -> Insert:
        return on_conflict_upsert(self._insert, self.table, rows)

    def insert_if_absent(self) -> Insert:
        return self._add

    async def renew_entry(self, conn: AsyncConnection, params: dict[str, Any]) -> Any:
        return (await conn.execute(self._renew, params)).first()

    def prefix_cleanup(self, bounded: bool) -> Any:
        key = self.table.c.key
        conditions = [key >= key_param("low")]
        if bounded:
            conditions.append(key < key_param("high"))
        return self._cleanup_batch(*conditions)

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
        if not await conn.scalar(self._try_lock):
            return None
        async with then(conn, self._unlock):
            if await self._mostly_expired(conn, job):
                return await self._sweep(conn, job)
            return await delete_in_batches(conn, self._cleanup, job)

    async def _mostly_expired(self, conn: AsyncConnection, job: CleanupJob) -> bool:
        # The planner's own estimate decides: it reads the whole table when the expired
        # rows are too many for the expires_at index to pay. Batches with a LIMIT would
        # then restart that scan from the first page each time, and the last one would
        # read the entire table to find nothing more.
        plan = await conn.scalar(self._explain_expired, {"now": job.now_ms()})
        return str(plan).lstrip().startswith("Seq Scan")

    async def _sweep(self, conn: AsyncConnection, job: CleanupJob) -> int:
        pages = int(await conn.scalar(self._relation_pages, {"name": self._qualified_name}) or 0)
        step = max(1, job.batch_size // 20)
        total = 0
        for first in range(0, pages, step):
            params = {"now": job.now_ms(), "lo": (first, 0), "hi": (first + step, 0)}
            total += (await conn.execute(self._sweep_range, params)).rowcount
            await asyncio.sleep(0)  # let the app's own queries through
        return total

    def fast_path(
        self, engine: AsyncEngine, statements: Mapping[str, ClauseElement]
    ) -> FastPath | None:
        return _AsyncpgFastPath(engine, statements) if engine.dialect.driver == "asyncpg" else None

    @classmethod
    def driver_errors(cls) -> tuple[type[BaseException], ...]:
        import asyncpg

        return (asyncpg.PostgresError, asyncpg.InterfaceError)

    @classmethod
    def classify(cls, error: BaseException) -> ErrorKind | None:
        sqlstate = str(
            getattr(error, "sqlstate", None)
            or getattr(getattr(error, "__cause__", None), "sqlstate", None)
            or ""
        )
        lowered = str(error).lower()
        if sqlstate == "42P01" or ("relation" in lowered and "does not exist" in lowered):
            return ErrorKind.MISSING_TABLE
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

    def __init__(self, engine: AsyncEngine, statements: Mapping[str, ClauseElement]) -> None:
        self.errors = (*Dialect.driver_errors(), OSError)
        super().__init__(engine, statements)

    async def _execute(self, conn: Any, sql: str, args: list[Any], fetch: Fetch) -> Any:
        if fetch == "value":
            return await conn.fetchval(sql, *args)
        if fetch == "row":
            return await conn.fetchrow(sql, *args)
        status: str = await conn.execute(sql, *args)
        # The command tag ends with the row count: "UPDATE 1", "INSERT 0 1".
        return int(status.rsplit(" ", 1)[-1])

    def _lost(self, conn: Any, exc: BaseException) -> bool:
        return bool(conn.is_closed()) or isinstance(exc, OSError)
