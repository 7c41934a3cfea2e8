"""The alembic migrations: upgrade and downgrade, version tables, drift, errors.

Runs on a SQLite file in tmp_path and, when SQLSESSION_TEST_POSTGRES_URL and
SQLSESSION_TEST_MYSQL_URL are set, on PostgreSQL and MySQL/MariaDB, where every test uses
tables (or a PostgreSQL schema) of its own and drops them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from sqlsession import _migrate
from sqlsession._table import SCHEMA_REVISION, session_table, version_table_name
from sqlsession._url import dialect_name, resolve_url
from sqlsession.drivers.sql.dialects import dialect_class
from sqlsession.errors import ConfigError, DatabaseUnavailableError, SchemaError
from tests.conftest import BIN, mysql_base_url, run_script

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
PG_ENV = "SQLSESSION_TEST_POSTGRES_URL"


def run_sql(url: str, work: Callable[[Connection], T]) -> T:
    """Run `work` on a fresh connection to `url` (committed), from sync test code."""

    async def go() -> T:
        engine = create_async_engine(resolve_url(url), poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(go())


@dataclass
class Db:
    """One test's database: a URL as a user writes it, and the tables it owns."""

    kind: str
    url: str
    schema: str | None = None
    tables: list[str] = field(default_factory=list)

    def new_table(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.tables.append(name)
        return name

    def table_names(self) -> set[str]:
        return set(run_sql(self.url, lambda c: inspect(c).get_table_names(schema=self.schema)))

    def versions(self, table: str) -> list[str]:
        def read(conn: Connection) -> list[str]:
            name = quoted(conn, table, self.schema)
            return list(conn.execute(text(f"SELECT version_num FROM {name}")).scalars())

        return run_sql(self.url, read)


def quoted(conn: Connection, table: str, schema: str | None = None) -> str:
    """`table` (in `schema`) quoted for the connection's database."""
    quote = conn.dialect.identifier_preparer.quote
    return f"{quote(schema)}.{quote(table)}" if schema else quote(table)


def postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql://root@127.0.0.1/test)")
    return url


def drop_tables(db: Db) -> None:
    def drop(conn: Connection) -> None:
        if db.schema:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE'))
            return
        for table in db.tables:
            conn.execute(text(f"DROP TABLE IF EXISTS {quoted(conn, table)}"))
            conn.execute(text(f"DROP TABLE IF EXISTS {quoted(conn, version_table_name(table))}"))

    run_sql(db.url, drop)


SERVERS = [pytest.param("postgresql", marks=pytest.mark.postgres), "mysql"]


@pytest.fixture(params=["sqlite", *SERVERS])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A SQLite file, or a test server database with clean-up of our tables."""
    if request.param == "sqlite":
        yield Db("sqlite", f"sqlite:///{tmp_path / 'sessions.db'}")
        return
    url = postgres_url() if request.param == "postgresql" else mysql_base_url()
    found = Db(request.param, url)
    try:
        yield found
    finally:
        drop_tables(found)


@pytest.fixture(params=["sqlite", *SERVERS])
def schema_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """Like `db`, but on PostgreSQL everything lives in a new schema of its own."""
    if request.param == "sqlite":
        yield Db("sqlite", f"sqlite:///{tmp_path / 'sessions.db'}")
        return
    if request.param == "mysql":
        found = Db("mysql", mysql_base_url())
        try:
            yield found
        finally:
            drop_tables(found)
        return
    found = Db("postgresql", postgres_url(), schema="s_" + uuid.uuid4().hex[:12])
    run_sql(found.url, lambda c: c.execute(text(f'CREATE SCHEMA "{found.schema}"')))
    try:
        yield found
    finally:
        drop_tables(found)


def alembic_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``alembic`` command from the repository root, as a developer would."""
    return run_script("alembic", *args, env=env, cwd=ROOT)


# -- upgrade and downgrade -----------------------------------------------------------


@pytest.mark.slow
def test_alembic_command_upgrades_downgrades_and_upgrades_again(db: Db) -> None:
    table = db.new_table()
    x = ["-x", f"url={db.url}", "-x", f"table={table}"]

    result = alembic_cli(*x, "upgrade", "head")
    assert result.returncode == 0, result.stderr
    assert {table, version_table_name(table)} <= db.table_names()
    assert db.versions(version_table_name(table)) == [SCHEMA_REVISION]

    result = alembic_cli(*x, "downgrade", "base")
    assert result.returncode == 0, result.stderr
    # base means nothing of sqlsession's is left, the version table included.
    assert not {table, version_table_name(table)} & db.table_names()

    result = alembic_cli(*x, "upgrade", "head")
    assert result.returncode == 0, result.stderr
    assert table in db.table_names()
    assert _migrate.current(db.url, table=table) == SCHEMA_REVISION


@pytest.mark.slow
def test_alembic_command_takes_the_url_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "from-env.db"
    result = alembic_cli("upgrade", "head", env={"SQLSESSION_URL": f"sqlite:///{path}"})
    assert result.returncode == 0, result.stderr
    assert _migrate.current(f"sqlite:///{path}") == SCHEMA_REVISION


def test_migrate_functions_upgrade_downgrade_and_upgrade_again(db: Db) -> None:
    table = db.new_table()
    assert _migrate.current(db.url, table=table) is None

    _migrate.upgrade(db.url, table=table)
    assert _migrate.current(db.url, table=table) == SCHEMA_REVISION
    _migrate.upgrade(db.url, table=table)  # already at head: nothing to do
    assert _migrate.current(db.url, table=table) == SCHEMA_REVISION

    _migrate.downgrade(db.url, table=table, revision="base")
    assert _migrate.current(db.url, table=table) is None
    assert not {table, version_table_name(table)} & db.table_names()

    _migrate.upgrade(db.url, table=table, revision=SCHEMA_REVISION)
    assert _migrate.current(db.url, table=table) == SCHEMA_REVISION


def test_reading_the_revision_of_an_unmigrated_table_creates_nothing(db: Db) -> None:
    table = db.new_table()
    assert _migrate.current(db.url, table=table) is None
    assert not {table, version_table_name(table)} & db.table_names()


def test_downgrade_to_a_revision_above_base_keeps_the_version_table(db: Db) -> None:
    table = db.new_table()
    _migrate.upgrade(db.url, table=table)
    _migrate.downgrade(db.url, table=table, revision=SCHEMA_REVISION)  # nothing to undo
    assert db.versions(version_table_name(table)) == [SCHEMA_REVISION]


def test_current_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    assert _migrate.current(f"sqlite:///{tmp_path / 'absent.db'}") is None
    assert not (tmp_path / "absent.db").exists()


def test_sqlite_database_is_switched_to_wal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    _migrate.upgrade(url)
    assert run_sql(url, lambda c: c.exec_driver_sql("PRAGMA journal_mode").scalar()) == "wal"


async def test_migrate_functions_work_inside_a_running_event_loop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'in-loop.db'}"
    _migrate.upgrade(url)
    assert _migrate.current(url) == SCHEMA_REVISION


def test_scripts_are_found_in_the_checkout() -> None:
    assert _migrate.script_location() == ROOT / "migrations"


# -- version tables ------------------------------------------------------------------


def test_two_session_tables_migrate_independently(db: Db) -> None:
    first, second = db.new_table(), db.new_table()
    _migrate.upgrade(db.url, table=first)
    _migrate.upgrade(db.url, table=second)
    assert db.versions(version_table_name(first)) == [SCHEMA_REVISION]
    assert db.versions(version_table_name(second)) == [SCHEMA_REVISION]

    _migrate.downgrade(db.url, table=first, revision="base")
    assert _migrate.current(db.url, table=first) is None
    assert _migrate.current(db.url, table=second) == SCHEMA_REVISION
    tables = db.table_names()
    assert not {first, version_table_name(first)} & tables
    assert {second, version_table_name(second)} <= tables

    _migrate.upgrade(db.url, table=first)
    assert _migrate.current(db.url, table=first) == SCHEMA_REVISION


APP_ENV = """
import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

config = context.config


def run(connection):
    # The application's own history, in alembic's default table "alembic_version".
    context.configure(
        connection=connection, version_table_schema=config.attributes["schema"]
    )
    with context.begin_transaction():
        context.run_migrations()


async def main():
    engine = create_async_engine(config.attributes["url"], poolclass=NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run)
    await engine.dispose()


asyncio.run(main())
"""

APP_REVISION = """
import sqlalchemy as sa
from alembic import context, op

revision = "app1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "app_things",
        sa.Column("id", sa.Integer, primary_key=True),
        schema=context.config.attributes["schema"],
    )


def downgrade():
    op.drop_table("app_things", schema=context.config.attributes["schema"])
"""


def app_config(tmp_path: Path, db: Db) -> Config:
    """A throwaway alembic project of "the application", sharing the database."""
    project = tmp_path / "app_migrations"
    (project / "versions").mkdir(parents=True)
    (project / "env.py").write_text(textwrap.dedent(APP_ENV))
    (project / "versions" / "app1_things.py").write_text(textwrap.dedent(APP_REVISION))
    config = Config()
    config.set_main_option("script_location", str(project))
    config.set_main_option("path_separator", "os")
    config.attributes.update(url=resolve_url(db.url), schema=db.schema)
    return config


def test_an_applications_own_alembic_history_is_untouched(tmp_path: Path, schema_db: Db) -> None:
    db = schema_db
    table = db.new_table()
    app = app_config(tmp_path, db)

    command.upgrade(app, "head")
    _migrate.upgrade(db.url, table=table, schema=db.schema)
    assert db.versions("alembic_version") == ["app1"]
    assert db.versions(version_table_name(table)) == [SCHEMA_REVISION]

    _migrate.downgrade(db.url, table=table, schema=db.schema, revision="base")
    assert db.versions("alembic_version") == ["app1"]
    assert "app_things" in db.table_names()

    _migrate.upgrade(db.url, table=table, schema=db.schema)
    command.downgrade(app, "base")
    assert db.versions("alembic_version") == []
    assert table in db.table_names()
    assert _migrate.current(db.url, table=table, schema=db.schema) == SCHEMA_REVISION

    command.upgrade(app, "head")
    assert db.versions("alembic_version") == ["app1"]
    assert _migrate.current(db.url, table=table, schema=db.schema) == SCHEMA_REVISION


# -- drift ---------------------------------------------------------------------------


def diff_against(db: Db, table: str, metadata: MetaData) -> list[Any]:
    """alembic autogenerate's differences between the database and `metadata`."""

    def include_name(name: str | None, type_: str, _parents: object) -> bool:
        # The database holds other tests' and applications' tables and schemas.
        if type_ == "schema":
            return name == db.schema
        return type_ != "table" or name == table

    def compare(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "version_table": version_table_name(table),
                "version_table_schema": db.schema,
                "include_schemas": db.schema is not None,
                "include_name": include_name,
            },
        )
        return list(compare_metadata(context, metadata))

    return run_sql(db.url, compare)


def test_the_migrated_table_is_the_drivers_table(schema_db: Db) -> None:
    db = schema_db
    table = db.new_table()
    _migrate.upgrade(db.url, table=table, schema=db.schema)

    dialect = dialect_class(dialect_name(resolve_url(db.url)))
    expected = session_table(table, db.schema, **dialect.table_definition())
    assert diff_against(db, table, expected.metadata) == []

    def details(conn: Connection) -> dict[str, Any]:
        inspector = inspect(conn)
        return {
            "pk": inspector.get_pk_constraint(table, schema=db.schema),
            "indexes": inspector.get_indexes(table, schema=db.schema),
        }

    found = run_sql(db.url, details)
    # MySQL calls every primary key PRIMARY, whatever name the DDL gives it.
    assert found["pk"]["name"] == (None if db.kind == "mysql" else f"{table}_pkey")
    assert found["pk"]["constrained_columns"] == ["key"]
    assert [(i["name"], i["column_names"], bool(i["unique"])) for i in found["indexes"]] == [
        (f"{table}_expires_at_idx", ["expires_at"], False)
    ]
    if db.kind == "postgresql":
        # Neither autogenerate nor the inspector looks at collations: ask the catalog.
        collation = run_sql(
            db.url,
            lambda c: c.execute(
                text(
                    "SELECT collation_name FROM information_schema.columns WHERE table_name = "
                    ":t AND column_name = 'key' AND table_schema = coalesce(:s, current_schema())"
                ),
                {"t": table, "s": db.schema},
            ).scalar_one(),
        )
        assert collation == "C"
    if db.kind == "mysql":
        # Keys compared byte for byte (a _bin collation ignores trailing spaces on
        # MariaDB), values of any size and with emoji.
        columns: dict[str, str] = run_sql(
            db.url,
            lambda c: dict(
                c.execute(
                    text(
                        "SELECT column_name, concat(column_type, ' ', "
                        "coalesce(character_set_name, '-')) FROM information_schema.columns "
                        "WHERE table_name = :t AND table_schema = database()"
                    ),
                    {"t": table},
                ).all()
            ),
        )
        assert columns == {
            "key": "varbinary(1020) -",
            "value": "longtext utf8mb4",
            "expires_at": "bigint(20) -",
        }


def test_the_drift_check_does_see_differences(db: Db) -> None:
    table = db.new_table()
    _migrate.upgrade(db.url, table=table)
    drifted = Table(
        table,
        MetaData(),
        Column("key", String(100), primary_key=True),
        Column("value", Text(), nullable=True),
        Column("expires_at", BigInteger()),
    )
    # A column's changes come as one list (MySQL's ALTER restates the whole column).
    kinds = {
        op[0]
        for d in diff_against(db, table, drifted.metadata)
        for op in ([d] if isinstance(d, tuple) else d)
    }
    assert {"remove_index", "modify_type", "modify_nullable"} <= kinds


def test_the_driver_expects_the_head_revision() -> None:
    config = Config()
    config.set_main_option("script_location", str(_migrate.script_location()))
    config.set_main_option("path_separator", "os")
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_REVISION]


def test_offline_sql_names_the_table_its_version_table_and_the_collation() -> None:
    output = io.StringIO()
    config = Config(
        str(ROOT / "alembic.ini"),
        output_buffer=output,
        cmd_opts=argparse.Namespace(x=["url=postgresql://app@db/app", "table=web_sessions"]),
    )
    command.upgrade(config, "head", sql=True)
    sql = output.getvalue()
    assert "CREATE TABLE web_sessions_alembic_version" in sql
    assert 'key VARCHAR(255) COLLATE "C" NOT NULL' in sql
    assert "CREATE INDEX web_sessions_expires_at_idx ON web_sessions (expires_at)" in sql


def test_offline_sql_of_a_downgrade_to_base_drops_the_version_table() -> None:
    output = io.StringIO()
    config = Config(
        str(ROOT / "alembic.ini"),
        output_buffer=output,
        cmd_opts=argparse.Namespace(x=["url=postgresql://app@db/app", "table=web_sessions"]),
    )
    command.downgrade(config, f"{SCHEMA_REVISION}:base", sql=True)
    statements = [line for line in output.getvalue().splitlines() if line.endswith(";")]
    assert statements[-3:] == [
        "DELETE FROM web_sessions_alembic_version WHERE "
        f"web_sessions_alembic_version.version_num = '{SCHEMA_REVISION}';",
        "DROP TABLE web_sessions_alembic_version;",
        "COMMIT;",
    ]


# -- errors --------------------------------------------------------------------------


def test_an_unknown_x_option_is_refused(tmp_path: Path) -> None:
    config = Config(
        str(ROOT / "alembic.ini"),
        cmd_opts=argparse.Namespace(x=[f"url=sqlite:///{tmp_path / 'x.db'}", "tabel=oops"]),
    )
    with pytest.raises(ConfigError, match="tabel"):
        command.upgrade(config, "head")


def test_an_unknown_revision_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Unknown migration revision 'nope'; known: head"):
        _migrate.upgrade(f"sqlite:///{tmp_path / 'x.db'}", revision="nope")
    assert not (tmp_path / "x.db").exists()


def test_a_bad_table_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="plain SQL identifier"):
        _migrate.upgrade(f"sqlite:///{tmp_path / 'x.db'}", table="x; DROP TABLE y")


def test_a_sqlite_file_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailableError, match=r"does not exist\. Create it first"):
        _migrate.upgrade(f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}")


def test_an_unreachable_postgresql_is_unavailable() -> None:
    with pytest.raises(DatabaseUnavailableError, match=r"Cannot reach the database .*:1/"):
        _migrate.upgrade("postgresql://nobody@127.0.0.1:1/nothing")


def test_a_table_created_without_migrations_is_a_schema_error(db: Db) -> None:
    table = db.new_table()
    run_sql(db.url, lambda c: c.execute(text(f"CREATE TABLE {quoted(c, table)} (x INTEGER)")))
    with pytest.raises(SchemaError, match="was not created by sqlsession migrate"):
        _migrate.upgrade(db.url, table=table)


@pytest.mark.postgres
def test_a_missing_postgresql_schema_says_to_create_it() -> None:
    url = postgres_url()
    with pytest.raises(SchemaError, match=r"CREATE SCHEMA s_missing_schema"):
        _migrate.upgrade(url, table="t_unused", schema="s_missing_schema")


def test_schema_is_refused_on_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL option"):
        _migrate.upgrade(f"sqlite:///{tmp_path / 'x.db'}", schema="public")


@pytest.mark.slow
def test_concurrent_migrations_of_one_table_both_succeed(db: Db) -> None:
    table = db.new_table()
    command_line = [str(BIN / "sqlsession"), "migrate", "--url", db.url, "--table", table]
    processes = [
        subprocess.Popen(command_line, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in processes:
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    assert db.versions(version_table_name(table)) == [SCHEMA_REVISION]
