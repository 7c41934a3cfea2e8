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

# The alembic revision the driver's statements are written for; the drift test checks
# that it is the head of migrations/versions.
SCHEMA_REVISION = "0001"


def version_table_name(table: str) -> str:
    """The name of the alembic version table kept for one session table."""
    return f"{table}_alembic_version"


def session_table(name: str, schema: str | None = None, metadata: MetaData | None = None) -> Table:
    """Build the session table `name` (columns: key, value, expires_at).

    ``key`` uses the "C" collation on PostgreSQL so that key order, prefix ranges and
    their index agree with SQLite's binary order; ``value`` is JSON text written by
    sqlsession itself (not ``jsonb``, which would renormalise numbers and refuse
    ``\\u0000``); ``expires_at`` is a UTC instant in milliseconds since the Unix epoch,
    NULL for no expiry.
    """
    return Table(
        name,
        metadata if metadata is not None else MetaData(),
        Column(
            "key",
            String(255).with_variant(String(255, collation="C"), "postgresql"),
            nullable=False,
        ),
        Column("value", Text(), nullable=False),
        Column("expires_at", BigInteger(), nullable=True),
        PrimaryKeyConstraint("key", name=f"{name}_pkey"),
        Index(f"{name}_expires_at_idx", "expires_at"),
        schema=schema,
    )
