"""The session table, defined once for the driver, the migrations and the drift test."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql

# The alembic revision the driver's statements are written for; the drift test checks
# that it is the head of migrations/versions.
SCHEMA_REVISION = "0001"


def version_table_name(table: str) -> str:
    """The name of the alembic version table kept for one session table."""
    return f"{table}_alembic_version"


def session_table(name: str, schema: str | None = None, metadata: MetaData | None = None) -> Table:
    """Build the session table `name` (columns: key, value, expires_at).

    ``key`` uses the "C" collation on PostgreSQL and is UTF-8 bytes (``VARBINARY``) on
    MySQL, so that key order, prefix ranges and their index agree with SQLite's binary
    order, byte for byte; ``value`` is JSON text written by sqlsession itself (not
    ``jsonb``, which would renormalise numbers and refuse ``\\u0000``; ``LONGTEXT`` in
    utf8mb4 on MySQL, whose ``TEXT`` stops at 64 KB); ``expires_at`` is a UTC instant
    in milliseconds since the Unix epoch, NULL for no expiry.
    """
    return Table(
        name,
        metadata if metadata is not None else MetaData(),
        Column(
            "key",
            String(255)
            .with_variant(String(255, collation="C"), "postgresql")
            .with_variant(mysql.VARBINARY(4 * 255), "mysql", "mariadb"),
            nullable=False,
        ),
        Column(
            "value",
            Text().with_variant(mysql.LONGTEXT(charset="utf8mb4"), "mysql", "mariadb"),
            nullable=False,
        ),
        Column("expires_at", BigInteger(), nullable=True),
        PrimaryKeyConstraint("key", name=f"{name}_pkey"),
        Index(f"{name}_expires_at_idx", "expires_at"),
        schema=schema,
        mysql_charset="utf8mb4",
    )
