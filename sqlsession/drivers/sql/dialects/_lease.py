"""A lock that holds across a MariaDB Galera cluster: a row with a lease, in ``<table>_lock``.

``GET_LOCK`` is per server: on Galera every node would grant the same named lock at
once. A row is replicated and every commit is certified against the others, so of two
runners that claim the same row on two nodes at once one commits and the other is rolled
back (error 1213) or, coming second, finds the row taken. Every statement here runs on
an autocommit connection, so the claim is visible cluster-wide as soon as it returns.

A runner that dies keeps its row until the lease runs out: a live runner renews it as it
works, and a new one takes over a row whose lease has passed. The lock table belongs to
the migrations' infrastructure, like alembic's version table: the migration runner
creates it (it needs it for its own lock before the first revision runs) and drops it
with the version table at base.
"""

from __future__ import annotations

import secrets

from sqlalchemy import BigInteger, Column, MetaData, PrimaryKeyConstraint, String, Table, text
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateTable, DropTable
from sqlalchemy.sql.expression import TextClause

__all__ = ["LeaseLock", "lock_table", "lock_table_name"]


def lock_table_name(table: str) -> str:
    """The lock table kept for one session table."""
    return f"{table}_lock"


def lock_table(table: str) -> Table:
    """``<table>_lock``: one row per lock held on the session table `table`.

    Columns: ``name`` (``"cleanup"``, ``"migrate"``), ``holder`` (a random token of the
    runner that holds it) and ``expires_at`` (when its lease ends, ms since the epoch).
    """
    name = lock_table_name(table)
    return Table(
        name,
        MetaData(),
        Column("name", String(32), nullable=False),
        Column("holder", String(32), nullable=False),
        Column("expires_at", BigInteger(), nullable=False),
        PrimaryKeyConstraint("name", name=f"{name}_pkey"),
        mysql_charset="ascii",
    )


class LeaseLock:
    """The statements of one named lock in the lock table of session table `table`.

    Each holds for one runner, named by `holder` (a new random token per `LeaseLock`),
    which may claim again a lock it already holds: a run cancelled before it could
    release does not lock its own runner out until the lease passes.
    """

    def __init__(self, table: str, name: str) -> None:
        lock = lock_table(table)
        quoted = mysql.dialect().identifier_preparer.format_table(lock)
        self.holder = secrets.token_hex(16)
        self.table = lock.name
        self.create = CreateTable(lock, if_not_exists=True)
        self.drop = DropTable(lock, if_exists=True)
        ours = {"name": name, "holder": self.holder}
        # Taken when the row is absent, its lease has passed or it is ours already;
        # otherwise left as it is. MySQL assigns left to right: `holder` first, from the
        # old row; then `expires_at`, which is ours to set when `holder` now is.
        self.claim: TextClause = text(
            f"INSERT INTO {quoted} (name, holder, expires_at) VALUES (:name, :holder, :exp) "
            "ON DUPLICATE KEY UPDATE "
            "holder = IF(expires_at <= :now OR holder = VALUES(holder), VALUES(holder), holder), "
            "expires_at = IF(holder = VALUES(holder), VALUES(expires_at), expires_at)"
        ).bindparams(**ours)
        self.held_by: TextClause = text(
            f"SELECT holder FROM {quoted} WHERE name = :name"
        ).bindparams(name=name)
        self.renew: TextClause = text(
            f"UPDATE {quoted} SET expires_at = :exp WHERE name = :name AND holder = :holder"
        ).bindparams(**ours)
        # Released by ending the lease: the row stays, for the next claim to take.
        self.release: TextClause = text(
            f"UPDATE {quoted} SET expires_at = 0 WHERE name = :name AND holder = :holder"
        ).bindparams(**ours)
