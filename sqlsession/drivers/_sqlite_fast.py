"""SQLite fast path: one trip to aiosqlite's connection thread per operation.

Through SQLAlchemy's adapter a read takes four trips to that thread (execute, fetch,
close the cursor, roll back on check-in); each trip is a thread wake-up and a wake-up of
the event loop, which cost more than the lookup itself.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ._fast import FastPath

__all__ = ["SqliteFastPath"]


class SqliteFastPath(FastPath):
    """`FastPath` on aiosqlite connections."""

    # aiosqlite raises ValueError for a connection it has closed.
    errors = (sqlite3.Error, ValueError)

    async def _execute(self, conn: Any, sql: str, args: list[Any], fetch: bool) -> Any:
        if fetch:
            rows = await conn.execute_fetchall(sql, args)
            result = rows[0][0] if rows else None
        else:
            result = (await conn.execute(sql, args)).rowcount
        # The driver's own engine autocommits; an engine handed to it may leave sqlite3
        # opening a transaction before a write, which must not stay open.
        if conn.in_transaction:
            await conn.commit()
        return result

    def _lost(self, conn: Any, exc: BaseException) -> bool:
        return isinstance(exc, ValueError)
