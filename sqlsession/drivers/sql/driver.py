"""The SQL driver: JSON session values in one keyed table, on any database with a dialect.

Every operation is one statement on an autocommit connection (`merge_existing` and
`merge_item` one that merges in the database, `dialects._merge`), except the general
path of the merges, a short transaction that locks the row it changes (on MySQL/MariaDB
for `merge_item` and `merge_existing`, elsewhere only for what the one statement cannot
decide), and, on MySQL/MariaDB only,
`get_entry(renew=...)` (a short transaction: no ``UPDATE ... RETURNING`` there) and
`add_item` on a key that exists (an INSERT, then an UPDATE of an expired row). Expiry
is filtered in SQL, so an expired row is never returned, counted or listed, whether or
not cleanup has run. What differs between databases is asked of the dialect
(`dialects.SQLDialect`); nothing here knows which database it talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    String,
    Table,
    bindparam,
    case,
    column,
    delete,
    func,
    literal,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from ... import _codec, _metrics, _validate
from ..._sql_options import SQLOptions
from ..._table import SCHEMA_REVISION, session_table, version_table_name
from ..._url import (
    DEFAULT_FILE,
    ENV_VAR,
    UrlOrigin,
    dialect_name,
    redact_url,
    resolve_url,
    url_origin,
)
from ...driver import Entry
from ...errors import ConfigError, SchemaError, SessionError, StorageError
from .._base import (
    DEFAULT,
    Clock,
    ExpiryMixin,
    apply_merge,
    check_keys,
    check_text,
    encode_many,
    from_ms,
    prepare_merge,
)
from .._merge_args import member_texts, text_merge_args
from . import _errors
from ._fast import give_way, pool_drained
from ._pacing import CleanupPacer, LatencyWatch
from ._retry import CONFLICT_RETRIES, pause_after_conflict
from .dialects import CleanupJob, ErrorKind, dialect_class, key_param
from .dialects._base import delete_in_batches

__all__ = ["SQLDriver", "create_driver"]

logger = logging.getLogger("sqlsession")
T = TypeVar("T")
# The single-statement, single-row operations the fast path runs, by name.
_FAST = ("get", "has", "set", "remove", "touch", "entry", "delete_live")
# How many connections that lost a prepared statement one operation may go through.
_STATEMENTS_LOST_MAX = 8


class SQLDriver(ExpiryMixin):
    """Session storage in one table of a SQLite, PostgreSQL or MySQL/MariaDB database.

    Args:
        url: the database URL (see `sqlsession.session_drivers.sql`); None means
            ``$SQLSESSION_URL``, else ``sqlite:///sqlsession.db``. Ignored when `engine`
            is given.
        table: the session table, created by ``sqlsession migrate --table``.
        schema: the PostgreSQL schema of the table (None: the search path).
        ttl: default lifetime of an item in seconds (None: no expiry).
        pool_size: connections kept open (None: 16 on PostgreSQL and MySQL, plus as
            many overflow connections; 4 on SQLite).
        durability: ``"relaxed"`` commits with ``synchronous_commit = off`` on PostgreSQL.
        cleanup_interval: seconds between in-process cleanups (None: off).
        cleanup_batch_size: rows deleted per cleanup statement (None: 5000 on
            PostgreSQL and MySQL, 500 on SQLite).
        connect_timeout: seconds to wait for a new connection to a server (None: the
            URL's ``connect_timeout``, else 5); a timeout raises `OperationTimeoutError`.
        statement_timeout: seconds a statement may run, waiting for locks included,
            before PostgreSQL cancels it with `OperationTimeoutError` (None: the URL's
            ``statement_timeout``, else none).
        prepared_statements: PostgreSQL only. False: every statement unnamed, as a
            pooler in transaction mode (pgbouncer) needs; the URL's
            ``statement_cache_size=0`` or ``prepared_statement_cache_size=0`` says the
            same. None: prepared until the server first loses one, then unnamed.
        read_your_writes: MariaDB Galera: reads wait for the writes the cluster
            committed before them (``wsrep_sync_wait = 1``, see
            `sqlsession.session_drivers.sql`); only on the engine the driver creates.
        engine: an `AsyncEngine` to use instead of creating one; the driver then leaves
            it open on `dispose`, runs its operations on an autocommit copy of it, and
            sets nothing on its connections (except that a SQLite cleanup turns its
            connection's autocheckpoint off while it runs, and back): for SQLite, set
            WAL and a busy timeout on it yourself (the engine the driver creates has
            both). The driver's statements hide their parameters in SQLAlchemy's
            errors and logs either way; aiosqlite's own DEBUG log of a given engine's
            statements shows them (see the README's "Security").
        clock: returns seconds since the epoch (``time.time``); tests move it.

    Raises:
        ConfigError, InvalidTTLError: an option is invalid, or the database is not one
            sqlsession supports.
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
        connect_timeout: float | None = None,
        statement_timeout: float | None = None,
        prepared_statements: bool | None = None,
        read_your_writes: bool = False,
        engine: AsyncEngine | None = None,
        clock: Clock | None = None,
    ) -> None:
        options = SQLOptions(
            url=url,
            table=table,
            schema=schema,
            ttl=ttl,
            pool_size=pool_size,
            durability=durability,
            cleanup_interval=cleanup_interval,
            cleanup_batch_size=cleanup_batch_size,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            prepared_statements=prepared_statements,
            read_your_writes=read_your_writes,
        )
        super().__init__(options.ttl, clock)
        self.options = options
        self.last_cleanup_skipped = False
        """True when the last `cleanup` found another process cleaning."""

        if engine is not None:
            given = {"connect_timeout": connect_timeout, "statement_timeout": statement_timeout}
            given["prepared_statements"] = prepared_statements
            if any(value is not None for value in given.values()):
                raise ConfigError(
                    f"{sorted(k for k, v in given.items() if v is not None)} apply to the "
                    "engine the driver creates; set them on the engine you pass (its "
                    "connect_args), or pass a URL instead."
                )
            self._owns_engine = False
            dialect = dialect_class(engine.dialect.name)
            dialect.check_options(options)
            if read_your_writes:
                raise ConfigError(
                    "read_your_writes is set on the connections of the engine the driver "
                    "creates; with engine=, run SET SESSION wsrep_sync_wait = 1 on its "
                    "connections yourself."
                )
            # Each operation commits on its own, whatever the given engine's default is;
            # the copy shares the engine's pool.
            self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
            # Keys and values stay out of SQLAlchemy's errors and statement logs; set on
            # the copy only, so the given engine's own statements are left as they are.
            self.engine.sync_engine.hide_parameters = True
            self.url = redact_url(engine.url.render_as_string(hide_password=True))
            self._url_origin: UrlOrigin = "given"
        else:
            self._owns_engine = True
            full_url = resolve_url(url)
            self.url = redact_url(full_url)
            self._url_origin = url_origin(url)
            dialect = dialect_class(dialect_name(full_url))
            engine_url, settings = options.connection()
            dialect.check_options(settings)
            try:
                self.engine = dialect.create_engine(engine_url, settings)
            except ModuleNotFoundError as exc:
                raise _errors.missing_driver(exc, dialect) from exc
        self.cleanup_batch_size = cleanup_batch_size or dialect.default_cleanup_batch_size
        self._database_file = dialect.database_file(self.engine.url.render_as_string(False))
        self._table = session_table(self.table_name, self.schema, **dialect.table_definition())
        self._dialect = dialect(self._table)
        self._build_statements(self._table)
        fast = {name: getattr(self, f"_{name}") for name in _FAST}
        if self._add is not None:
            fast["add"] = self._add
        self._fast = self._dialect.fast_path(self.engine, fast)
        self._merge_statement = None if self._fast is None else self._dialect.merge_statement()
        # What an operation may raise that is mapped to our errors: SQLAlchemy's, and
        # the database driver's own, which the fast path and SQLAlchemy 2.0's connect
        # let through.
        # SQLAlchemy's adapter of the database driver raises its own Error class where
        # SQLAlchemy does not wrap it (a failed rollback while a server shuts down).
        adapter_error: type[BaseException] = self.engine.dialect.loaded_dbapi.Error
        self._driver_errors = (*dialect.driver_errors(), adapter_error)
        self._database_errors: tuple[type[BaseException], ...] = (
            *self._driver_errors,
            SQLAlchemyError,
            OSError,
        )
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._unnamed_since_lost = False  # said once, in a warning
        self._cleanup_task: asyncio.Task[None] | None = None
        # The latencies of the app's reads and writes, which pace cleanup (_pacing.py).
        self._latency = (LatencyWatch(), LatencyWatch())
        pool_size = options.pool_size or dialect.default_pool_size
        if not self._owns_engine:
            size = getattr(self.engine.sync_engine.pool, "size", None)
            pool_size = size() if callable(size) else 0
        slots = dialect.write_slots(pool_size) if pool_size else None
        self._write_slots: contextlib.AbstractAsyncContextManager[Any] = (
            _ANY_TIME if slots is None else asyncio.Semaphore(slots)
        )
        _metrics.instrument(self, **_metrics_attributes(self))

    def __repr__(self) -> str:
        # self.url is redacted: no password (nor password= in the query).
        return f"<SQLDriver {self._where()}>"

    @classmethod
    def from_options(
        cls, options: SQLOptions, *, engine: AsyncEngine | None = None, clock: Clock | None = None
    ) -> SQLDriver:
        """Build a driver from `SQLOptions` (what the config half and the CLI hold)."""
        return cls(**options.as_config(), engine=engine, clock=clock)

    @property
    def table_name(self) -> str:
        """The session table."""
        return self.options.table

    @property
    def schema(self) -> str | None:
        """The PostgreSQL schema of the table (None: the search path)."""
        return self.options.schema

    @property
    def cleanup_interval(self) -> float | None:
        """Seconds between in-process cleanups (None: off)."""
        return self.options.cleanup_interval

    @property
    def dialect(self) -> str:
        """SQLAlchemy's name for the database (``"sqlite"``, ``"postgresql"``, ``"mysql"``)."""
        return self.engine.dialect.name

    def _build_statements(self, t: Table) -> None:
        # Built once and reused, so each call only binds parameters. What differs
        # between databases (the upsert, locks, cleanup) comes from the dialect.
        c = t.c
        live = or_(c.expires_at.is_(None), c.expires_at > bindparam("now"))
        self._get = select(c.value).where(c.key == key_param("k"), live)
        self._has = select(literal(1)).where(c.key == key_param("k"), live)
        self._set = self._dialect.upsert()
        self._remove = delete(t).where(c.key == key_param("k"))
        self._touch = (
            update(t).where(c.key == key_param("k"), live).values(expires_at=bindparam("exp"))
        )
        in_range = (c.key >= key_param("low"), c.key < key_param("high"))
        self._keys_all = select(c.key).where(live).order_by(c.key)
        self._keys_from = select(c.key).where(live, c.key >= key_param("low")).order_by(c.key)
        self._keys_range = select(c.key).where(live, *in_range).order_by(c.key)
        self._clear_all = delete(t)
        self._clear_from = delete(t).where(c.key >= key_param("low"))
        self._clear_range = delete(t).where(*in_range)
        self._expiry_of = select(c.expires_at).where(c.key == key_param("k"), live)
        self._entry = select(c.value, c.expires_at).where(c.key == key_param("k"), live)
        in_keys = c.key.in_(bindparam("keys", expanding=True, type_=String()))
        self._entries = select(c.key, c.value, c.expires_at).where(in_keys, live)
        self._delete_live = delete(t).where(c.key == key_param("k"), live)
        self._remove_many = delete(t).where(in_keys, live)
        self._add = self._dialect.insert_if_absent()
        self._prefix_cleanup = (
            self._dialect.prefix_cleanup(False),
            self._dialect.prefix_cleanup(True),
        )
        # COUNT(CASE ...) rather than FILTER, which MySQL lacks.
        self._stats = select(
            func.count(case((live, 1))).label("live"),
            func.count(case((c.expires_at <= bindparam("now"), 1))).label("expired"),
        ).select_from(t)
        self._stats_from = self._stats.where(c.key >= key_param("low"))
        self._stats_range = self._stats.where(*in_range)
        self._merge_write = (
            update(t)
            .where(c.key == key_param("k"))
            .values(value=bindparam("v"), expires_at=bindparam("exp"))
        )
        version = table(version_table_name(self.table_name), column("version_num"))
        version.schema = self.schema
        self._versions = select(version.c.version_num)

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
        return None if text is None else _codec.decode(text, key)

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
            decode = self._dialect.decode_key
            return [decode(key) for key in (await conn.execute(stmt, params)).scalars()]

        return await self._run(keys)

    async def get_expiry(self, key: str) -> float | None:
        """When the live item `key` expires.

        Returns:
            Seconds since the epoch (millisecond precision); ``math.inf`` when the item
            never expires; None when there is no live item `key`.

        Raises:
            InvalidKeyError, SchemaError, StorageError: as for `get_item`.
        """
        params = {"k": _validate.check_key(key), "now": self._now_ms()}
        row = await self._run(lambda conn: _first(conn, self._expiry_of, params))
        if row is None:
            return None
        return math.inf if row[0] is None else row[0] / 1000

    async def get_entry(self, key: str, *, renew: float | None = None) -> Entry | None:
        """The live item `key` with its expiry, in one statement.

        Args:
            key: the key.
            renew: seconds; when given, an item that has an expiry gets now + `renew` in
                the same statement (one short transaction on MySQL/MariaDB, which have no
                ``UPDATE ... RETURNING``) and the entry carries the new expiry; an item
                without expiry keeps none.

        Returns:
            The value and its expiry (seconds since the epoch, None: never), or None
            when there is no live item `key`.

        Raises:
            InvalidKeyError, InvalidTTLError: bad input.
            SchemaError, StorageError: as for `get_item`.
        """
        params = {"k": _validate.check_key(key), "now": self._now_ms()}
        renewed = self._renewal(renew)
        if renewed is None:
            row = await self._row("entry", params)
        else:
            params["exp"] = renewed
            row = await self._run(lambda conn: self._dialect.renew_entry(conn, params), write=True)
        return None if row is None else Entry(_codec.decode(row[0], key), from_ms(row[1]))

    async def get_entries(self, keys: Iterable[str]) -> dict[str, Entry]:
        """The live items among `keys` with their expiries, in one statement.

        Returns:
            A dict of the live keys (absent and expired ones are left out).

        Raises:
            InvalidKeyError: a key is invalid, or there are more than 5000.
        """
        rows = await self._read_many(check_keys(keys, what="get_entries"))
        return {key: Entry(_codec.decode(text, key), from_ms(exp)) for key, text, exp in rows}

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of the live items among `keys`, in one statement.

        Returns:
            A dict of the live keys (absent and expired ones are left out).

        Raises:
            InvalidKeyError: a key is invalid, or there are more than 5000.
        """
        rows = await self._read_many(check_keys(keys, what="get_many"))
        return {key: _codec.decode(text, key) for key, text, _ in rows}

    async def set_many(self, items: Mapping[str, Any], *, ttl: Any = DEFAULT) -> None:
        """Store every item of `items` in one statement, so all or none are written.

        Args:
            items: keys and their values (at most 5000).
            ttl: as for `set_item`; the same for every item.

        Raises:
            InvalidKeyError, InvalidTTLError, ValueNotSerializableError: bad input;
                nothing is written.
        """
        encoded = encode_many(items)
        exp = self._expires_at(ttl)
        if not encoded:
            return
        rows = [
            {"key": _key_value(key), "value": text, "expires_at": exp}
            for key, text in encoded.items()
        ]
        stmt = self._dialect.upsert_rows(rows)
        await self._run(lambda conn: conn.execute(stmt), write=True)

    async def remove_many(self, keys: Iterable[str]) -> int:
        """Delete the live items among `keys` in one statement.

        Returns:
            How many live items were deleted; expired rows are left to cleanup.
        """
        checked = check_keys(keys, what="remove_many")
        if not checked:
            return 0
        params = {"keys": checked, "now": self._now_ms()}

        async def remove(conn: AsyncConnection) -> int:
            return (await conn.execute(self._remove_many, params)).rowcount

        return await self._run(remove, write=True)

    async def delete_item(self, key: str) -> bool:
        """Delete the live item `key` in one statement; True when this call deleted it.

        Of concurrent calls for one item exactly one returns True. An expired item
        counts as absent; its row is left to cleanup.
        """
        params = {"k": _validate.check_key(key), "now": self._now_ms()}
        return await self._rowcount("delete_live", params) > 0

    async def add_item(self, key: str, value: Any, *, ttl: Any = DEFAULT) -> bool:
        """Store `value` under `key` only when no live item is there (put-if-absent).

        One statement on SQLite and PostgreSQL (``INSERT ... ON CONFLICT DO UPDATE ...
        WHERE`` the stored row has expired); on MySQL/MariaDB an INSERT, followed, when
        the key exists, by an UPDATE of an expired row. Atomic either way: of
        concurrent calls for one absent key exactly one writes.

        Returns:
            True when this call wrote (an expired item counts as absent).

        Raises:
            InvalidKeyError, InvalidTTLError, ValueNotSerializableError: bad input;
                nothing is written.
        """
        _validate.check_key(key)
        params = {"k": key, "v": _codec.encode(key, value), "exp": self._expires_at(ttl)}
        params["now"] = self._now_ms()
        if self._add is not None:
            return await self._rowcount("add", params) == 1
        return await self._run(lambda conn: self._dialect.add_item(conn, params), write=True)

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
        await self._run(lambda conn: conn.execute(stmt, params), write=True)

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
        of one value both win. An absent or expired item starts from an empty dict. One
        upsert on PostgreSQL and SQLite that merges in the database (`dialects._merge`);
        a short locked transaction on MariaDB/MySQL.

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
        if not self._merges_returning():
            merged = await self._merge(key, set, delete, ttl, create=True)
        else:
            texts, removals = member_texts(key, set, delete)
            exp = self._expires_at(ttl)
            row = await self._merge_in_one(key, texts, removals, exp, returning=True, create=True)
            if isinstance(row, str):
                stored: dict[str, Any] = _codec.decode(row, key)
                return stored
            merged = await self._merge(key, set, removals, ttl, create=True)
        assert merged is not None  # an absent item starts from {}
        return merged

    async def merge_existing(
        self,
        key: str,
        set: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: Any = DEFAULT,
    ) -> dict[str, Any] | None:
        """`merge_item` for an item that must already exist: an absent one stays absent.

        For refreshing something another process may have removed meanwhile (a session
        ended by a sign-out): the removal wins, and nothing is written. One UPDATE on
        PostgreSQL and SQLite (see `merge_existing_text`); the locked merge on MariaDB,
        whose UPDATE cannot return the dict it wrote.

        Returns:
            The dict now stored, or None when there was no live item `key`.

        Raises:
            ValueNotSerializableError: as for `merge_item`.
        """
        if not self._merges_returning():
            return await self._merge(key, set, delete, ttl, create=False)
        texts, removals = member_texts(key, set, delete)
        exp = self._expires_at(ttl)
        row = await self._merge_in_one(key, texts, removals, exp, returning=True)
        if isinstance(row, str):
            merged: dict[str, Any] = _codec.decode(row, key)
            return merged
        if row is False:
            return None
        return await self._merge(key, set, removals, ttl, create=False)

    def _merges_returning(self) -> bool:
        """Whether the one-statement merge can return the dict it wrote here."""
        return self._merge_statement is not None and self._merge_statement.returns_rows

    async def _merge_in_one(
        self,
        key: str,
        texts: dict[str, str],
        removals: list[str],
        exp: int | None,
        *,
        returning: bool,
        create: bool = False,
    ) -> str | bool | None:
        """`merge_existing` as one UPDATE on the fast path (`dialects._merge`); with
        `create` (and `returning`), `merge_item` as one upsert.

        Returns:
            True (or with `returning`, the merged JSON text) when it merged; False when
            there is no live item `key`; None when the general merge must decide (no
            one-statement merge here, or the stored value is not a dict the database
            can merge into, or a text the database refused): that merge raises the
            precise error, or merges an item that became a dict meanwhile.
        """
        built = None
        if self._merge_statement is not None:
            now = self._now_ms()
            built = self._merge_statement.build(
                key, texts, removals, exp, now, returning=returning, create=create
            )
        if built is None or self._fast is None:
            return None
        fast = self._fast
        fetch: Literal["row", "count"] = "row" if returning else "count"

        async def run(sql: str, args: list[Any]) -> Any:
            try:
                return await fast.run_sql(sql, args, fetch)
            except fast.errors as exc:
                if self._dialect.refuses_json(exc):
                    return _REFUSED
                raise

        result = await self._run_fast(run, *built, write=True)
        if result is _REFUSED:
            return None  # the general merge names the problem
        if returning and result is not None:
            return str(result[0])
        if not returning and result:
            return True
        if create:
            return None  # a live value that is not a dict: the locked merge refuses it
        # No row changed: absent or expired (the common case, one more read), or a value
        # the statement cannot merge into, which the general merge then refuses.
        if await self.get_text(key) is None:
            return False
        return None

    async def _merge(
        self,
        key: str,
        set: Mapping[str, Any] | None,
        delete: Iterable[str],
        ttl: Any,
        *,
        create: bool,
    ) -> dict[str, Any] | None:
        changes, removals = prepare_merge(key, set, delete)
        exp = self._expires_at(ttl)

        async def merge(conn: AsyncConnection) -> dict[str, Any] | None:
            async with self._dialect.locked_row(conn, key, create=create) as row:
                now = self._now_ms()
                expired = row is None or (row[1] is not None and row[1] <= now)
                if expired and not create:
                    return None
                merged = apply_merge(key, None if expired else row[0], changes, removals)
                write = self._set if row is None else self._merge_write
                await conn.execute(write, {"k": key, "v": _codec.encode(key, merged), "exp": exp})
            return merged

        # Not `transactional`: a merge lost with its connection runs once more, which is
        # safe because applying the same set and delete twice gives the same dict.
        return await self._run(merge, write=True)

    async def get_text(self, key: str) -> str | None:
        """The JSON text stored under `key`, or None when it is absent or expired."""
        params = {"k": _validate.check_key(key), "now": self._now_ms()}
        text: str | None = await self._scalar("get", params)
        return text

    async def set_text(self, key: str, text: str, *, ttl: Any = DEFAULT) -> None:
        """Store JSON text `text` (sqlsession's own encoding) under `key`."""
        _validate.check_key(key)
        params = {"k": key, "exp": self._expires_at(ttl), "v": check_text(key, text)}
        await self._rowcount("set", params)

    async def merge_existing_text(
        self,
        key: str,
        set: Mapping[str, str] | None = None,
        delete: Iterable[str] = (),
        *,
        ttl: Any = DEFAULT,
    ) -> bool:
        """`merge_existing` with each value in `set` as JSON text; whether the item was live.

        One UPDATE on the fast path that applies the changes to the stored JSON in the
        database (`dialects._merge`): one round trip on PostgreSQL and MariaDB, one
        thread trip on SQLite. The texts are not decoded here; the database parses them.
        Member names with a quote, a backslash or a control character (SQLite, MariaDB),
        a stored value the statement cannot merge into, or an engine without the fast
        path take the locked merge, with the same outcome.

        Raises:
            ValueNotSerializableError: a text is not a str, or the stored value is not
                a dict; nothing is written.
            CorruptValueError: a text (or the stored value) is not JSON.
        """
        texts, removals = text_merge_args(key, set, delete)
        exp = self._expires_at(ttl)
        merged = await self._merge_in_one(key, texts, removals, exp, returning=False)
        if merged is not None:
            return bool(merged)
        values = {name: _codec.decode(text, key) for name, text in texts.items()}
        return await self._merge(key, values, removals, ttl, create=False) is not None

    async def cleanup(self, prefix: str = "") -> int:
        """Delete expired rows in batches, so no statement holds locks for long.

        A batch is at most ``cleanup_batch_size`` rows; how batches are picked is the
        database's own (see its dialect module). One process at a time does the work
        on PostgreSQL and MySQL (a lock per table); the others return 0 at once and
        set `last_cleanup_skipped`.

        Args:
            prefix: delete only the expired rows whose key starts with it (``%`` and
                ``_`` match literally; a range on the primary key). Such a cleanup takes
                no lock: runners for different prefixes (a Litestar store per
                namespace) do not wait for each other.

        Returns:
            How many expired rows were deleted.
        """
        pacer = CleanupPacer(self.cleanup_batch_size, self._latency)
        job = CleanupJob(batch_size=self.cleanup_batch_size, now_ms=self._now_ms, pacer=pacer)
        if prefix != "":
            _, bind = self._prefix_query(prefix, None, None, None)
            stmt = self._prefix_cleanup["high" in bind]
            # Every batch commits on its own and takes no lock, so a run cut short by a
            # lost connection runs again on a fresh one (the count is then the rerun's).
            with pacer.watching():
                return await self._run(
                    lambda conn: delete_in_batches(conn, stmt, job, bind=bind),
                    interruptible=True,
                    write=True,
                )

        async def run(conn: AsyncConnection) -> int:
            self.last_cleanup_skipped = False
            deleted = await self._dialect.cleanup(conn, job)
            self.last_cleanup_skipped = deleted is None
            return deleted or 0

        with pacer.watching():
            return await self._run(run, transactional=True, interruptible=True, write=True)

    async def stats(self, prefix: str = "") -> dict[str, int]:
        """Count the rows: ``{"live": ..., "expired": ...}`` (expired ones await cleanup).

        Args:
            prefix: count only the keys that start with it (``%`` and ``_`` match
                literally), as `get_keys` lists them; "" counts every row.
        """
        stmt, params = self._prefix_query(prefix, self._stats, self._stats_from, self._stats_range)
        params["now"] = self._now_ms()

        async def count(conn: AsyncConnection) -> dict[str, int]:
            row = (await conn.execute(stmt, params)).one()
            return {"live": int(row.live), "expired": int(row.expired)}

        return await self._run(count)

    async def dispose(self) -> None:
        """Stop the periodic cleanup and close the engine if this driver created it."""
        task, self._cleanup_task = self._cleanup_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._fast is not None:
            await self._fast.release()
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

    async def _read_many(self, keys: list[str]) -> list[Any]:
        if not keys:
            return []
        params = {"keys": keys, "now": self._now_ms()}
        decode = self._dialect.decode_key

        async def read(conn: AsyncConnection) -> list[Any]:
            rows = (await conn.execute(self._entries, params)).all()
            return [(decode(key), text, exp) for key, text, exp in rows]

        return await self._run(read)

    async def _scalar(self, name: str, params: dict[str, Any]) -> Any:
        """The first column of the row statement `name` returns (None: no row)."""
        if self._fast is None:
            stmt = getattr(self, f"_{name}")
            row = await self._run(lambda conn: _first(conn, stmt, params))
            return None if row is None else row[0]
        return await self._run_fast(self._fast.scalar, name, params)

    async def _row(self, name: str, params: dict[str, Any]) -> Any:
        """The first row statement `name` returns (None: no row)."""
        if self._fast is None:
            stmt = getattr(self, f"_{name}")
            return await self._run(lambda conn: _first(conn, stmt, params))
        return await self._run_fast(self._fast.row, name, params)

    async def _rowcount(self, name: str, params: dict[str, Any]) -> int:
        """Run statement `name`; return how many rows it changed."""
        if self._fast is None:
            stmt = getattr(self, f"_{name}")

            async def changed(conn: AsyncConnection) -> int:
                return (await conn.execute(stmt, params)).rowcount

            return await self._run(changed, write=True)
        count: int = await self._run_fast(self._fast.rowcount, name, params, write=True)
        return count

    async def _run_fast(
        self,
        method: Callable[[str, Any], Awaitable[T]],
        name: str,
        params: Any,
        *,
        write: bool = False,
    ) -> T:
        """`_run` for the fast path, which retries a dropped connection itself."""
        if not self._ready:
            await self._check_schema()
        started = time.perf_counter()
        try:
            if not write or self._write_slots is _ANY_TIME:
                # Without entering a null context manager: two coroutines fewer per call.
                return await self._run_fast_now(method, name, params)
            async with self._write_slots:
                return await self._run_fast_now(method, name, params)
        finally:
            self._latency[write].observe(time.perf_counter() - started)

    async def _run_fast_now(
        self, method: Callable[[str, Any], Awaitable[T]], name: str, params: Any
    ) -> T:
        for attempt in (1, 2):
            try:
                return await method(name, params)
            except SessionError:
                raise
            except self._database_errors as exc:
                if attempt == 1 and self._kind(exc) is ErrorKind.STATEMENT_LOST:
                    await self._stop_preparing(exc)
                    continue
                raise await self._failure(exc) from _errors.told(exc)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        *,
        transactional: bool = False,
        interruptible: bool = False,
        write: bool = False,
    ) -> T:
        """Run `work` on a pooled connection, mapping database errors to ours.

        Unless `transactional`, work on a connection the server dropped is tried once more
        on a fresh one (every such operation here is idempotent). Any work a conflict
        rolled back (a deadlock, a Galera certification failure) runs again, up to
        `CONFLICT_RETRIES` times, then raises `ConflictError`. Unless `interruptible`, a
        cancelled caller is cancelled at once but the work runs to its end: cancelled in
        the middle of a statement, the connection would be dropped without being closed,
        holding what it held (SQLite's write lock inside a merge, until every writer had
        waited out its busy timeout).
        A `write` takes one of the dialect's write slots first.
        """
        if interruptible:
            return await self._run_now(work, transactional=transactional, write=write)
        started = time.perf_counter()
        running = asyncio.ensure_future(
            self._run_now(work, transactional=transactional, write=write)
        )
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            running.add_done_callback(_retrieve)
            raise
        finally:
            # Cleanup runs interruptible, so only the app's own operations are timed.
            self._latency[write].observe(time.perf_counter() - started)

    async def _run_now(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, transactional: bool, write: bool
    ) -> T:
        if not self._ready:
            await self._check_schema()
        async with self._write_slots if write else _ANY_TIME:
            return await self._run_attempts(work, transactional=transactional)

    async def _run_attempts(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, transactional: bool
    ) -> T:
        retry_lost = not transactional
        conflicts = 0
        # Behind a pooler each connection made before the switch to unnamed statements
        # may lose one more; each such failure costs that connection and runs again.
        statements_lost = 0
        while True:
            if self._fast is not None:
                await self._fast.give_back()  # the fast path's idle connection, if any
            try:
                async with self.engine.connect() as conn:
                    try:
                        result = await work(conn)
                    except self._database_errors as exc:
                        kind = self._kind(exc)
                        # Raised by the database driver past SQLAlchemy's error handling
                        # (setting the isolation level, say), a lost connection is not
                        # marked invalid unless we do it; nor is one that prepared
                        # statements a pooler's server connections do not have.
                        if kind is ErrorKind.STATEMENT_LOST or (
                            kind is ErrorKind.LOST and isinstance(exc, self._driver_errors)
                        ):
                            await conn.invalidate()
                        raise
                    drained = pool_drained(self.engine.sync_engine.pool)
                await give_way(drained)
                return result
            except SessionError:
                raise
            except self._database_errors as exc:
                kind = self._kind(exc)
                lost = kind is ErrorKind.LOST or (
                    isinstance(exc, DBAPIError) and exc.connection_invalidated
                )
                if kind is ErrorKind.STATEMENT_LOST and statements_lost < _STATEMENTS_LOST_MAX:
                    # Bind found no statement, so nothing ran: safe to run again.
                    statements_lost += 1
                    await self._stop_preparing(exc)
                    continue
                if lost and retry_lost:
                    retry_lost = False
                    continue
                if kind is ErrorKind.CONFLICT and conflicts < CONFLICT_RETRIES:
                    conflicts += 1
                    await pause_after_conflict(conflicts)
                    continue
                raise await self._failure(exc) from _errors.told(exc)

    async def _stop_preparing(self, exc: BaseException) -> None:
        """Switch to unnamed statements after the server lost a prepared one, or say how."""
        if await self._dialect.stop_preparing(self.engine):
            if self._unnamed_since_lost:
                return
            self._unnamed_since_lost = True
            logger.warning(
                "The session database %s lost a prepared statement: a pooler in transaction "
                "mode (pgbouncer) is in between. sqlsession now sends unnamed statements; "
                "set prepared_statements=False (or ?statement_cache_size=0 in the URL) to "
                "start that way.",
                self.url,
            )
            return
        raise StorageError(
            f"The session database {self.url} lost a prepared statement "
            f"({_errors.first_line(getattr(exc, 'orig', None) or exc)}): a pooler in "
            "transaction mode (pgbouncer) is in between. Create the engine you pass with "
            "connect_args={'statement_cache_size': 0, 'prepared_statement_cache_size': 0}, "
            "or pass a URL with ?statement_cache_size=0 instead of an engine."
        ) from _errors.told(exc)

    async def _check_schema(self) -> None:
        async with self._ready_lock:
            if self._ready:
                return
            if self._database_file is not None:
                try:
                    os.stat(self._database_file)
                except FileNotFoundError:
                    raise SchemaError(self._missing_file_message(self._database_file)) from None
                except OSError as exc:  # a directory on the way this process may not enter
                    raise self._storage_error(exc) from exc
            try:
                async with self.engine.connect() as conn:
                    versions = list((await conn.execute(self._versions)).scalars())
            except self._database_errors as exc:
                if self._kind(exc) is not ErrorKind.MISSING_TABLE:
                    # A server starting, stopping or full says so; only a missing version
                    # table means "not migrated".
                    raise self._storage_error(exc) from _errors.told(exc)
                name = version_table_name(self.table_name)
                raise SchemaError(
                    f"The session table {self._where()} has not been migrated (no version "
                    f"table {name!r}). Run: {self._migrate_hint()}"
                ) from _errors.told(exc)
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

    def _missing_file_message(self, path: str) -> str:
        title = self._dialect.title
        if self._url_origin == "default":
            # The likely mistake is a URL that never arrived, not a database to create.
            return (
                f"The {title} database {path!r} does not exist. No database URL was given "
                f"(no url, no --url and no ${ENV_VAR}), so sqlsession used its default, "
                f"{DEFAULT_FILE} in the working directory. Set {ENV_VAR} (or url= / --url) "
                "to your database's URL; to keep the sessions in this file instead, create "
                "it with: sqlsession migrate"
            )
        origin = f" (from ${ENV_VAR})" if self._url_origin == "environment" else ""
        return (
            f"The {title} database {path!r}{origin} does not exist. Create it with: "
            f"{self._migrate_hint()}"
        )

    def _migrate_hint(self) -> str:
        schema = f" --schema {self.schema}" if self.schema else ""
        return f"sqlsession migrate --url {self.url} --table {self.table_name}{schema}"

    def _kind(self, exc: BaseException) -> ErrorKind | None:
        return _errors.describe(exc, type(self._dialect))[0]

    async def _failure(self, exc: BaseException) -> SessionError:
        """`_storage_error`, after closing what must not stay open."""
        error = self._storage_error(exc)
        if self._kind(exc) is ErrorKind.FILE_GONE:
            # Close the idle connections on the deleted file now, not one per checkout
            # (the next ones fail before any checkout): its -wal and -shm files stay at
            # the path, held open, where a database created again there would take them
            # for its own. Those in use fail their next checkout and are closed then.
            await greenlet_spawn(self.engine.sync_engine.pool.dispose)
        return error

    def _storage_error(self, exc: BaseException) -> SessionError:
        """Translate a database error into the sqlsession error tree."""
        error = _errors.translate(
            exc,
            type(self._dialect),
            url=self.url,
            missing_table=f"The session table {self._where()} is missing. "
            f"Run: {self._migrate_hint()}",
        )
        if isinstance(error, SchemaError):
            self._ready = False
        return error


# What a merge statement the database refused (its JSON) returns.
_REFUSED = object()
# The write slots of a database that takes any number of writers at once.
_ANY_TIME: contextlib.AbstractAsyncContextManager[Any] = contextlib.nullcontext()


def _metrics_attributes(driver: SQLDriver) -> dict[str, Any]:
    """What identifies the driver's database in its metrics (no password, no path query)."""
    url = driver.engine.url
    system = "mariadb" if getattr(driver.engine.dialect, "is_mariadb", False) else driver.dialect
    return {
        "system": system,
        "collection": driver.table_name,
        "namespace": url.database,
        "server": (url.host, url.port) if url.host else None,
        "pool_name": f"{driver.url} {driver.table_name}",
        "pool": lambda: driver.engine.sync_engine.pool,
    }


def _key_value(key: str) -> Any:
    """A key as a bound value of a multi-row statement, typed as `key_param` types it."""
    return bindparam(None, key, type_=String())


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Collect the outcome of work nobody awaits any more, so asyncio does not log it."""
    if not task.cancelled():
        task.exception()


async def _first(conn: AsyncConnection, stmt: Any, params: dict[str, Any]) -> Any:
    return (await conn.execute(stmt, params)).first()


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
    return SQLDriver.from_options(SQLOptions.from_config(config))
