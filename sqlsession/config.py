"""The config half of a driver: cheap, JSON-serializable, free of storage clients.

Nothing here imports SQLAlchemy, asyncpg or aiosqlite, so building a configuration
costs nothing and the result can be written to a file or handed to another process.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _validate
from ._sql_options import SQLOptions
from ._url import redact_config
from .errors import ConfigError

__all__ = ["SessionDriverConfig", "session_drivers"]


@dataclass(frozen=True, repr=False)
class SessionDriverConfig:
    """Where a driver's runtime lives and the plain options it is built with.

    The entrypoint is code: `load_driver` imports or runs what it names. Treat a config
    as trusted input, and load one from a place you do not control with
    ``load_driver(cfg, trusted=False)``, which accepts only registered driver names.
    The repr hides passwords (in URLs, and options named like ``password`` or
    ``token``).

    Args:
        entrypoint: a module path (``"sqlsession.drivers.sql"``), ``"module:attribute"``,
            a file path (``str`` or ``os.PathLike``) or ``file://`` URL, or a name
            registered in the entry-point group ``sqlsession.drivers``.
        config: JSON-serializable options passed to the factory as a dict.

    Raises:
        ConfigError: the entrypoint is not a string or path, or the config is not a
            JSON object (a dict with str keys and JSON values).
    """

    entrypoint: str | os.PathLike[str]
    config: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.entrypoint, str | os.PathLike) or not os.fspath(self.entrypoint):
            raise ConfigError(
                "SessionDriverConfig.entrypoint must be a non-empty module path, file path "
                f"or registered driver name, got {self.entrypoint!r}."
            )
        if self.config is None:
            return
        if not isinstance(self.config, dict):
            raise ConfigError(
                f"SessionDriverConfig.config must be a dict or None, got "
                f"{type(self.config).__name__}."
            )
        try:
            text = json.dumps(self.config, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"SessionDriverConfig.config for {self.entrypoint!r} must be "
                f"JSON-serializable: {exc}."
            ) from exc
        # Keep a private copy, so mutating the caller's dict later changes nothing here.
        object.__setattr__(self, "config", json.loads(text))

    def __repr__(self) -> str:
        # Reprs end up in logs and tracebacks: URLs without their passwords, and no
        # option whose name says it is a secret.
        return (
            f"SessionDriverConfig(entrypoint={self.entrypoint!r}, "
            f"config={redact_config(self.config)!r})"
        )


class _SessionDrivers:
    """Factories for the built-in drivers' configurations (``session_drivers.sql(...)``)."""

    def sql(
        self,
        url: str | None = None,
        *,
        table: str = "sqlsession",
        schema: str | None = None,
        ttl: float | None = None,
        pool_size: int | None = None,
        durability: Literal["full", "relaxed"] = "full",
        cleanup_interval: float | None = None,
        cleanup_batch_size: int | None = None,
        connect_timeout: float | None = None,
        statement_timeout: float | None = None,
        prepared_statements: bool | None = None,
    ) -> SessionDriverConfig:
        """Configure the SQL driver.

        Args:
            url: ``sqlite:///path.db``, ``postgresql://user@host/db`` or
                ``mysql://user@host/db`` (also ``postgres://``, ``mariadb://`` and the
                ``+aiosqlite``, ``+asyncpg``, ``+asyncmy`` forms). None means
                ``$SQLSESSION_URL`` when the driver is loaded, else ``sqlsession.db`` in the
                working directory.
            table: the session table's name; run ``sqlsession migrate --table NAME``.
            schema: the PostgreSQL schema of the table (None: the search path).
            ttl: default lifetime of an item in seconds (None: no expiry).
            pool_size: connections kept open; None: 16 on PostgreSQL and MySQL (plus as
                many overflow connections), 4 on SQLite (which has one writer at a time,
                and whose connections each cost a thread).
            durability: ``"relaxed"`` commits writes with ``synchronous_commit = off`` on
                PostgreSQL: a crash may lose the last few hundred milliseconds of
                session writes, never corrupt them. No effect on SQLite.
            cleanup_interval: seconds between in-process cleanups of expired rows
                (None: off; schedule ``sqlsession cleanup`` instead).
            cleanup_batch_size: rows deleted per cleanup statement; None: 5000 on
                PostgreSQL and MySQL, 500 on SQLite, where a batch holds the only write
                lock.
            connect_timeout: seconds to wait for a new server connection (None: the URL's
                ``connect_timeout``, else 5); `OperationTimeoutError` after.
            statement_timeout: seconds PostgreSQL lets a statement run, lock waits
                included (None: the URL's ``statement_timeout``, else no limit).
            prepared_statements: PostgreSQL only; False behind a pooler in transaction
                mode (pgbouncer), as ``?statement_cache_size=0`` in the URL says too.
                None: on until the server first loses one, then off.

        Raises:
            ConfigError, InvalidTTLError: an option is invalid.
        """
        options = SQLOptions(
            url=url,
            table=table,
            schema=schema,
            ttl=ttl,
            pool_size=pool_size,
            durability=durability,
            cleanup_interval=cleanup_interval,
            cleanup_batch_size=cleanup_batch_size,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            prepared_statements=prepared_statements,
        )
        return SessionDriverConfig(entrypoint="sqlsession.drivers.sql", config=options.as_config())

    def memory(self, max: int = 500, *, ttl: float | None = None) -> SessionDriverConfig:
        """Configure the in-process LRU driver, for tests and development.

        Args:
            max: the most items kept; the least recently used goes first.
            ttl: default lifetime of an item in seconds (None: no expiry).

        Raises:
            ConfigError, InvalidTTLError: an option is invalid.
        """
        _validate.check_positive_int(max, what="max")
        _validate.check_ttl(ttl)
        return SessionDriverConfig(
            entrypoint="sqlsession.drivers.memory", config={"max": max, "ttl": ttl}
        )


session_drivers = _SessionDrivers()
