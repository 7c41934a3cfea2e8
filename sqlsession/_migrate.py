"""Run sqlsession's alembic migrations from code, with no alembic.ini of the user's.

The scripts are found next to the package (``sqlsession/_migrations``, where the wheel
puts them) or, in a source checkout, in ``migrations/`` at the repository root. Each
session table has its own version table, ``<table>_alembic_version``.

These functions are synchronous. alembic's env.py runs the async driver with
`asyncio.run`, so when the calling thread already runs an event loop the migration
runs in a worker thread (and blocks the caller until it is done).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from ._dist import DISTRIBUTION
from ._url import describe_table, dialect_name, redact_url, resolve_url
from ._validate import check_identifier
from .drivers.sql import _errors
from .drivers.sql.dialects import ErrorKind, SQLDialect, dialect_class
from .errors import (
    ConfigError,
    DatabaseUnavailableError,
    SchemaError,
    SessionError,
    StorageError,
)

__all__ = [
    "alembic_ini",
    "current",
    "downgrade",
    "script_location",
    "translate_error",
    "upgrade",
]

T = TypeVar("T")
DEFAULT_TABLE = "sqlsession"
_PACKAGE = Path(__file__).resolve().parent


def script_location() -> Path:
    """The directory holding env.py and versions/.

    Returns:
        ``sqlsession/_migrations`` in an installed wheel, else ``migrations/`` of the
        source checkout this package was imported from.

    Raises:
        ConfigError: neither exists (a broken install).
    """
    for candidate in (_PACKAGE / "_migrations", _PACKAGE.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigError(
        f"sqlsession's migration scripts are missing (looked in {_PACKAGE / '_migrations'} "
        f"and {_PACKAGE.parent / 'migrations'}); reinstall {DISTRIBUTION}."
    )


def alembic_ini() -> Path:
    """The alembic.ini that runs these scripts, for ``alembic -c`` and ``sqlsession alembic``.

    Returns:
        ``sqlsession/alembic.ini`` in an installed wheel (``script_location =
        sqlsession:_migrations``), else the ``alembic.ini`` at the root of the source
        checkout (``%(here)s/migrations``).

    Raises:
        ConfigError: neither exists (a broken install).
    """
    scripts = script_location()
    ini = _PACKAGE / "alembic.ini" if scripts.parent == _PACKAGE else scripts.parent / "alembic.ini"
    if not ini.is_file():
        raise ConfigError(f"sqlsession's alembic.ini is missing ({ini}); reinstall {DISTRIBUTION}.")
    return ini


def upgrade(
    url: str | None = None,
    *,
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
    revision: str = "head",
) -> None:
    """Migrate the session table `table` up to `revision`, creating it if needed.

    Args:
        url: the database URL; None means ``$SQLSESSION_URL``, else
            ``sqlite:///sqlsession.db``.
        table: the session table.
        schema: its PostgreSQL schema (None: the search path); it must exist.
        revision: the target revision (``"head"``: the latest).

    Raises:
        ConfigError: the URL, table, schema or revision is invalid.
        DatabaseUnavailableError: the database cannot be reached or opened.
        SchemaError: the database holds a revision this sqlsession does not know, or a
            table of that name that the migration did not create.
        StorageError: the database refused the migration.
    """
    full_url, config = _prepare(url, table, schema)
    _check_revision(config, revision)
    _call(lambda: command.upgrade(config, revision), full_url, table, schema)


def downgrade(
    url: str | None = None,
    *,
    revision: str,
    table: str = DEFAULT_TABLE,
    schema: str | None = None,
) -> None:
    """Migrate the session table `table` down to `revision` (``"base"`` drops it).

    Args:
        url: the database URL, as for `upgrade`.
        revision: the target revision; ``"base"`` removes the table and its data.
        table: the session table.
        schema: its PostgreSQL schema (None: the search path).

    Raises:
        ConfigError, DatabaseUnavailableError, SchemaError, StorageError: as for
            `upgrade`.
    """
    full_url, config = _prepare(url, table, schema)
    _check_revision(config, revision)
    _call(lambda: command.downgrade(config, revision), full_url, table, schema)


def current(
    url: str | None = None, *, table: str = DEFAULT_TABLE, schema: str | None = None
) -> str | None:
    """Return the revision the session table `table` is at.

    Args:
        url: the database URL, as for `upgrade`.
        table: the session table.
        schema: its PostgreSQL schema (None: the search path).

    Returns:
        The revision id, or None when the table was never migrated (a SQLite file that
        does not exist is not created).

    Raises:
        ConfigError, DatabaseUnavailableError, StorageError: as for `upgrade`.
    """
    full_url, config = _prepare(url, table, schema)
    database = dialect_class(dialect_name(full_url)).database_file(full_url)
    if database is not None and not os.path.exists(database):
        return None
    script = ScriptDirectory.from_config(config)
    found: list[str] = []

    def read(heads: Any, _context: Any) -> list[Any]:
        found.extend(heads)
        return []

    def run() -> None:
        with EnvironmentContext(config, script, fn=read, dont_mutate=True):
            script.run_env()

    _call(run, full_url, table, schema)
    return found[0] if found else None


def _prepare(url: str | None, table: str, schema: str | None) -> tuple[str, Config]:
    full_url = resolve_url(url)
    dialect = dialect_class(dialect_name(full_url))
    check_identifier(table, what="table")
    if schema is not None:
        check_identifier(schema, what="schema")
        if not dialect.supports_schema:
            raise ConfigError(f"--schema is a PostgreSQL option; {dialect.title} has none.")
    database = dialect.database_file(full_url)
    if database is not None:
        folder = os.path.dirname(os.path.abspath(database))
        if not os.path.isdir(folder):
            raise DatabaseUnavailableError(
                f"Cannot create the SQLite database {database!r}: the directory {folder!r} "
                "does not exist. Create it first, or use another path."
            )
    config = Config()
    config.attributes.update(sqlsession_table=table, sqlsession_schema=schema)
    # Config options go through configparser interpolation: a literal % is written %%.
    config.set_main_option("script_location", str(script_location()).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", full_url.replace("%", "%%"))
    return full_url, config


def _check_revision(config: Config, revision: str) -> None:
    """Refuse an unknown target before connecting; relative ones (-1, +1) pass."""
    if revision[:1] in ("+", "-") or revision in ("head", "heads", "base"):
        return
    script = ScriptDirectory.from_config(config)
    try:
        found = script.get_revisions(revision)
    except Exception as exc:  # alembic raises several unrelated types here
        found = ()
        cause: BaseException | None = exc
    else:
        cause = None
    if not found or ":" in revision:
        known = ", ".join(["head", "base", *sorted(r.revision for r in script.walk_revisions())])
        raise ConfigError(f"Unknown migration revision {revision!r}; known: {known}.") from cause


def _call(work: Callable[[], T], full_url: str, table: str, schema: str | None) -> T:
    """Run `work` where `asyncio.run` is allowed, translating failures to our errors."""
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return work()
        with ThreadPoolExecutor(1, thread_name_prefix="sqlsession-migrate") as pool:
            return pool.submit(work).result()
    except SessionError:
        raise
    except Exception as exc:
        raise translate_error(exc, full_url, table, schema) from exc


def translate_error(exc: Exception, full_url: str, table: str, schema: str | None) -> SessionError:
    """Map an error from alembic, SQLAlchemy or a database driver to ours."""
    url = redact_url(full_url)
    where = describe_table(full_url, table, schema)
    dialect: type[SQLDialect] = dialect_class(dialect_name(full_url))
    if isinstance(exc, ModuleNotFoundError) and exc.name == dialect.driver_package:
        return _errors.missing_driver(exc, dialect)
    if isinstance(exc, ArgumentError | NoSuchModuleError):
        return ConfigError(f"Invalid database URL {url!r}: {_errors.first_line(exc)}.")
    if isinstance(exc, CommandError):
        if "locate revision" in str(exc):
            return SchemaError(
                f"The session table {where} is at a migration this sqlsession does not "
                f"know ({_errors.first_line(exc)}); a newer sqlsession migrated it, so "
                "upgrade sqlsession."
            )
        return ConfigError(f"Cannot migrate the session table {where}: {_errors.first_line(exc)}.")
    kind, message = _errors.describe(exc, dialect)
    if kind in (ErrorKind.UNAVAILABLE, ErrorKind.LOST):
        return _errors.unavailable(url, message, dialect.unavailable_advice(url))
    if kind is ErrorKind.ALREADY_EXISTS:
        return SchemaError(
            f"Cannot create the session table {where}: {message}. A table of that name "
            "exists but was not created by sqlsession migrate (it has no version table "
            f"'{table}_alembic_version'); choose another --table or drop it."
        )
    if kind is ErrorKind.MISSING_SCHEMA:
        return SchemaError(
            f"Cannot migrate the session table {where}: {message}. Create the schema "
            f"first (CREATE SCHEMA {schema}) or leave out --schema."
        )
    if isinstance(exc, DBAPIError | SQLAlchemyError):
        return StorageError(f"Migrating the session table {where} failed: {message}")
    return StorageError(
        f"Migrating the session table {where} failed: {type(exc).__name__}: {message}"
    )
