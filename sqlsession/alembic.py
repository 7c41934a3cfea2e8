"""Keep sqlsession's tables out of your application's alembic autogenerate.

Your models do not declare sqlsession's tables, so ``alembic revision --autogenerate``
in your project would write ``op.drop_table("sqlsession")`` and
``op.drop_table("sqlsession_alembic_version")``. Pass a filter from here to
``context.configure`` in your ``env.py``::

    from sqlsession.alembic import include_object

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
    )

Three filters, pick one:

- `include_object` recognises sqlsession's tables whatever their name (``--table``): a
  session table by its layout (the columns ``key``, ``value`` and ``expires_at`` and the
  index ``<table>_expires_at_idx``), a version table by its name, ``*_alembic_version``.
- `include_name` decides by name alone, before anything is reflected: the default
  table ``sqlsession`` and every ``*_alembic_version`` table.
- `exclude` builds an ``include_name`` filter for the session tables you name (for
  tables migrated with ``--table``), plus every ``*_alembic_version`` table.

A ``*_alembic_version`` table is another alembic history's bookkeeping (sqlsession's,
or any other tool's that names its version table that way), never one of your models,
so every filter here hides it. Your own filter still works beside one of these:
``include_object=lambda *a: include_object(*a) and mine(*a)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._table import session_table, version_table_name
from ._validate import check_identifier

__all__ = ["IncludeName", "exclude", "include_name", "include_object"]

IncludeName = Callable[[str | None, str, Any], bool]
"""The signature of alembic's ``include_name`` hook: name, type, parent names."""

DEFAULT_TABLE = "sqlsession"
_VERSION_SUFFIX = version_table_name("")
# What every session table has, whatever its name; derived from the driver's own table
# so that the two cannot drift apart.
_SESSION_COLUMNS = frozenset(session_table("t").columns.keys())


def _is_version_table(name: str) -> bool:
    return name.endswith(_VERSION_SUFFIX) and name != _VERSION_SUFFIX


def _is_session_table(table: Any) -> bool:
    """Whether a reflected table has the layout of a sqlsession session table."""
    columns = {column.name for column in getattr(table, "columns", ())}
    indexes = {index.name for index in getattr(table, "indexes", ())}
    expiry_index = next(iter(session_table(table.name).indexes)).name
    return columns >= _SESSION_COLUMNS and expiry_index in indexes


def include_object(
    item: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """alembic's ``include_object`` hook: False for sqlsession's tables.

    Args:
        item: the SQLAlchemy schema item alembic compares.
        name: its name.
        type_: ``"table"``, ``"column"``, ``"index"``, ...
        reflected: whether it was found in the database (not in your metadata).
        compare_to: the item it is compared with (None: it exists on one side only).

    Returns:
        False for a table that exists only in the database and is a sqlsession session
        table (by layout) or a ``*_alembic_version`` table; True for everything else.
    """
    if type_ != "table" or not reflected or compare_to is not None or name is None:
        return True
    return not (_is_version_table(name) or _is_session_table(item))


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """alembic's ``include_name`` hook: False for ``sqlsession`` and ``*_alembic_version``.

    Decides by name alone, before alembic reflects a table. For session tables migrated
    under other names (``--table``), use `include_object` or `exclude`.

    Args:
        name: the name of the table (or schema, column, index...).
        type_: ``"table"``, ``"schema"``, ``"column"``, ...
        parent_names: alembic's mapping of the enclosing schema and table names.

    Returns:
        False for the table ``sqlsession`` and every ``*_alembic_version`` table.
    """
    return (
        type_ != "table" or name is None or not (name == DEFAULT_TABLE or _is_version_table(name))
    )


def exclude(tables: Iterable[str] = (DEFAULT_TABLE,)) -> IncludeName:
    """Build an ``include_name`` hook that hides the session tables `tables`.

    Args:
        tables: the session tables, as given to ``sqlsession migrate --table`` (their
            version tables are hidden with them, as is every ``*_alembic_version``).

    Returns:
        A function to pass as ``include_name=`` to ``context.configure``.

    Raises:
        ConfigError: a name is not a valid table name.
        TypeError: `tables` is a single string rather than a collection of names.
    """
    if isinstance(tables, str):
        raise TypeError(f"exclude(tables=...) takes a list of table names, e.g. [{tables!r}].")
    hidden = frozenset(check_identifier(table, what="table") for table in tables)

    def include(name: str | None, type_: str, parent_names: Any) -> bool:
        return type_ != "table" or name is None or not (name in hidden or _is_version_table(name))

    return include
