"""Database errors in sqlsession's error tree, for the driver and the migration runner alike.

A dialect says what an error of its database driver means (`SQLDialect.classify`);
this module words it, with the URL already redacted by the caller.
"""

from __future__ import annotations

from ..._dist import DISTRIBUTION
from ...errors import (
    ConfigError,
    DatabaseUnavailableError,
    OperationTimeoutError,
    ReadOnlyDatabaseError,
    SchemaError,
    SessionError,
    StorageError,
)
from .dialects import ErrorKind, SQLDialect

__all__ = [
    "DatabaseCause",
    "describe",
    "first_line",
    "missing_driver",
    "timed_out",
    "told",
    "translate",
    "unavailable",
]


def first_line(exc: BaseException) -> str:
    """The first line of an error's text, without asyncpg's class prefix or a final dot."""
    text = str(exc).strip()
    # asyncpg errors, as SQLAlchemy adapts them, read "<class '...'>: message".
    if text.startswith("<class '") and "'>: " in text:
        text = text.split("'>: ", 1)[1]
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


class DatabaseCause(Exception):
    """What the database driver raised, told without what can quote a session's row.

    The ``__cause__`` of the driver's errors: the error types, the first line of the
    server's message and the statement, with the original frames. Left out are the
    statement's parameters and the rest of the server's message, such as PostgreSQL's
    DETAIL ("Failing row contains (...)"). The original error stays reachable as the
    sqlsession error's ``__context__``, which tracebacks do not print.
    """


def told(exc: BaseException) -> DatabaseCause:
    """The `DatabaseCause` for `exc`, an error of SQLAlchemy or the database driver."""
    orig: BaseException = getattr(exc, "orig", None) or exc
    kinds = dict.fromkeys(f"{type(e).__module__}.{type(e).__qualname__}" for e in (exc, orig))
    text = f"({' / '.join(kinds)}) {first_line(orig)}"
    statement = getattr(exc, "statement", None)
    if statement:
        text += f"\n[SQL: {statement}]"
    return DatabaseCause(text).with_traceback(exc.__traceback__)


def describe(exc: BaseException, dialect: type[SQLDialect]) -> tuple[ErrorKind | None, str]:
    """What `exc` (from SQLAlchemy or the database driver) means, and its server message."""
    orig: BaseException = getattr(exc, "orig", None) or exc
    kind = dialect.classify(orig)
    if kind is None and isinstance(orig, TimeoutError):
        # asyncpg's and asyncmy's connect timeouts (a TimeoutError is also an OSError).
        kind = ErrorKind.TIMEOUT
    elif kind is None and isinstance(orig, OSError):
        kind = ErrorKind.UNAVAILABLE
    if isinstance(orig, ConnectionRefusedError):
        # "[Errno 111] Connect call failed" says less than it knows.
        return kind, f"connection refused, nothing listens there ({first_line(orig)})"
    return kind, first_line(orig)


def translate(
    exc: BaseException, dialect: type[SQLDialect], *, url: str, missing_table: str
) -> SessionError:
    """The sqlsession error for a database error.

    Args:
        exc: what SQLAlchemy or the database driver raised.
        dialect: the database's dialect.
        url: the database URL, redacted.
        missing_table: the message of the `SchemaError` for a missing table.
    """
    kind, message = describe(exc, dialect)
    if kind is ErrorKind.MISSING_TABLE:
        return SchemaError(missing_table)
    if kind is ErrorKind.FILE_GONE:
        return SchemaError(f"{message}. {missing_table}")
    if kind in (ErrorKind.UNAVAILABLE, ErrorKind.LOST):
        return unavailable(url, message, dialect.unavailable_advice(url))
    if kind is ErrorKind.TIMEOUT:
        return timed_out(url, message)
    if kind is ErrorKind.READ_ONLY:
        return ReadOnlyDatabaseError(
            f"The session database {url} is read-only ({message}): a hot standby, or a "
            "primary demoted by a failover. Nothing was written. Point the URL at the "
            "primary, or list every host with ?target_session_attrs=read-write."
        )
    if kind is ErrorKind.LOCK_TIMEOUT:
        return StorageError(
            f"The session database {url} gave up waiting for a lock that another "
            f"connection holds: {message}"
        )
    if kind is ErrorKind.CONFLICT:
        return StorageError(
            f"The session database {url} rolled the operation back twice to resolve a "
            f"deadlock: {message}"
        )
    return StorageError(f"The session database {url} failed: {message}")


def unavailable(url: str, message: str, advice: str | None = None) -> DatabaseUnavailableError:
    """The error for a server that refused, dropped or never answered the connection.

    Args:
        url: the database URL, redacted.
        message: the database's own reason.
        advice: what to check (the dialect's `SQLDialect.unavailable_advice`).
    """
    if advice is None:
        advice = "Check the URL, that the server is running, and the credentials."
    return DatabaseUnavailableError(f"Cannot reach the database {url}: {message}. {advice}")


def timed_out(url: str, message: str) -> OperationTimeoutError:
    """The error for a connect or statement that outlived its timeout."""
    if message == "TimeoutError":
        message = "no connection within connect_timeout"
    return OperationTimeoutError(
        f"The session database {url} timed out: {message}. The operation was not run "
        "again; raise connect_timeout or statement_timeout if the server is only slow."
    )


def missing_driver(exc: ModuleNotFoundError, dialect: type[SQLDialect]) -> ConfigError:
    """The error for a database driver package that is not installed."""
    return ConfigError(
        f"{dialect.title} needs the {exc.name} package: "
        f"pip install '{DISTRIBUTION}[{dialect.extra}]'."
    )
