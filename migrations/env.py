"""Alembic environment for one sqlsession table, after alembic's async template.

Each run migrates one session table, chosen at run time, and records its revision in
that table's own version table (``<table>_alembic_version``), so an application's own
alembic history in the same database is never read or written.

Where the settings come from, first match wins:

- URL: ``-x url=...``; the ``sqlalchemy.url`` option of the alembic `Config` (set by
  ``sqlsession migrate``); ``$SQLSESSION_URL``; ``sqlite:///sqlsession.db``.
- table: ``-x table=...``; ``config.attributes["sqlsession_table"]``; ``"sqlsession"``.
- schema (PostgreSQL): ``-x schema=...``; ``config.attributes["sqlsession_schema"]``;
  none (the search path).

The revisions read the table and schema back from ``config.attributes``.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Connection
from sqlalchemy.schema import DropTable

from sqlsession._table import session_table, version_table_name
from sqlsession._url import dialect_name, resolve_url
from sqlsession._validate import check_identifier
from sqlsession.drivers.sql.dialects import dialect_class
from sqlsession.errors import ConfigError

DEFAULT_TABLE = "sqlsession"
X_OPTIONS = ("url", "table", "schema")

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

x_args = context.get_x_argument(as_dictionary=True)
unknown = sorted(set(x_args) - set(X_OPTIONS))
if unknown:
    raise ConfigError(f"Unknown -x option(s) {unknown}; sqlsession knows {list(X_OPTIONS)}.")

url = resolve_url(x_args.get("url") or config.get_main_option("sqlalchemy.url") or None)
table = check_identifier(
    x_args.get("table") or config.attributes.get("sqlsession_table") or DEFAULT_TABLE,
    what="table",
)
schema_arg = x_args.get("schema") or config.attributes.get("sqlsession_schema")
schema = None if not schema_arg else check_identifier(schema_arg, what="schema")
dialect = dialect_class(dialect_name(url))
if schema is not None and not dialect.supports_schema:
    raise ConfigError(f"schema is a PostgreSQL option; {dialect.title} has none.")

config.attributes["sqlsession_table"] = table
config.attributes["sqlsession_schema"] = schema

# What `alembic check` and autogenerate compare against: the driver's own table, and
# nothing else in the database (the application's tables are none of our business).
target_metadata = session_table(table, schema, **dialect.table_definition()).metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Limit autogenerate to this session table (and its schema, if it has one)."""
    if type_ == "schema":
        return name == schema
    return type_ != "table" or name == table


def configure(**options: Any) -> None:
    """`context.configure` with the options shared by offline and online runs."""
    context.configure(
        target_metadata=target_metadata,
        include_name=include_name,
        version_table=version_table_name(table),
        version_table_schema=schema,
        include_schemas=schema is not None,
        compare_type=True,
        **options,
    )


def version_table() -> Table:
    """This session table's alembic version table, enough of it to drop it."""
    return Table(version_table_name(table), MetaData(), schema=schema)


def drop_version_table_at_base(connection: Connection) -> None:
    """Remove the version table once the session table is back at base.

    alembic leaves an empty version table behind after ``downgrade base``; for
    sqlsession, base means "nothing of sqlsession's in this database", so the table
    that records the history goes with the table it describes. A run that only reads
    (``alembic current``, `_migrate.current`) changes nothing.
    """
    migration = context.get_context()
    if migration.opts.get("dont_mutate") or migration.get_current_heads():
        return
    version_table().drop(connection, checkfirst=True)


def run_migrations_offline() -> None:
    """Write the migration SQL (``alembic upgrade head --sql``) instead of running it."""
    configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
        # The script's last statement for a downgrade to base, as online runs do.
        if context.get_revision_argument() is None and context.get_starting_revision_argument():
            context.execute(DropTable(version_table()))


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on `connection`, one migrator per table at a time."""
    configure(connection=connection, transactional_ddl=dialect.transactional_ddl)
    with context.begin_transaction(), dialect.migration_lock(connection, table, schema):
        # Two deploys migrating the same table at once would both try to create it;
        # the second waits for the lock, then finds the work done.
        context.run_migrations()
        drop_version_table_at_base(connection)


async def run_async_migrations() -> None:
    """Connect with the async driver and run the migrations in a sync callback."""
    engine = dialect.migration_engine(url)
    try:
        async with engine.connect() as connection:
            await dialect.prepare_migration(connection)
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Run the migrations against the database."""
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
