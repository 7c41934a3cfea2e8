"""The SQL driver: JSON session values in one keyed table on SQLite or PostgreSQL.

Every operation is one statement on an autocommit connection, except `merge_item`, a
short transaction that locks the row it changes. Expiry is filtered in SQL, so an
expired row is never returned, counted or listed, whether or not cleanup has run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    Table,
    any_,
    bindparam,
    delete,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.expression import ColumnElement

from .. import _codec, _validate
from .._table import SCHEMA_REVISION, session_table, version_table_name
from .._url import redact_url, resolve_url
from ..errors import (
    ConfigError,
    DatabaseUnavailableError,
    SchemaError,
    SessionError,
    StorageError,
)
from ._base import DEFAULT, Clock, ExpiryMixin, apply_merge, prepare_merge
from ._fast import FastPath, give_way, pool_drained

__all__ = ["SQLDriver", "create_driver"]

logger = logging.getLogger("sqlsession")
T = TypeVar("T")

_CONFIG_KEYS = frozenset(
    {
        "url",
        "table",
        "schema",
        "ttl",
        "pool_size",
        "durability",
        "cleanup_interval",
        "cleanup_batch_size",
    }
)
# SQLite has one writer at a time: a pool larger than this only queues tasks on more
# aiosqlite threads (measured: get p50 1.2 ms with 16 connections, 0.27 ms with 4, for
# 16 busy tasks on 2 cores), and each connection keeps its own page cache.
_SQLITE_POOL_SIZE = 4
# A cleanup batch holds SQLite's only write lock. On a table with random session keys
# 500 rows took 16 ms (median) and at most 38 ms under load, 1000 rows 29 ms and at
# most 74 ms, 5000 about 300 ms.
_SQLITE_CLEANUP_BATCH = 500
# How long a SQLite writer waits for the database lock before giving up.
_SQLITE_BUSY_TIMEOUT_MS = 30_000


class SQLDriver(ExpiryMixin):
    """Session storage in one table of a SQLite or PostgreSQL database.

    Args:
        url: the database URL (see `sqlsession.session_drivers.sql`); None means
            ``$SQLSESSION_URL``, else ``sqlite:///sqlsession.db``. Ignored when `engine`
            is given.
        table: the session table, created by ``sqlsession migrate --table``.
        schema: the PostgreSQL schema of the table (None: the search path).
        ttl: default lifetime of an item in seconds (None: no expiry).
        pool_size: connections kept open (None: 16 on PostgreSQL, 4 on SQLite).
        durability: ``"relaxed"`` commits with ``synchronous_commit = off`` on PostgreSQL.
        cleanup_interval: seconds between in-process cleanups (None: off).
        cleanup_batch_size: rows deleted per cleanup statement (None: 5000 on
            PostgreSQL, 500 on SQLite).
        engine: an `AsyncEngine` to use instead of creating one; the driver then leaves
            it open on `dispose`, runs its operations on an autocommit copy of it, and
            sets nothing on its connections (except that a SQLite cleanup turns its
            connection's autocheckpoint off while it runs, and back): for SQLite, set
            WAL and a busy timeout on it yourself (the engine the driver creates has
            both).
        clock: returns seconds since the epoch (``time.time``); tests move it.

    Raises:
        ConfigError, InvalidTTLError: an option is invalid.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        table: str = "sqlsession",
        schema: str | None = None,
        ttl: float | None = None,
        pool_size: int | None = None,
        durability: Literal["full", "relaxed"] = "full",
        cleanup_interval: float | None = None,
        cleanup_batch_size: int | None = None,
        engine: AsyncEngine | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(ttl, clock)
        _validate.check_sql_options(
            table=table,
            schema=schema,
            ttl=ttl,
            pool_size=pool_size,
            durability=durability,
            cleanup_interval=cleanup_interval,
            cleanup_batch_size=cleanup_batch_size,
        )
        self.table_name = table
        self.schema = schema
        self.cleanup_interval = cleanup_interval
        self.last_cleanup_skipped = False
        """True when the last `cleanup` found another process cleaning (PostgreSQL)."""

        if engine is not None:
            self._owns_engine = False
            # Each operation commits on its own, whatever the given engine's default is;
            # the copy shares the engine's pool.
            self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
            self.url = engine.url.render_as_string(hide_password=True)
        else:
            self._owns_engine = True
            full_url = resolve_url(url)
            self.url = redact_url(full_url)
            self.engine = _create_engine(full_url, pool_size, durability)
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"The SQL driver supports SQLite and PostgreSQL, not {self.dialect!r}."
            )
        if cleanup_batch_size is None:
            cleanup_batch_size = _SQLITE_CLEANUP_BATCH if self.dialect == "sqlite" else 5000
        self.cleanup_batch_size = cleanup_batch_size
        if self.dialect == "sqlite" and self.schema is not None:
            raise ConfigError("schema is a PostgreSQL option; SQLite has none.")
        self._sqlite_path = _sqlite_file(self.engine) if self.dialect == "sqlite" else None
        self._table = session_table(self.table_name, self.schema)
        self._build_statements(self._table)
        self._fast = _fast_path(self.engine, self._fast_statements())
        # What a fast-path operation may raise that is mapped to our errors.
        self._fast_errors: tuple[type[BaseException], ...] = (
            *(self._fast.errors if self._fast is not None else ()),
            SQLAlchemyError,
            OSError,
        )
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._cleanup_task: asyncio.Task[None] | None = None

    def _build_statements(self, t: Table) -> None:
        # Built once and reused, so each call only binds parameters.
        c = t.c
        live = or_(c.expires_at.is_(None), c.expires_at > bindparam("now"))
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(t)
        self._get = select(c.value).where(c.key == bindparam("k"), live)
        self._has = select(literal(1)).where(c.key == bindparam("k"), live)
        self._set = insert.values(
            key=bindparam("k"), value=bindparam("v"), expires_at=bindparam("exp")
        ).on_conflict_do_update(
            index_elements=[c.key],
            set_={"value": insert.excluded.value, "expires_at": insert.excluded.expires_at},
        )
        self._remove = delete(t).where(c.key == bindparam("k"))
        self._touch = (
            update(t).where(c.key == bindparam("k"), live).values(expires_at=bindparam("exp"))
        )
        in_range = (c.key >= bindparam("low"), c.key < bindparam("high"))
        self._keys_all = select(c.key).where(live).order_by(c.key)
        self._keys_from = select(c.key).where(live, c.key >= bindparam("low")).order_by(c.key)
        self._keys_range = select(c.key).where(live, *in_range).order_by(c.key)
        self._clear_all = delete(t)
        self._clear_from = delete(t).where(c.key >= bindparam("low"))
        self._clear_range = delete(t).where(*in_range)
        self._stats = select(
            func.count().filter(live).label("live"),
            func.count().filter(c.expires_at <= bindparam("now")).label("expired"),
        )
        expired = c.expires_at <= bindparam("now")
        # Rows are picked by their physical address (PostgreSQL's ctid, SQLite's rowid),
        # so the DELETE fetches each one directly instead of probing the key index
        # again: about three times the rows per second on PostgreSQL.
        row_id: ColumnElement[Any] = literal_column(
            "ctid" if self.dialect == "postgresql" else "rowid"
        )
        # No ORDER BY: with many rows expired the planner reads the table in physical
        # order, so a batch dirties few pages (an index-ordered batch was 4x slower).
        batch = select(row_id).select_from(t).where(expired).limit(bindparam("batch"))
        if self.dialect == "postgresql":
            # Rows a writer holds are skipped rather than waited for, and the outer
            # condition re-checks expiry on the row version the DELETE actually sees, so
            # a session refreshed during cleanup is never deleted. The locks also keep
            # each picked ctid pointing at the same row until the DELETE reaches it.
            batch = batch.with_for_update(skip_locked=True)
            # One value per table, stable across processes, for pg_try_advisory_lock.
            name = f"sqlsession.cleanup:{self.schema or ''}.{self.table_name}"
            self._lock_key = int.from_bytes(
                hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
            )
        if self.dialect == "postgresql":
            # ctid = ANY(ARRAY(...)) is what PostgreSQL runs as a TID scan.
            picked = row_id == any_(func.array(batch.scalar_subquery()))
            # The sweep: the rows of one range of pages, read by a TID range scan.
            in_pages = (
                select(row_id)
                .select_from(t)
                .where(row_id >= bindparam("lo"), row_id < bindparam("hi"), expired)
                .with_for_update(skip_locked=True)
            )
            self._sweep_range = delete(t).where(
                row_id == any_(func.array(in_pages.scalar_subquery())), expired
            )
            # Identifiers here are validated by check_identifier, and quoted.
            self._qualified_name = (
                f'"{self.schema}"."{self.table_name}"' if self.schema else f'"{self.table_name}"'
            )
            self._explain_expired = text(
                f"EXPLAIN SELECT ctid FROM {self._qualified_name} WHERE expires_at <= :now"
            )
            self._relation_pages = text(
                "SELECT pg_relation_size(CAST(:name AS regclass)) "
                "/ current_setting('block_size')::int"
            )
            self._try_lock = text("SELECT pg_try_advisory_lock(:k)")
            self._unlock = text("SELECT pg_advisory_unlock(:k)")
        else:
            picked = row_id.in_(batch.scalar_subquery())
            self._sqlite_autocheckpoint = text("PRAGMA wal_autocheckpoint")
            self._sqlite_autocheckpoint_off = text("PRAGMA wal_autocheckpoint = 0")
            self._sqlite_checkpoint = text("PRAGMA wal_checkpoint(PASSIVE)")
        self._cleanup = delete(t).where(picked, expired)
        # merge_item: lock (or create) the row and read what it holds, in one statement.
        self._merge_lock = (
            insert.values(key=bindparam("k"), value="{}", expires_at=None)
            .on_conflict_do_update(index_elements=[c.key], set_={"key": insert.excluded.key})
            .returning(c.value, c.expires_at)
        )
        self._merge_read = select(c.value, c.expires_at).where(c.key == bindparam("k"))
        self._merge_write = (
            update(t)
            .where(c.key == bindparam("k"))
            .values(value=bindparam("v"), expires_at=bindparam("exp"))
        )

    # -- the contract -------------------------------------------------------------------

    async def get_item(self, key: str) -> Any:
        """Return the value stored under `key`, or None when it is absent or expired.

        Raises:
            InvalidKeyError: `key` is not a valid session key.
            SchemaError: the table is missing or not migrated.
            StorageError: the database failed the read.
        """
        params = {"k": _validate.check_key(key), "now": self._now_ms()}
        text = await self._scalar("get", params)
        return None if text is None else _codec.decode(text)

    async def set_item(self, key: str, value: Any, *, ttl: Any = DEFAULT) -> None:
        """Store `value` under `key`, replacing what was there.

        Args:
            key: the session key.
            value: a JSON value (dict with str keys, list, tuple, str, int, float, bool,
                None).
            ttl: seconds until the item expires; by default the driver's ``ttl``; None
                for no expiry.

        Raises:
            InvalidKeyError, InvalidTTLError, ValueNotSerializableError: bad input;
                nothing is written.
            SchemaError, StorageError: as for `get_item`.
        """
        _validate.check_key(key)
        params = {"k": key, "exp": self._expires_at(ttl), "v": _codec.encode(key, value)}
        await self._rowcount("set", params)

    async def remove_item(self, key: str) -> None:
        """Delete `key`; an absent key is not an error."""
        params = {"k": _validate.check_key(key)}
        await self._rowcount("remove", params)

    # -- the built-in extras ------------------------------------------------------------

    async def has_item(self, key: str) -> bool:
        """Whether a live item is stored under `key` (also when its value is None)."""
        params = {"k": _validate.check_key(key), "now": self._now_ms()}
        return await self._scalar("has", params) is not None

    async def get_keys(self, prefix: str = "") -> list[str]:
        """The live keys that start with `prefix` (``%`` and ``_`` match literally), sorted."""
        stmt, params = self._prefix_query(prefix, self._keys_all, self._keys_from, self._keys_range)
        params["now"] = self._now_ms()

        async def keys(conn: AsyncConnection) -> list[str]:
            return list((await conn.execute(stmt, params)).scalars())

        return await self._run(keys)

    async def touch(self, key: str, ttl: Any = DEFAULT) -> bool:
        """Set the expiry of a live `key` to now + `ttl` (None: never).

        Returns:
            False when `key` is absent or already expired (nothing is written).
        """
        params = {"k": _validate.check_key(key), "now": self._now_ms()}
        params["exp"] = self._expires_at(ttl)
        return await self._rowcount("touch", params) > 0

    async def clear(self, prefix: str = "") -> None:
        """Delete every item whose key starts with `prefix` (all items by default)."""
        stmt, params = self._prefix_query(
            prefix, self._clear_all, self._clear_from, self._clear_range
        )
        await self._run(lambda conn: conn.execute(stmt, params))

    async def merge_item(
        self,
        key: str,
        set: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: Any = DEFAULT,
    ) -> dict[str, Any]:
        """Apply `set` and `delete` to the dict stored under `key` in one atomic step.

        The row is locked while it is changed, so two processes changing different keys
        of one value both win. An absent or expired item starts from an empty dict.

        Args:
            key: the session key.
            set: keys to add or replace in the stored dict.
            delete: keys to remove from it (absent ones are ignored).
            ttl: as for `set_item`; applies to the whole item.

        Returns:
            The dict now stored.

        Raises:
            ValueNotSerializableError: the stored value is not a dict, or `set` is not
                JSON; nothing is written.
        """
        changes, removals = prepare_merge(key, set, delete)
        exp = self._expires_at(ttl)

        async def merge(conn: AsyncConnection) -> dict[str, Any]:
            now = self._now_ms()
            row: Any
            if self.dialect == "postgresql":
                # The engine autocommits; this one connection runs a real transaction,
                # so the row lock taken by the upsert lasts until the write commits.
                await conn.execution_options(isolation_level="READ COMMITTED")
                await conn.begin()
                row = (await conn.execute(self._merge_lock, {"k": key})).one()
            else:
                # IMMEDIATE takes the write lock before reading, so no other writer can
                # slip in between the read and the write.
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
                row = (await conn.execute(self._merge_read, {"k": key})).first()
            try:
                stored = None if row is None or (row[1] is not None and row[1] <= now) else row[0]
                merged = apply_merge(key, stored, changes, removals)
                value = _codec.encode(key, merged)
                write = self._set if row is None else self._merge_write
                await conn.execute(write, {"k": key, "v": value, "exp": exp})
            except BaseException:
                await _rollback(conn, self.dialect)
                raise
            await _commit(conn, self.dialect)
            return merged

        return await self._run(merge, transactional=True)

    async def cleanup(self) -> int:
        """Delete expired rows in batches, so no statement holds locks for long.

        A batch is at most ``cleanup_batch_size`` rows. On PostgreSQL, when most of the
        table has expired (the planner would read the whole table to find the expired
        rows), the table is instead swept in ranges of ``cleanup_batch_size // 20``
        pages, so the work per statement stays bounded and the last batch does not
        scan the whole table again. One process at a time does the work (an advisory
        lock per table); the others return 0 at once and set `last_cleanup_skipped`.

        Returns:
            How many expired rows were deleted.
        """

        async def run(conn: AsyncConnection) -> int:
            self.last_cleanup_skipped = False
            if self.dialect != "postgresql":
                return await self._delete_in_batches_sqlite(conn)
            if not await conn.scalar(self._try_lock, {"k": self._lock_key}):
                self.last_cleanup_skipped = True
                return 0
            async with _then(conn, self._unlock.bindparams(k=self._lock_key)):
                if await self._mostly_expired(conn):
                    return await self._sweep(conn)
                return await self._delete_in_batches(conn)

        return await self._run(run, transactional=True)

    async def _delete_in_batches(self, conn: AsyncConnection) -> int:
        total = 0
        while True:
            params = {"now": self._now_ms(), "batch": self.cleanup_batch_size}
            deleted = (await conn.execute(self._cleanup, params)).rowcount
            total += deleted
            if deleted < self.cleanup_batch_size:
                return total
            await asyncio.sleep(0)  # let the app's own queries through

    async def _delete_in_batches_sqlite(self, conn: AsyncConnection) -> int:
        # A batch of deletes dirties pages all over the file (the key and expiry
        # indexes are in random order), so nearly every batch pushes the WAL past the
        # autocheckpoint size and its DELETE would also copy those pages into the
        # database file: two thirds of the statement's time, spent after the write
        # lock is released but still inside the batch. Instead this connection turns
        # its autocheckpoint off and checkpoints after each batch itself, PASSIVE, so
        # the app's writers can take the write lock while it runs.
        previous = int(await conn.scalar(self._sqlite_autocheckpoint))
        await conn.execute(self._sqlite_autocheckpoint_off)
        async with _then(conn, text(f"PRAGMA wal_autocheckpoint = {previous}")):
            return await self._sqlite_batches(conn)

    async def _sqlite_batches(self, conn: AsyncConnection) -> int:
        total = 0
        while True:
            params = {"now": self._now_ms(), "batch": self.cleanup_batch_size}
            started = time.perf_counter()
            deleted = (await conn.execute(self._cleanup, params)).rowcount
            total += deleted
            await conn.execute(self._sqlite_checkpoint)
            if deleted < self.cleanup_batch_size:
                return total
            # A writer that waited for the batch sleeps in SQLite's busy handler, each
            # sleep at most as long as it has waited so far (never over 100 ms);
            # without a pause the next batch wins the lock again and the app's writes
            # starve until cleanup ends. Pausing as long as the batch and its
            # checkpoint took (at most 100 ms) leaves the app the database half of the
            # time with the default batch size (measured against pausing only as long
            # as the batch: write p99 during cleanup 24 ms instead of 36 ms, rows/s
            # 8.6k instead of 13.9k).
            await asyncio.sleep(min(time.perf_counter() - started, 0.1))

    async def _mostly_expired(self, conn: AsyncConnection) -> bool:
        # The planner's own estimate decides: it reads the whole table when the expired
        # rows are too many for the expires_at index to pay. Batches with a LIMIT would
        # then restart that scan from the first page each time, and the last one would
        # read the entire table to find nothing more.
        plan = await conn.scalar(self._explain_expired, {"now": self._now_ms()})
        return str(plan).lstrip().startswith("Seq Scan")

    async def _sweep(self, conn: AsyncConnection) -> int:
        pages = int(await conn.scalar(self._relation_pages, {"name": self._qualified_name}) or 0)
        step = max(1, self.cleanup_batch_size // 20)
        total = 0
        for first in range(0, pages, step):
            params = {"now": self._now_ms(), "lo": (first, 0), "hi": (first + step, 0)}
            total += (await conn.execute(self._sweep_range, params)).rowcount
            await asyncio.sleep(0)  # let the app's own queries through
        return total

    async def stats(self) -> dict[str, int]:
        """Count the rows: ``{"live": ..., "expired": ...}`` (expired ones await cleanup)."""
        params = {"now": self._now_ms()}

        async def count(conn: AsyncConnection) -> dict[str, int]:
            row = (await conn.execute(self._stats, params)).one()
            return {"live": int(row.live), "expired": int(row.expired)}

        return await self._run(count)

    async def dispose(self) -> None:
        """Stop the periodic cleanup and close the engine if this driver created it."""
        task, self._cleanup_task = self._cleanup_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owns_engine:
            await self.engine.dispose()
        self._ready = False

    # -- internals ----------------------------------------------------------------------

    def _prefix_query(
        self, prefix: Any, every: Any, from_low: Any, in_range: Any
    ) -> tuple[Any, dict[str, Any]]:
        if prefix == "":
            return every, {}
        low = _validate.check_key(prefix)
        high = _prefix_successor(low)
        if high is None:
            return from_low, {"low": low}
        return in_range, {"low": low, "high": high}

    def _fast_statements(self) -> dict[str, Any]:
        # The single-statement, single-row operations the fast path runs, by name.
        names = ("get", "has", "set", "remove", "touch")
        return {name: getattr(self, f"_{name}") for name in names}

    async def _scalar(self, name: str, params: dict[str, Any]) -> Any:
        """The first column of the row statement `name` returns (None: no row)."""
        if self._fast is None:
            stmt = getattr(self, f"_{name}")
            row = await self._run(lambda conn: _first(conn, stmt, params))
            return None if row is None else row[0]
        return await self._run_fast(self._fast.scalar, name, params)

    async def _rowcount(self, name: str, params: dict[str, Any]) -> int:
        """Run statement `name`; return how many rows it changed."""
        if self._fast is None:
            stmt = getattr(self, f"_{name}")

            async def changed(conn: AsyncConnection) -> int:
                return (await conn.execute(stmt, params)).rowcount

            return await self._run(changed)
        count: int = await self._run_fast(self._fast.rowcount, name, params)
        return count

    async def _run_fast(
        self, method: Callable[[str, dict[str, Any]], Awaitable[T]], name: str, params: Any
    ) -> T:
        """`_run` for the fast path, which retries a dropped connection itself."""
        if not self._ready:
            await self._check_schema()
        try:
            return await method(name, params)
        except SessionError:
            raise
        except self._fast_errors as exc:
            raise self._storage_error(exc) from exc

    async def _run(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        *,
        transactional: bool = False,
    ) -> T:
        """Run `work` on a pooled connection, mapping database errors to ours.

        A connection the server dropped is replaced and single-statement work is tried
        once more (every such operation here is idempotent).
        """
        if not self._ready:
            await self._check_schema()
        for attempt in (1, 2):
            try:
                async with self.engine.connect() as conn:
                    result = await work(conn)
                    drained = pool_drained(self.engine.sync_engine.pool)
                await give_way(drained)
                return result
            except DBAPIError as exc:
                if exc.connection_invalidated and attempt == 1 and not transactional:
                    continue
                raise self._storage_error(exc) from exc
            except SessionError:
                raise
            except (SQLAlchemyError, OSError) as exc:
                raise self._storage_error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _check_schema(self) -> None:
        async with self._ready_lock:
            if self._ready:
                return
            if self._sqlite_path is not None and not os.path.exists(  # noqa: ASYNC240 - one stat, once per driver
                self._sqlite_path
            ):
                raise SchemaError(
                    f"The SQLite database {self._sqlite_path!r} does not exist. Create it "
                    f"with: sqlsession migrate --url {self.url} --table {self.table_name}"
                )
            name = version_table_name(self.table_name)
            qualified = f'"{self.schema}"."{name}"' if self.schema else f'"{name}"'
            try:
                async with self.engine.connect() as conn:
                    versions = list(
                        (await conn.execute(text(f"SELECT version_num FROM {qualified}"))).scalars()
                    )
            except (SQLAlchemyError, OSError) as exc:
                error = self._storage_error(exc)
                if isinstance(error, DatabaseUnavailableError):
                    raise error from exc
                raise SchemaError(
                    f"The session table {self._where()} has not been migrated (no version "
                    f"table {name!r}). Run: {self._migrate_hint()}"
                ) from exc
            if versions != [SCHEMA_REVISION]:
                raise SchemaError(
                    f"The session table {self._where()} is at migration {versions or None}, "
                    f"this sqlsession needs {SCHEMA_REVISION!r}. Run: {self._migrate_hint()}"
                )
            self._ready = True
            if self.cleanup_interval is not None and self._cleanup_task is None:
                self._cleanup_task = asyncio.get_running_loop().create_task(
                    self._cleanup_periodically(self.cleanup_interval),
                    name=f"sqlsession cleanup of {self.table_name}",
                )

    async def _cleanup_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                deleted = await self.cleanup()
                logger.debug("sqlsession cleanup of %s deleted %d rows", self._where(), deleted)
            except SessionError:
                task = asyncio.current_task()
                if task is not None and getattr(task, "cancelling", lambda: 0)():
                    raise  # dispose() is stopping this task (Python 3.11+ can tell)
                # Keep the app serving; the next run tries again.
                logger.exception("sqlsession cleanup of %s failed", self._where())

    def _where(self) -> str:
        table = f"{self.schema}.{self.table_name}" if self.schema else self.table_name
        return f"{table!r} in {self.url}"

    def _migrate_hint(self) -> str:
        schema = f" --schema {self.schema}" if self.schema else ""
        return f"sqlsession migrate --url {self.url} --table {self.table_name}{schema}"

    def _storage_error(self, exc: BaseException) -> SessionError:
        """Translate a database error into the sqlsession error tree."""
        orig = getattr(exc, "orig", None) or exc
        message = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        sqlstate = getattr(orig, "sqlstate", None) or getattr(
            getattr(orig, "__cause__", None), "sqlstate", None
        )
        lowered = message.lower()
        if (
            sqlstate == "42P01"
            or "no such table" in lowered
            or ("does not exist" in lowered and "relation" in lowered)
        ):
            self._ready = False
            return SchemaError(
                f"The session table {self._where()} is missing. Run: {self._migrate_hint()}"
            )
        unreachable = (
            isinstance(orig, OSError | TimeoutError)
            or (sqlstate is not None and str(sqlstate)[:2] in ("08", "28", "3D"))
            or "unable to open database file" in lowered
            or "connect call failed" in lowered
            or "password authentication failed" in lowered
        )
        if unreachable:
            return DatabaseUnavailableError(
                f"Cannot reach the session database {self.url}: {message}. Check the URL, "
                "that the server is running, and the credentials."
            )
        return StorageError(f"The session database {self.url} failed: {message}")


@contextlib.asynccontextmanager
async def _then(conn: AsyncConnection, undo: Any) -> AsyncIterator[None]:
    """Run `undo` (release a lock, restore a setting) on `conn` after the block.

    When the block fails (cancelled by dispose or a timeout, or a database error),
    that failure is what the caller sees, never an error from the undo: a connection
    the failure invalidated is closed anyway, which ends its session and whatever it
    held, and one on which the undo fails is thrown away rather than pooled.
    """
    try:
        yield
    except BaseException:
        if not conn.invalidated:
            try:
                await conn.execute(undo)
            except Exception:
                with contextlib.suppress(Exception):
                    await conn.invalidate()
        raise
    await conn.execute(undo)


def _create_engine(url: str, pool_size: int | None, durability: str) -> AsyncEngine:
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"}
    if url.startswith("sqlite"):
        options["pool_size"] = pool_size or _SQLITE_POOL_SIZE
        options["max_overflow"] = 0
        if make_url(url).database in (None, "", ":memory:"):
            raise ConfigError(
                "An in-memory SQLite database is private to each connection; use a file "
                "URL (sqlite:///sessions.db) or the memory driver (session_drivers.memory())."
            )
        # Reset on check-in is done by _setup_sqlite's listener, only when needed.
        engine = create_async_engine(url, pool_reset_on_return=None, **options)
        _setup_sqlite(engine)
        return engine
    if durability == "relaxed":
        options["connect_args"] = {"server_settings": {"synchronous_commit": "off"}}
    pool_size = pool_size or 16
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, **options)


def _setup_sqlite(engine: AsyncEngine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The busy timeout comes first, so that switching to WAL waits for other
        # connections instead of failing with "database is locked".
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, record: Any, state: Any) -> None:
        # A rollback is a trip to aiosqlite's thread; on an autocommit connection only
        # an interrupted merge_item leaves a transaction to roll back.
        if state.asyncio_safe and record.driver_connection.in_transaction:
            dbapi_connection.rollback()


def _fast_path(engine: AsyncEngine, statements: dict[str, Any]) -> FastPath | None:
    """The raw-driver fast path for the engine's database driver (None: none fits)."""
    if engine.dialect.driver == "asyncpg":
        from ._pg_fast import PgFastPath

        return PgFastPath(engine, statements)
    if engine.dialect.driver == "aiosqlite":
        from ._sqlite_fast import SqliteFastPath

        return SqliteFastPath(engine, statements)
    return None


def _sqlite_file(engine: AsyncEngine) -> str | None:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


async def _first(conn: AsyncConnection, stmt: Any, params: dict[str, Any]) -> Any:
    return (await conn.execute(stmt, params)).first()


async def _commit(conn: AsyncConnection, dialect: str) -> None:
    if dialect == "postgresql":
        await conn.commit()
    else:
        await conn.exec_driver_sql("COMMIT")


async def _rollback(conn: AsyncConnection, dialect: str) -> None:
    if dialect == "postgresql":
        await conn.rollback()
    else:
        await conn.exec_driver_sql("ROLLBACK")


def _prefix_successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix`.

    None when there is none (the prefix is all U+10FFFF). Both backends order keys by
    code point (SQLite's binary collation, PostgreSQL's "C"), so ``low <= key < high``
    selects exactly the keys with that prefix and can use the primary key index.
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            following = last + 1 if last + 1 != 0xD800 else 0xE000  # skip surrogates
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]
    return None


def create_driver(config: dict[str, Any]) -> SQLDriver:
    """The factory `load_driver` calls with the dict built by `session_drivers.sql`.

    Raises:
        ConfigError: the config has an option the SQL driver does not know.
    """
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"Unknown SQL driver option(s) {unknown}; known: {sorted(_CONFIG_KEYS)}.")
    return SQLDriver(**config)
