"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Frozen history: write columns out here, never import them from sqlsession, and read
the table and schema from `context.config.attributes` (set by env.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    """Upgrade the session table."""
    table = context.config.attributes.get("sqlsession_table", "sqlsession")
    schema = context.config.attributes.get("sqlsession_schema")
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    """Downgrade the session table."""
    table = context.config.attributes.get("sqlsession_table", "sqlsession")
    schema = context.config.attributes.get("sqlsession_schema")
    ${downgrades if downgrades else "pass"}
