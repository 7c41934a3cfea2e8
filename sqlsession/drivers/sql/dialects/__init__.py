"""One module per database; `dialect_class` finds the one for a SQLAlchemy dialect name.

A new database is a module here named after SQLAlchemy's dialect name, defining
``Dialect`` (a `SQLDialect`), plus its line in the URL table (``sqlsession/_url.py``).
"""

from __future__ import annotations

import importlib

from ....errors import ConfigError
from ._base import CleanupJob, ErrorKind, SQLDialect, key_param

__all__ = ["CleanupJob", "ErrorKind", "SQLDialect", "dialect_class", "key_param"]


def dialect_class(name: str) -> type[SQLDialect]:
    """The dialect for SQLAlchemy's dialect `name` (``engine.dialect.name``).

    Raises:
        ConfigError: sqlsession has no module for that database.
    """
    if not name.isidentifier() or name.startswith("_"):
        raise ConfigError(f"The SQL driver does not support the database {name!r}.")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise ConfigError(
            f"The SQL driver supports SQLite, PostgreSQL and MySQL/MariaDB, not {name!r}."
        ) from None
    found: type[SQLDialect] = module.Dialect
    return found
