"""The fast path shared by every database: one compiled statement on a raw connection.

SQLAlchemy's per-statement Python path (an `AsyncConnection`, the compiled-cache
lookup, the DBAPI adapter's cursor, a `Result`) costs several times the database round
trip of a primary-key lookup. For the driver's single-statement operations this module
checks a connection out of the engine's own pool, runs the statement, compiled once from
the driver's SQLAlchemy statement, directly on the database driver's connection (asyncpg
aiosqlite or asyncmy), and checks the connection back in, or hands it to the next
operation when that starts before the event loop turns (`_handoff`). The engine, the
pool, the URL and the schema stay SQLAlchemy's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Literal

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from ._greenlet import GreenletRunner
from ._handoff import Handoff, pool_drained
from ._retry import CONFLICT_RETRIES, pause_after_conflict

__all__ = ["FastPath", "Fetch", "compile_statement", "give_way", "pool_drained"]

Compiled = tuple[str, tuple[str, ...], dict[str, Any]]
Fetch = Literal["value", "row", "count"]
"""What a statement's run returns: the first column of the first row (None: no row), the
first row (a sequence, or None), or how many rows it changed."""


def compile_statement(stmt: ClauseElement, dialect: Dialect) -> Compiled:
    """The SQL text of `stmt` for `dialect`, its parameter names in order, and the values
    of parameters that carry one (such as a ``literal(1)``)."""
    compiled = stmt.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    names = tuple(compiled.positiontup or ())
    fixed = {name: value for name, value in compiled.params.items() if value is not None}
    return str(compiled), names, fixed


async def give_way(drained: bool) -> None:
    """After returning a connection to a drained pool, let a waiting task take it.

    The pool's asyncio queue hands a returned connection to whoever asks next, and the
    task that returned it asks again at once if it runs operations back to back, before
    the waiter it woke gets to run: under sustained load one waiter could starve until
    the pool's 30 s timeout. Yielding once lets the woken waiter go first.
    """
    if drained:
        await asyncio.sleep(0)


class FastPath:
    """Runs named single-row statements on raw connections from `engine`'s pool.

    Subclasses say how to run a statement on their driver's connection and how to tell
    a connection the server dropped from any other failure.
    """

    hands_over = True
    """Whether a connection may go straight to the next operation, past the pool's checkout
    (`_handoff`); False where a checkout listener must see every operation."""

    errors: tuple[type[BaseException], ...] = ()
    """The driver's exception types; the SQL driver maps them to sqlsession errors."""

    def __init__(self, engine: AsyncEngine, statements: Mapping[str, ClauseElement]) -> None:
        self._engine = engine
        self._greenlets = GreenletRunner()
        self._handoff = Handoff(self._greenlets)
        self._statements = {
            name: compile_statement(stmt, engine.dialect) for name, stmt in statements.items()
        }

    async def scalar(self, name: str, params: Mapping[str, Any]) -> Any:
        """The first column of the first row statement `name` returns, or None."""
        return await self._run(name, params, fetch="value")

    async def row(self, name: str, params: Mapping[str, Any]) -> Any:
        """The first row statement `name` returns (a sequence of its columns), or None."""
        return await self._run(name, params, fetch="row")

    async def rowcount(self, name: str, params: Mapping[str, Any]) -> int:
        """How many rows statement `name` changed."""
        count: int = await self._run(name, params, fetch="count")
        return count

    async def release(self) -> None:
        """Return the connections kept for the next operation to the pool (on dispose)."""
        await self._handoff.release()

    async def give_back(self) -> None:
        """Return this event loop's kept connection to the pool (before another checkout)."""
        await self._handoff.give_back(self._engine.sync_engine.pool)

    async def run_sql(self, sql: str, args: list[Any], fetch: Fetch) -> Any:
        """Run the SQL text `sql` (in the driver's own parameter style) with `args`.

        For statements whose text is built per call (`dialects._merge`), with the same
        retries as the named ones.
        """
        return await self._run_text(sql, args, fetch)

    async def _execute(self, conn: Any, sql: str, args: list[Any], fetch: Fetch) -> Any:
        raise NotImplementedError

    def _abandon(self, conn: Any) -> None:
        """Let go of `conn` after a cancelled statement, without awaiting anything."""

    def _lost(self, conn: Any, exc: BaseException) -> bool:
        """Whether `exc` means `conn` is gone (and the statement may run again elsewhere)."""
        raise NotImplementedError

    def _conflict(self, exc: BaseException) -> bool:
        """Whether `exc` is a deadlock the server rolled back (the statement may run again)."""
        return False

    async def _run(self, name: str, params: Mapping[str, Any], *, fetch: Fetch) -> Any:
        sql, names, fixed = self._statements[name]
        args = [params[n] if n in params else fixed[n] for n in names]
        return await self._run_text(sql, args, fetch)

    async def _run_text(self, sql: str, args: list[Any], fetch: Fetch) -> Any:
        # Each operation here is idempotent, so a connection the server dropped (a
        # restart, an idle timeout) costs one retry on a fresh connection rather than
        # a ping before every operation. A statement a conflict rolled back (a deadlock, a
        # Galera certification failure) runs again, up to CONFLICT_RETRIES times. (The two
        # that report, delete_item and add_item, could report False for a change of their
        # own whose reply was lost with the connection; a stale connection after a
        # restart, the common case, never sent it.)
        retry_lost = True
        conflicts = 0
        while True:
            # Checked out and in on a greenlet: both may need to await the
            # driver (opening a connection, closing an overflow one).
            pool = self._engine.sync_engine.pool
            fairy = self._handoff.take(pool)
            if fairy is None:
                fairy = await self._greenlets.run(pool.connect)
            conn = fairy.driver_connection
            try:
                result = await self._execute(conn, sql, args, fetch)
            except self.errors as exc:
                lost = self._lost(conn, exc)
                if lost:
                    # As SQLAlchemy does on a disconnect: every connection opened before
                    # now is replaced on its next checkout, since a restarted server has
                    # dropped them all.
                    pool._invalidate(fairy, exc)
                    fairy.close()
                else:
                    await self._greenlets.run(fairy.close)
                if lost and retry_lost:
                    retry_lost = False
                    continue
                if not lost and self._conflict(exc) and conflicts < CONFLICT_RETRIES:
                    conflicts += 1
                    await pause_after_conflict(conflicts)
                    continue
                raise
            except BaseException:
                # Cancelled mid-statement: the connection's state is unknown, so it is
                # closed rather than handed to the next operation (as SQLAlchemy does).
                # Invalidating outside a greenlet closes without awaiting.
                self._abandon(conn)
                fairy.invalidate()
                fairy.close()
                raise
            if self.hands_over and self._handoff.keep(fairy, pool):
                return result
            drained = pool_drained(pool)
            await self._greenlets.run(fairy.close)
            await give_way(drained)
            return result
