"""`merge_existing` as one UPDATE (and `merge_item` as one upsert): the database applies
the changes to the stored JSON.

The general merge (`SQLDialect.locked_row`) is a transaction of four round trips: BEGIN,
a locking read, the UPDATE of the merged dict, COMMIT. Here the UPDATE itself removes
and sets the dict's members, with the database's own JSON functions, on the row version
it locks, so two merges of different members of one item both persist without a
transaction, and a merge never creates a row (an UPDATE only changes one that is there
and live). Each new member's text goes in as the caller encoded it; the database parses
it (which validates it) but Python never decodes it. `merge_item`, which starts an
absent or expired item from an empty dict, is the same merge in an ``INSERT ... ON
CONFLICT DO UPDATE`` on PostgreSQL and SQLite (MariaDB has no upsert that returns the
row: there it is the locked merge).

A statement applies only when the row's value is a JSON object the database can hold;
otherwise it changes no row or fails with a JSON error (absent, expired, not a dict, too
deep for MariaDB, invalid JSON: the dialect's `refuses_json` tells those errors), and
the driver then finds out why through the general path, which raises the precise error
or reports the item absent. What each database keeps of the stored text:
PostgreSQL and SQLite keep every member's text as it is (PostgreSQL through ``json``, not
``jsonb``, which would turn ``1e+20`` into an integer); MariaDB reformats the spacing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = ["MergeStatement", "MySQLMerge", "PostgresMerge", "SQLiteMerge", "safe_path_name"]

# Statement texts kept per shape (members set, members deleted, RETURNING): a session
# changes few members per request, so a few dozen shapes cover an app.
_SHAPES_MAX = 64
# What a member name may hold to be written into a quoted JSON path ("$."name""): SQLite
# and MariaDB read the quoted name up to the next quote and take no escapes, so a name
# with a quote or backslash (or a control character) goes through the general merge.
_UNSAFE_IN_PATH = frozenset('"\\') | frozenset(chr(c) for c in range(0x20))


def safe_path_name(name: str) -> bool:
    """Whether `name` can be written as ``"name"`` in a SQLite or MariaDB JSON path."""
    return _UNSAFE_IN_PATH.isdisjoint(name)


class MergeStatement:
    """Builds the UPDATE that merges one item, for one database's fast path.

    Args:
        table: the session table's name, quoted (and schema-qualified) for the database.
    """

    returns_rows: ClassVar[bool] = True
    """Whether `build` can make statements with ``returning`` (and ``create``)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self._shapes: dict[tuple[int, int, bool, bool], str] = {}

    def build(
        self,
        key: str,
        texts: Mapping[str, str],
        delete: Sequence[str],
        exp: int | None,
        now: int,
        *,
        returning: bool,
        create: bool = False,
    ) -> tuple[str, list[Any]] | None:
        """The SQL text and its arguments, or None when this merge needs the general path.

        The statement changes one row exactly when the live item `key` holds a JSON
        object (the row's count says so; or it fails with an error the dialect's
        `refuses_json` knows); with `returning` it returns the new value.

        Args:
            key: the session key.
            texts: member names and the JSON text of their new values.
            delete: member names to remove (before `texts` are set).
            exp: the item's new expiry in ms (None: never).
            now: the current time in ms (what is live).
            returning: whether the statement returns the merged value.
            create: ``merge_item``: an absent or expired item starts from an empty
                dict (an upsert, with `returning`); the statement then changes no row
                (or fails) only when the live value is not a dict.
        """
        raise NotImplementedError

    def _shape(self, shape: tuple[int, int, bool, bool]) -> str:
        sql = self._shapes.get(shape)
        if sql is None:
            if len(self._shapes) >= _SHAPES_MAX:
                # The oldest shape goes first; the dict keeps insertion order.
                del self._shapes[next(iter(self._shapes))]
            sql = self._shapes[shape] = self._text(*shape)
        return sql

    def _text(self, sets: int, deletes: int, returning: bool, create: bool) -> str:
        raise NotImplementedError


_EMPTY = "'{}'"  # the SQL literal of an empty JSON object


class PostgresMerge(MergeStatement):
    """PostgreSQL: one statement text for every shape (the members travel as arrays).

    The stored text is read as ``json`` (which keeps each member's text as written) and
    rebuilt member by member: kept members in their place, replaced ones in their place
    with the new text, new ones after them. The new texts arrive as ``json[]``, which
    validates them. A stored value that is not an object (``json_each`` raises), or a
    member name holding U+0000 (which PostgreSQL's text cannot hold), goes through the
    general path.
    """

    def build(
        self,
        key: str,
        texts: Mapping[str, str],
        delete: Sequence[str],
        exp: int | None,
        now: int,
        *,
        returning: bool,
        create: bool = False,
    ) -> tuple[str, list[Any]] | None:
        names = list(texts)
        if any("\x00" in name for name in (*names, *delete)):
            return None
        args = [key, names, list(texts.values()), list(delete), exp, now]
        return self._shape((0, 0, returning, create)), args

    @staticmethod
    def _merged(base: str) -> str:
        """The merged object's text, from the stored text `base` (an SQL expression)."""
        # FULL JOIN: a stored member that is kept (j only), replaced (both) or new (s only).
        # json_each raises (class 22) on a stored value that is not an object.
        members = (
            "SELECT COALESCE(j.k, s.k) AS k, COALESCE(s.v::text, j.v::text) AS v, "
            "COALESCE(j.o, 1e18 + s.o) AS o "
            f"FROM (SELECT * FROM json_each(({base})::json) WITH ORDINALITY AS e(k, v, o) "
            "WHERE e.k <> ALL($4::text[])) AS j "
            "FULL JOIN unnest($2::text[], $3::json[]) WITH ORDINALITY AS s(k, v, o) "
            "ON s.k = j.k"
        )
        return (
            "(SELECT COALESCE('{' || string_agg(to_json(m.k)::text || ':' || m.v, ',' "
            f"ORDER BY m.o) || '}}', '{{}}') FROM ({members}) AS m)"
        )

    def _text(self, sets: int, deletes: int, returning: bool, create: bool) -> str:
        t = self.table
        if create:
            # An expired row is replaced by the new one; CASE reads a live one only.
            live = "(cur.expires_at IS NULL OR cur.expires_at > $6::bigint)"
            return (
                f"INSERT INTO {t} AS cur (key, value, expires_at) VALUES "
                f"($1::text, {self._merged(_EMPTY)}, $5::bigint) "
                f"ON CONFLICT (key) DO UPDATE SET value = CASE WHEN {live} "
                f"THEN {self._merged('cur.value')} ELSE EXCLUDED.value END, "
                "expires_at = EXCLUDED.expires_at RETURNING value"
            )
        sql = (
            f"UPDATE {t} SET value = {self._merged(f'{t}.value')}, expires_at = $5::bigint "
            "WHERE key = $1::text AND (expires_at IS NULL OR expires_at > $6::bigint)"
        )
        return sql + (" RETURNING value" if returning else "")


class SQLiteMerge(MergeStatement):
    """SQLite: ``json_set(json_remove(value, ...), ...)``, one text per shape.

    ``json_set`` takes a value wrapped in ``json()`` as JSON rather than as a string, and
    keeps every other member's text.
    """

    def build(
        self,
        key: str,
        texts: Mapping[str, str],
        delete: Sequence[str],
        exp: int | None,
        now: int,
        *,
        returning: bool,
        create: bool = False,
    ) -> tuple[str, list[Any]] | None:
        if not all(safe_path_name(name) for name in (*texts, *delete)):
            return None
        pairs: list[Any] = []
        for name, text in texts.items():
            pairs += (f'$."{name}"', text)
        paths = [f'$."{name}"' for name in delete]
        if create:
            args = [key, *pairs, exp, now, *paths, *pairs, now]
        else:
            args = [*paths, *pairs, exp, key, now]
        return self._shape((len(texts), len(delete), returning, create)), args

    def _text(self, sets: int, deletes: int, returning: bool, create: bool) -> str:
        value = "value"
        if deletes:
            value = f"json_remove({value}{', ?' * deletes})"
        if sets:
            value = f"json_set({value}{', ?, json(?)' * sets})"
        if create:
            new = f"json_set('{{}}'{', ?, json(?)' * sets})" if sets else "'{}'"
            live = "(expires_at IS NULL OR expires_at > ?)"
            # In DO UPDATE a bare column is the stored row's, excluded.* the new row's.
            return (
                f"INSERT INTO {self.table} (key, value, expires_at) VALUES (?, {new}, ?) "
                f"ON CONFLICT (key) DO UPDATE SET value = CASE WHEN {live} THEN {value} "
                "ELSE excluded.value END, expires_at = excluded.expires_at "
                "WHERE NOT (expires_at IS NULL OR expires_at > ?) "
                "OR json_type(value) = 'object' RETURNING value"
            )
        sql = (
            f"UPDATE {self.table} SET value = {value}, expires_at = ? WHERE key = ? "
            "AND (expires_at IS NULL OR expires_at > ?) AND json_type(value) = 'object'"
        )
        return sql + (" RETURNING value" if returning else "")


# MariaDB's JSON functions give up (NULL) on documents nested 32 deep or more; the
# statement leaves those to the general merge.
_MARIADB_DEPTH = 32


class MySQLMerge(MergeStatement):
    """MariaDB and MySQL: ``JSON_SET(JSON_REMOVE(value, ...), ...)``, one text per shape.

    No ``JSON_MERGE_PATCH``: it would drop members whose new value is null and merge
    nested objects instead of replacing them. A text goes in through ``JSON_EXTRACT(text,
    '$')``, which is JSON to ``JSON_SET``; as MariaDB returns NULL (and warns) where its
    JSON functions fail, every new text must have a ``JSON_DEPTH`` (which it has not
    when it is invalid or too deep) and the stored value must be an object MariaDB can
    read, or the statement changes nothing. No ``RETURNING``: MariaDB's UPDATE has none.
    """

    returns_rows = False

    def build(
        self,
        key: str,
        texts: Mapping[str, str],
        delete: Sequence[str],
        exp: int | None,
        now: int,
        *,
        returning: bool,
        create: bool = False,
    ) -> tuple[str, list[Any]] | None:
        if returning or create or not all(safe_path_name(n) for n in (*texts, *delete)):
            return None
        args: list[Any] = [f'$."{name}"' for name in delete]
        for name, text in texts.items():
            args += (f'$."{name}"', text)
        args += (exp, key, now, *texts.values())
        return self._shape((len(texts), len(delete), False, False)), args

    def _text(self, sets: int, deletes: int, returning: bool, create: bool) -> str:
        value = "value"
        if deletes:
            value = f"JSON_REMOVE({value}{', %s' * deletes})"
        if sets:
            pairs = ", %s, JSON_EXTRACT(%s, '$')" * sets
            value = f"JSON_SET({value}{pairs})"
        # A member one level down: its own depth must stay below the limit by one more.
        valid = f" AND JSON_DEPTH(%s) < {_MARIADB_DEPTH - 1}" * sets
        return (
            f"UPDATE {self.table} SET value = {value}, expires_at = %s WHERE `key` = %s "
            f"AND (expires_at IS NULL OR expires_at > %s) AND JSON_TYPE(value) = 'OBJECT'"
            f"{valid}"
        )
