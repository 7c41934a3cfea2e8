"""Create the session table and its expiry index.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 11:00:00

Frozen history: the columns are written out here rather than imported from
sqlsession._table, so that later changes to the driver's table need a new revision
(the drift test fails until one exists). The table and schema names are chosen at run
time by env.py (``-x table=`` / ``sqlsession migrate --table``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _target() -> tuple[str, str | None]:
    """The session table and schema this run migrates, as env.py resolved them."""
    attributes = context.config.attributes
    return attributes.get("sqlsession_table", "sqlsession"), attributes.get("sqlsession_schema")


def upgrade() -> None:
    """Create the table: key (primary key), value (JSON text), expires_at (UTC ms)."""
    table, schema = _target()
    op.create_table(
        table,
        # The "C" collation orders keys by code point on PostgreSQL, as SQLite does, so
        # prefix scans agree across backends and can use the primary key index. MySQL
        # keeps UTF-8 bytes: compared exactly, in code point order.
        sa.Column(
            "key",
            sa.String(255)
            .with_variant(sa.String(255, collation="C"), "postgresql")
            .with_variant(mysql.VARBINARY(1020), "mysql", "mariadb"),
            nullable=False,
        ),
        # JSON text written by sqlsession; not jsonb, which renormalises numbers. MySQL's
        # TEXT stops at 64 KB.
        sa.Column(
            "value",
            sa.Text().with_variant(mysql.LONGTEXT(charset="utf8mb4"), "mysql", "mariadb"),
            nullable=False,
        ),
        # Milliseconds since the Unix epoch, UTC; NULL means the row never expires.
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=f"{table}_pkey"),
        schema=schema,
        mysql_charset="utf8mb4",
    )
    op.create_index(f"{table}_expires_at_idx", table, ["expires_at"], schema=schema)


def downgrade() -> None:
    """Drop the table and its index."""
    table, schema = _target()
    op.drop_index(f"{table}_expires_at_idx", table_name=table, schema=schema)
    op.drop_table(table, schema=schema)
