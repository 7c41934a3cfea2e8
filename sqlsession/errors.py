"""The error tree: everything sqlsession raises on purpose derives from `SessionError`.

Errors about a bad argument also derive from the built-in a caller would expect
(`ValueError` for a bad key or ttl, `TypeError` for a value that is not JSON), so
`except ValueError` keeps working in code that does not know about sqlsession.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConflictError",
    "CorruptValueError",
    "DatabaseUnavailableError",
    "DriverLoadError",
    "InvalidKeyError",
    "InvalidLabelError",
    "InvalidTTLError",
    "OperationTimeoutError",
    "ReadOnlyDatabaseError",
    "SchemaError",
    "SessionError",
    "SessionTooLargeError",
    "StorageError",
    "ValueNotSerializableError",
]


class SessionError(Exception):
    """Base class of every error sqlsession raises on purpose."""


class ConfigError(SessionError, ValueError):
    """A driver configuration is invalid (bad URL, table name, option or JSON config)."""


class DriverLoadError(SessionError):
    """`load_driver` could not turn a `SessionDriverConfig` into a driver.

    The message names the entrypoint and what was tried; the original error is the
    ``__cause__``.
    """


class InvalidKeyError(SessionError, ValueError):
    """A session key is not a non-empty string of at most 255 characters without NUL."""


class InvalidTTLError(SessionError, ValueError):
    """A ttl is not None or a number of seconds from 0.001 to 100 years."""


class InvalidLabelError(SessionError, ValueError):
    """A session label passed to ``end_session`` is not one ``user_sessions`` hands out."""


class SessionTooLargeError(SessionError, ValueError):
    """A session would grow past its ``max_size``; nothing was changed.

    Raised by the assignment that would make it too large, so the app can answer
    413 (Content Too Large) or refuse the input; the message names the key and the
    sizes, never the value.
    """


class ValueNotSerializableError(SessionError, TypeError):
    """A value cannot be stored as JSON and come back equal with the same Python types."""


class StorageError(SessionError):
    """The database refused or failed an operation."""


class ConflictError(StorageError):
    """Writes on other connections or cluster nodes kept rolling an operation back.

    A deadlock, or on MariaDB Galera a certification failure, each retried a few times
    before this is raised; nothing of the operation was written.
    """


class DatabaseUnavailableError(StorageError):
    """The database cannot be reached or will not serve now.

    A wrong host, port, credentials, database name or file path, or a server that is
    starting up, shutting down, out of connection slots or not accepting connections.
    The message carries the server's own reason. Transient ones pass by waiting (a web
    app answers 503).
    """


class ReadOnlyDatabaseError(DatabaseUnavailableError):
    """A write reached a server that only reads (a hot standby, or a read-only database).

    During a failover the old primary's connections are gone and the URL may still name
    a standby; a multi-host URL with ``target_session_attrs=read-write`` finds the new
    primary. Nothing was written.
    """


class OperationTimeoutError(StorageError):
    """The database did not answer within ``connect_timeout`` or ``statement_timeout``.

    Never retried, so an operation never takes more than its timeout (plus one connect).
    A statement that timed out was rolled back.
    """


class SchemaError(StorageError):
    """The session table is missing or not at the migration the driver expects.

    Run ``sqlsession migrate`` (or ``alembic upgrade head``) against the same URL.
    """


class CorruptValueError(StorageError):
    """A stored value is not JSON that sqlsession could have written.

    Invalid JSON text, JSON nested deeper than Python's decoder can follow, ``NaN`` or
    ``Infinity``, or an int longer than Python's int/str conversion limit: something
    other than sqlsession wrote the row, or it was damaged. The message names the key,
    never the value; `remove_item` or `set_item` on that key replaces the item.
    """
