"""The interface between the SQL driver and one database: what differs, and nothing else.

The driver builds the statements every database shares (read, delete, list, count) and
asks its dialect for the rest: the upsert, the row lock of ``merge_item``, the cleanup
strategy and its one-runner-at-a-time lock, the engine and its connection setup, pool
defaults, how to read a database error, and the raw-driver fast path. A dialect class
lives in ``dialects/<name>.py`` as ``Dialect``, where ``<name>`` is SQLAlchemy's name for
the database; the driver never tests that name itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    BigInteger,
    BindParameter,
    String,
    Table,
    and_,
    bindparam,
    case,
    event,
    null,
    or_,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.expression import ClauseElement, ColumnElement, Executable

from ....errors import ConfigError

if TYPE_CHECKING:
    from ...._sql_options import SQLOptions
    from .._fast import FastPath
    from .._pacing import CleanupPacer
    from ._merge import MergeStatement

__all__ = [
    "SECRECY",
    "CleanupJob",
    "ErrorKind",
    "SQLDialect",
    "delete_in_batches",
    "key_param",
    "lock_id",
    "on_conflict_insert_if_absent",
    "on_conflict_upsert",
    "renew_returning",
    "reset_only_open_transactions",
    "then",
    "undo_quietly",
]


# Given to every engine sqlsession creates, so no session key or value reaches an error
# or a log record: SQLAlchemy prints "[SQL parameters hidden ...]" in place of a
# statement's parameters, and its DEBUG log of result rows, on the logger named after
# our engines, is dropped.
ENGINE_NAME = "sqlsession"
SECRECY: dict[str, Any] = {"hide_parameters": True, "logging_name": ENGINE_NAME}


def _not_a_row(record: logging.LogRecord) -> bool:
    return record.msg != "Row %r"


logging.getLogger(f"sqlalchemy.engine.Engine.{ENGINE_NAME}").addFilter(_not_a_row)


class ErrorKind(enum.Enum):
    """What a database error means for the caller; the driver words the message."""

    MISSING_TABLE = "missing table"
    UNAVAILABLE = "unavailable"  # refused, down, starting, bad credentials, no database
    LOST = "lost connection"  # dropped by the server: a fresh connection may do
    CONFLICT = "conflict"  # deadlock or serialization failure: safe to run again
    LOCK_TIMEOUT = "lock timeout"
    ALREADY_EXISTS = "already exists"
    MISSING_SCHEMA = "missing schema"
    TIMEOUT = "timeout"  # connect_timeout or statement_timeout: never run again
    READ_ONLY = "read only"  # a write reached a standby or a read-only database
    STATEMENT_LOST = "prepared statement lost"  # a pooler switched server connections
    FILE_GONE = "file gone"  # an embedded database's file was deleted under the driver


@dataclass(frozen=True)
class CleanupJob:
    """What a dialect's cleanup needs from the driver."""

    batch_size: int
    now_ms: Callable[[], int]
    committed: list[int] = field(default_factory=list)
    """Rows each committed batch deleted, kept across the driver's retries of the job
    (a dialect that commits batch by batch appends to it, and counts from it)."""
    pacer: CleanupPacer | None = None
    """Sizes the batches and pauses between them by the app's latency (None: every
    batch `batch_size`, and only the dialect's own pause)."""

    @property
    def size(self) -> int:
        """The rows the next batch may delete."""
        return self.batch_size if self.pacer is None else self.pacer.size

    async def pause(self, elapsed: float, floor: Callable[[float], Awaitable[None]]) -> None:
        """Wait between two batches: the dialect's `floor`, then the pacer's wait."""
        if self.pacer is None:
            await floor(elapsed)
        else:
            await self.pacer.pause(elapsed, floor)


def key_param(name: str) -> BindParameter[str]:
    """A bind parameter for a session key, sent as the str it is.

    Typed as a plain string rather than as the key column, so a column of bytes
    (MySQL's VARBINARY) compares with the UTF-8 text the database driver sends.
    """
    return bindparam(name, type_=String())


def reset_only_open_transactions(
    engine: AsyncEngine, in_transaction: Callable[[Any], bool]
) -> None:
    """Roll a returned connection back only when it holds a transaction.

    The engine is created with ``pool_reset_on_return=None``: on an autocommit
    connection only an interrupted ``merge_item`` leaves a transaction open, and the
    unconditional rollback would be one more round trip (a thread trip for aiosqlite)
    after every operation.

    Args:
        engine: the engine the driver owns.
        in_transaction: tells, from the database driver's connection, whether it is
            inside a transaction.
    """

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, record: Any, state: Any) -> None:
        if state.asyncio_safe and in_transaction(record.driver_connection):
            dbapi_connection.rollback()


def on_conflict_upsert(
    insert: Any, table: Table, rows: list[dict[str, Any]] | None = None
) -> Insert:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` (PostgreSQL's and SQLite's upsert).

    Args:
        insert: the dialect's own ``insert(table)`` construct.
        table: the session table.
        rows: the rows of a multi-row upsert (see `SQLDialect.upsert_rows`); None for the
            one-row statement that binds ``k``, ``v`` and ``exp``.
    """
    values = insert.values(
        rows
        if rows is not None
        else {"key": key_param("k"), "value": bindparam("v"), "expires_at": bindparam("exp")}
    )
    upsert: Insert = values.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={"value": insert.excluded.value, "expires_at": insert.excluded.expires_at},
    )
    return upsert


def on_conflict_insert_if_absent(insert: Any, table: Table) -> Insert:
    """Put-if-absent in one statement: changes one row exactly when it wrote.

    Inserts the row, or replaces an expired one (the conflict update's WHERE); a live
    row is left alone and the statement reports 0 rows. Binds ``k``, ``v``, ``exp``,
    ``now``.
    """
    c = table.c
    add: Insert = insert.values(
        key=key_param("k"), value=bindparam("v"), expires_at=bindparam("exp")
    ).on_conflict_do_update(
        index_elements=[c.key],
        set_={"value": insert.excluded.value, "expires_at": insert.excluded.expires_at},
        where=and_(c.expires_at.is_not(None), c.expires_at <= bindparam("now")),
    )
    return add


def renew_returning(table: Table) -> Update:
    """Get-and-renew in one statement (``UPDATE ... RETURNING``).

    A live item with an expiry gets ``exp``; one without keeps none. Returns the row's
    value and (new) expiry. Binds ``k``, ``now``, ``exp``.
    """
    c = table.c
    live = or_(c.expires_at.is_(None), c.expires_at > bindparam("now"))
    return (
        update(table)
        .where(c.key == key_param("k"), live)
        .values(
            expires_at=case(
                (c.expires_at.is_(None), null()), else_=bindparam("exp", type_=BigInteger())
            )
        )
        .returning(c.value, c.expires_at)
    )


def lock_id(purpose: str, table: str, schema: str | None) -> bytes:
    """Eight bytes naming one table's lock for `purpose`, stable across processes."""
    name = f"sqlsession.{purpose}:{schema or ''}.{table}"
    return hashlib.blake2b(name.encode(), digest_size=8).digest()


class SQLDialect:
    """One database, as the SQL driver and the migrations see it.

    A dialect object is built per driver, for its table; the class-level members serve
    the migration runner and error translation, which have a URL but no table.

    Args:
        table: the session table.
    """

    title: ClassVar[str]
    """The database's name in messages ("PostgreSQL")."""
    extra: ClassVar[str] = ""
    """The pip extra that installs the database driver package."""
    driver_package: ClassVar[str] = ""
    """The database driver's import name."""
    supports_schema: ClassVar[bool] = False
    supports_statement_timeout: ClassVar[bool] = False
    default_pool_size: ClassVar[int] = 16
    default_cleanup_batch_size: ClassVar[int] = 5000
    transactional_ddl: ClassVar[bool] = True
    """Whether the migration's DDL rolls back with its transaction."""
    supports_read_your_writes: ClassVar[bool] = False
    """Whether the ``read_your_writes`` option means something here (MariaDB Galera)."""

    def __init__(self, table: Table) -> None:
        self.table = table

    @classmethod
    def table_definition(cls) -> dict[str, Any]:
        """Column types and table options for `sqlsession._table.session_table`.

        The migration that creates the table must give it the same ones (the drift
        test compares them).
        """
        return {}

    # -- engine --------------------------------------------------------------------

    @classmethod
    def check_options(cls, options: SQLOptions) -> None:
        """Refuse options this database cannot honour."""
        if options.schema is not None and not cls.supports_schema:
            raise ConfigError(f"schema is a PostgreSQL option; {cls.title} has none.")
        if options.statement_timeout is not None and not cls.supports_statement_timeout:
            raise ConfigError(
                f"statement_timeout is a PostgreSQL option; sqlsession cannot set one on "
                f"{cls.title}."
            )
        if options.read_your_writes and not cls.supports_read_your_writes:
            raise ConfigError(
                f"read_your_writes is a MariaDB Galera option; {cls.title} reads its own "
                "writes already."
            )

    @classmethod
    def create_engine(cls, url: str, options: SQLOptions) -> AsyncEngine:
        """The autocommit engine the driver owns, its connections set up for sessions."""
        raise NotImplementedError

    @classmethod
    def connect_args(cls, url: str, options: SQLOptions) -> dict[str, Any]:
        """What the database driver's connect needs for `options` (timeouts, settings).

        The migration runner connects with the same, from the URL's settings alone.
        """
        return {}

    @classmethod
    def engine_url(cls, url: str) -> str:
        """`url` as SQLAlchemy takes it, without what `connect_args` passes instead."""
        return url

    @staticmethod
    async def stop_preparing(engine: AsyncEngine) -> bool:
        """Stop preparing named statements on `engine` (a pooler lost one).

        Returns:
            Whether that was done (False: the engine is not the dialect's to change).
        """
        return False

    @classmethod
    def migration_engine(cls, url: str) -> AsyncEngine:
        """The engine a migration runs on: no pool, parameters hidden, and the URL's own
        settings (timeouts, prepared statements off behind a pooler) applied."""
        from ...._sql_options import SQLOptions

        url, settings = SQLOptions(url=url).connection()
        return create_async_engine(
            cls.engine_url(url),
            poolclass=NullPool,
            connect_args=cls.connect_args(url, settings),
            **SECRECY,
        )

    @classmethod
    def database_file(cls, url: str) -> str | None:
        """The file an embedded database lives in (None: a server database)."""
        return None

    @classmethod
    async def prepare_migration(cls, connection: AsyncConnection) -> None:
        """Set up the connection a migration runs on, before its transaction starts."""

    # -- statements ----------------------------------------------------------------

    def upsert(self) -> Insert:
        """Insert or replace one row: binds ``k``, ``v`` (JSON text), ``exp`` (ms or None)."""
        raise NotImplementedError

    def upsert_rows(self, rows: list[dict[str, Any]]) -> Insert:
        """One statement that inserts or replaces every row of `rows` (for ``set_many``).

        Each row is a dict of ``key`` (a `key_param`-typed value), ``value`` and
        ``expires_at``.
        """
        raise NotImplementedError

    def insert_if_absent(self) -> Insert | None:
        """Put-if-absent as one statement that changes one row exactly when it writes
        (binds ``k``, ``v``, ``exp``, ``now``); None when the database needs `add_item`."""
        return None

    async def add_item(self, conn: AsyncConnection, params: dict[str, Any]) -> bool:
        """Put-if-absent where `insert_if_absent` is None.

        Writes the row (binds ``k``, ``v``, ``exp``, ``now``) unless a live one is there,
        atomically; True when it wrote.
        """
        raise NotImplementedError

    async def renew_entry(self, conn: AsyncConnection, params: dict[str, Any]) -> Any:
        """Get-and-renew: give the live row ``k`` the expiry ``exp`` if it has one, and
        return its ``(value, expires_at)`` after that (None: no live row)."""
        raise NotImplementedError

    def prefix_cleanup(self, bounded: bool) -> Executable:
        """The batch statement of a cleanup limited to a key range.

        It binds ``now``, ``batch`` and ``low`` (and ``high`` when `bounded`) and deletes
        at most ``batch`` expired rows with ``low <= key (< high)``, re-checking expiry on
        the row it deletes.
        """
        raise NotImplementedError

    def decode_key(self, key: Any) -> str:
        """A key as the database returns it, as a str."""
        return str(key)

    @contextlib.asynccontextmanager
    async def locked_row(
        self, conn: AsyncConnection, key: str, *, create: bool = True
    ) -> AsyncIterator[Any]:
        """Lock the row of `key` for ``merge_item`` and yield ``(value, expires_at)``.

        Yields None when there is no row (the caller then inserts it, if `create`). With
        `create` the lock also holds an absent key, so two merges of a new key cannot
        both insert it; without, an absent key is left alone. The lock lasts until the
        block ends: committed when it succeeds, rolled back when it raises.
        """
        raise NotImplementedError
        yield  # pragma: no cover

    async def cleanup(self, conn: AsyncConnection, job: CleanupJob) -> int | None:
        """Delete expired rows in batches of at most ``job.batch_size``.

        Returns:
            The rows deleted, or None when another runner holds the cleanup lock.
        """
        raise NotImplementedError

    def fast_path(
        self, engine: AsyncEngine, statements: Mapping[str, ClauseElement]
    ) -> FastPath | None:
        """The raw-driver runner for single-row statements (None: SQLAlchemy's path)."""
        return None

    def merge_statement(self) -> MergeStatement | None:
        """The one-UPDATE merge the fast path runs for ``merge_existing`` (see
        `dialects._merge`); None: every merge takes `locked_row`."""
        return None

    @classmethod
    def refuses_json(cls, error: BaseException) -> bool:
        """Whether the database driver's `error` is a merge statement refusing JSON (a
        stored value or a new text it cannot read), which the general merge then names."""
        return False

    # -- errors --------------------------------------------------------------------

    @classmethod
    def driver_errors(cls) -> tuple[type[BaseException], ...]:
        """The database driver's own exception types.

        SQLAlchemy 2.0 lets some of them through unwrapped (a failed connect on asyncpg,
        for one), and the fast path raises them directly.
        """
        return ()

    @classmethod
    def classify(cls, error: BaseException) -> ErrorKind | None:
        """What a database driver's error means (None: a plain failure)."""
        return None

    @classmethod
    def write_slots(cls, pool_size: int) -> int | None:
        """How many of the pool's connections writes may hold at once (None: all).

        A database with one writer at a time keeps the rest for reads, which would
        otherwise wait behind writers that wait for the lock.
        """
        return None

    @classmethod
    def unavailable_advice(cls, url: str) -> str:
        """What to check when the database at `url` (redacted) cannot be used.

        Called after the failure, so it may look at the machine (a file's permissions).
        """
        return "Check the URL, that the server is running, and the credentials."

    # -- migrations ----------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def migration_lock(
        cls, connection: Connection, table: str, schema: str | None
    ) -> Iterator[None]:
        """Hold a lock for the migration of one table, so concurrent deploys take turns."""
        yield


@contextlib.asynccontextmanager
async def then(conn: AsyncConnection, undo: Executable) -> AsyncIterator[None]:
    """Run `undo` (release a lock, restore a setting) on `conn` after the block.

    When the block fails (cancelled by dispose or a timeout, or a database error),
    that failure is what the caller sees, never an error from the undo: a connection
    the failure invalidated is closed anyway, which ends its session and whatever it
    held, and one on which the undo fails is thrown away rather than pooled.
    """
    try:
        yield
    except BaseException:
        await undo_quietly(conn, lambda: conn.execute(undo))
        raise
    await conn.execute(undo)


async def undo_quietly(conn: AsyncConnection, undo: Callable[[], Awaitable[Any]]) -> None:
    """After a failure on `conn`, run `undo` (a rollback, an unlock) without masking it.

    A connection the failure invalidated (a cancelled statement) is skipped: it is
    closed anyway, which ends its transaction and whatever it held. One on which `undo`
    fails is thrown away rather than pooled, and the original failure stays the one the
    caller sees.
    """
    if conn.invalidated:
        return
    try:
        await undo()
    except Exception:
        with contextlib.suppress(Exception):
            await conn.invalidate()


async def _let_others_in(_elapsed: float) -> None:
    await asyncio.sleep(0)  # the app's own queries go between two batches


async def delete_in_batches(
    conn: AsyncConnection,
    statement: Executable,
    job: CleanupJob,
    *,
    after: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    pause: Callable[[float], Awaitable[None]] = _let_others_in,
    bind: Mapping[str, Any] | None = None,
) -> int:
    """Run the batch `statement` (binds ``now`` and ``batch``) until a batch comes up short.

    `after` runs after every batch; `pause` before the next one, given the seconds the
    batch (with `after`) took. `bind` holds the statement's other parameters.
    """
    total = 0
    while True:
        started = time.perf_counter()
        size = job.size
        params = {**(bind or {}), "now": job.now_ms(), "batch": size}
        deleted: int = (await conn.execute(statement, params)).rowcount
        total += deleted
        if after is not None:
            await after(conn)
        if deleted < size:
            return total
        await job.pause(time.perf_counter() - started, pause)


class OnConflictDialect(SQLDialect):
    """The statements of the databases with ``INSERT ... ON CONFLICT`` and ``UPDATE ...
    RETURNING`` (PostgreSQL, SQLite).

    A subclass sets ``self._insert`` (its dialect's `insert` of the table) before
    calling `_on_conflict_statements`, and builds its cleanup batch in `_cleanup_batch`.
    """

    _insert: Any

    def _on_conflict_statements(self) -> None:
        self._add = on_conflict_insert_if_absent(self._insert, self.table)
        self._renew = renew_returning(self.table)

    def _cleanup_batch(self, *conditions: ColumnElement[bool]) -> Any:
        """The cleanup batch statement, its rows limited further by `conditions`."""
        raise NotImplementedError

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
