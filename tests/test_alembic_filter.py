"""An application's own alembic autogenerate beside sqlsession's tables.

A throwaway application project in tmp_path, with one model (``app_users``), runs
``alembic revision --autogenerate`` against a database where sqlsession migrated two
session tables (the default ``sqlsession`` and ``web_sessions``, migrated with
``--table``) and where one table of the application's (``app_legacy``) is no longer in
its models. Without a filter, autogenerate drops sqlsession's tables; with one, no
operation touches them, and the application's own changes still come through.
"""

from __future__ import annotations

import shutil
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import alembic
import pytest
from alembic import command
from alembic.config import Config
from alembic.operations import ops
from sqlalchemy.engine import make_url

from sqlsession import _migrate
from sqlsession._url import resolve_url
from sqlsession.alembic import exclude, include_name, include_object
from sqlsession.errors import ConfigError
from tests.conftest import admin, admin_mysql, admin_sql, mysql_base_url, postgres_base_url

OURS = {"sqlsession", "sqlsession_alembic_version", "web_sessions", "web_sessions_alembic_version"}

APP_ENV = """
import asyncio

from alembic import context
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

config = context.config
target_metadata = MetaData()
Table(
    "app_users",
    target_metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50)),
)


def keep_ops(context, revision, directives):
    config.attributes["upgrade_ops"] = directives[0].upgrade_ops


def run(connection):
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        process_revision_directives=keep_ops,
        **config.attributes["filters"],
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


@dataclass
class Database:
    kind: str
    url: str


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "mysql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own, with sqlsession's two tables and the app's old table."""
    name = f"sqlsession_filter_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        found = Database("sqlite", f"sqlite:///{tmp_path / 'app.db'}")
        drop = None
    elif request.param == "postgresql":
        base = postgres_base_url()
        admin_sql(base, f'CREATE DATABASE "{name}"')
        found = Database("postgresql", make_url(base).set(database=name).render_as_string(False))
        drop = lambda: admin_sql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # noqa: E731
    else:
        base = mysql_base_url()
        admin_mysql(base, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        found = Database("mysql", make_url(base).set(database=name).render_as_string(False))
        drop = lambda: admin_mysql(base, f"DROP DATABASE IF EXISTS `{name}`")  # noqa: E731
    try:
        _migrate.upgrade(found.url)
        _migrate.upgrade(found.url, table="web_sessions")
        if found.kind == "sqlite":
            import sqlite3

            with sqlite3.connect(found.url.removeprefix("sqlite:///")) as conn:
                conn.execute("CREATE TABLE app_legacy (id INTEGER PRIMARY KEY)")
            conn.close()
        else:
            admin(found.url, "CREATE TABLE app_legacy (id INTEGER PRIMARY KEY)")
        yield found
    finally:
        if drop is not None:
            drop()


def autogenerate(tmp_path: Path, database: Database, **filters: Any) -> tuple[str, list[Any]]:
    """Run the application's autogenerate; return the script and its upgrade operations."""
    project = tmp_path / "app_migrations"
    (project / "versions").mkdir(parents=True)
    (project / "env.py").write_text(textwrap.dedent(APP_ENV))
    # alembic's own template for new revision files, as `alembic init` copies it.
    template = Path(alembic.__file__).parent / "templates" / "generic" / "script.py.mako"
    shutil.copy(template, project)
    config = Config()
    config.set_main_option("script_location", str(project))
    config.set_main_option("path_separator", "os")
    config.attributes.update(url=resolve_url(database.url), filters=filters)
    command.revision(config, message="app", autogenerate=True, rev_id="app1")
    script = (project / "versions" / "app1_app.py").read_text()
    return script, list(config.attributes["upgrade_ops"].ops)


def touched(operations: list[Any]) -> dict[str, set[str]]:
    """Table name -> the kinds of operation on it (drop_table, add_index, ...)."""
    found: dict[str, set[str]] = {}
    for op in operations:
        inner: list[Any] = list(op.ops) if isinstance(op, ops.ModifyTableOps) else [op]
        for each in inner:
            found.setdefault(each.table_name, set()).add(type(each).__name__)
    return found


def test_without_a_filter_autogenerate_drops_sqlsessions_tables(
    tmp_path: Path, database: Database
) -> None:
    script, operations = autogenerate(tmp_path, database)
    changes = touched(operations)
    assert {name: "DropTableOp" in changes.get(name, set()) for name in OURS} == dict.fromkeys(
        OURS, True
    )
    assert "op.drop_table('sqlsession')" in script
    assert "op.drop_table('sqlsession_alembic_version')" in script


@pytest.mark.parametrize(
    "filters",
    [
        pytest.param({"include_object": include_object}, id="include_object"),
        pytest.param(
            {"include_name": exclude(tables=["sqlsession", "web_sessions"])}, id="exclude"
        ),
    ],
)
def test_with_a_filter_no_operation_touches_sqlsessions_tables(
    tmp_path: Path, database: Database, filters: dict[str, Any]
) -> None:
    script, operations = autogenerate(tmp_path, database, **filters)
    changes = touched(operations)
    assert set(changes) & OURS == set()
    for name in OURS:
        assert repr(name) not in script
    # The application's own changes still come through.
    assert changes["app_users"] == {"CreateTableOp"}
    assert changes["app_legacy"] == {"DropTableOp"}


def test_include_name_hides_the_default_table_and_version_tables_only(
    tmp_path: Path, database: Database
) -> None:
    _, operations = autogenerate(tmp_path, database, include_name=include_name)
    changes = touched(operations)
    # By name alone, a session table migrated with --table is not recognised (the
    # documented reason to use include_object or exclude for those).
    assert set(changes) & OURS == {"web_sessions"}
    assert changes["app_users"] == {"CreateTableOp"}


def test_include_object_leaves_a_look_alike_without_the_index_alone() -> None:
    from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text

    from sqlsession._table import session_table

    ours = session_table("custom_sessions")
    look_alike = Table(
        "kv",
        MetaData(),
        Column("key", String(10), primary_key=True),
        Column("value", Text()),
        Column("expires_at", BigInteger()),
    )
    assert include_object(ours, "custom_sessions", "table", True, None) is False
    assert include_object(look_alike, "kv", "table", True, None) is True
    # In the app's metadata too, or not a table: none of sqlsession's business.
    assert include_object(ours, "custom_sessions", "table", False, None) is True
    assert include_object(ours, "custom_sessions", "table", True, ours) is True
    assert include_object(ours.c.key, "key", "column", True, None) is True


def test_exclude_checks_its_names() -> None:
    with pytest.raises(ConfigError, match="plain SQL identifier"):
        exclude(tables=["bad-name"])
    with pytest.raises(TypeError, match="list of table names"):
        exclude(tables="web_sessions")
    hide = exclude(tables=["web_sessions"])
    assert hide("web_sessions", "table", {}) is False
    assert hide("web_sessions_alembic_version", "table", {}) is False
    assert hide("sqlsession", "table", {}) is True  # only the tables named
    assert hide("web_sessions", "column", {}) is True
