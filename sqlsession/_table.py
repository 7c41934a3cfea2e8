"""The session table, defined once for the driver, the migrations and the drift test."""

from __future__ import annotations

from typing import Any

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
from sqlalchemy.types import TypeEngine

# The alembic revision the driver's statements are written for; the drift test checks
# that it is the head of migrations/versions.
SCHEMA_REVISION = "0001"


def version_table_name(table: str) -> str:
    """The name of the alembic version table kept for one session table."""
    return f"{table}_alembic_version"


def session_table(
    name: str,
    schema: str | None = None,
    metadata: MetaData | None = None,
    *,
    key_type: TypeEngine[Any] | None = None,
    value_type: TypeEngine[Any] | None = None,
    **table_options: Any,
) -> Table:
    """Build the session table `name` (columns: key, value, expires_at).

    ``key`` holds up to 255 characters, ordered by code point and compared exactly;
    ``value`` is JSON text written by sqlsession itself (not ``jsonb``, which would
    renormalise numbers and refuse ``\\u0000``); ``expires_at`` is a UTC instant in
    milliseconds since the Unix epoch, NULL for no expiry. A database whose plain
    ``VARCHAR``/``TEXT`` would not keep those promises passes its own `key_type`,
    `value_type` and `table_options` (see `SQLDialect.table_definition`).
    """
    return Table(
        name,
        metadata if metadata is not None else MetaData(),
        Column("key", key_type if key_type is not None else String(255), nullable=False),
        Column("value", value_type if value_type is not None else Text(), nullable=False),
        Column("expires_at", BigInteger(), nullable=True),
        PrimaryKeyConstraint("key", name=f"{name}_pkey"),
        Index(f"{name}_expires_at_idx", "expires_at"),
        schema=schema,
        **table_options,
    )
