"""PostgreSQL fast path: the driver's statements as asyncpg prepared statements.

asyncpg prepares each statement once per connection and keeps it in its statement
cache, so an operation is one Bind/Execute round trip.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ._fast import FastPath

__all__ = ["PgFastPath"]


class PgFastPath(FastPath):
    """`FastPath` on asyncpg connections."""

    errors = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

    async def _execute(self, conn: Any, sql: str, args: list[Any], fetch: bool) -> Any:
        if fetch:
            return await conn.fetchval(sql, *args)
        status: str = await conn.execute(sql, *args)
        # The command tag ends with the row count: "UPDATE 1", "INSERT 0 1".
        return int(status.rsplit(" ", 1)[-1])

    def _lost(self, conn: Any, exc: BaseException) -> bool:
        return bool(conn.is_closed()) or isinstance(exc, OSError)
