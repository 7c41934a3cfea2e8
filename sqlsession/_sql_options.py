"""The SQL driver's options, defined once for its config half, the driver and the CLI.

Light on purpose: the config half (`session_drivers.sql`) builds and checks these
without importing SQLAlchemy or a database driver.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from . import _validate
from ._url import normalize_url, redact_url, resolve_url, split_query
from .errors import ConfigError

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "SQLOptions"]

DEFAULT_CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a new connection when neither the options nor the URL say."""


@dataclass(frozen=True, repr=False)
class SQLOptions:
    """Every option of the SQL driver that fits in a JSON config, checked on construction.

    Args:
        url: the database URL (None: ``$SQLSESSION_URL`` when the driver is built,
            else ``sqlite:///sqlsession.db``).
        table: the session table's name.
        schema: the PostgreSQL schema of the table (None: the search path).
        ttl: default lifetime of an item in seconds (None: no expiry).
        pool_size: connections kept open (None: the database's default).
        durability: ``"relaxed"`` lets PostgreSQL acknowledge a commit before it is
            flushed to disk.
        cleanup_interval: seconds between in-process cleanups (None: off).
        cleanup_batch_size: rows deleted per cleanup statement (None: the database's
            default).
        connect_timeout: seconds to wait for a new connection (None: the URL's
            ``connect_timeout``, else 5). Server databases only.
        statement_timeout: seconds a statement, lock waits included, may run before the
            server cancels it (None: the URL's ``statement_timeout``, else no limit).
            PostgreSQL only.
        prepared_statements: False runs every statement unnamed, as a pooler in
            transaction mode (pgbouncer) needs; None: off when the URL has
            ``statement_cache_size=0`` or ``prepared_statement_cache_size=0``, else on
            until the server first loses one (then off). PostgreSQL only.

    Raises:
        ConfigError, InvalidTTLError: an option is invalid.
    """

    url: str | None = None
    table: str = "sqlsession"
    schema: str | None = None
    ttl: float | None = None
    pool_size: int | None = None
    durability: Literal["full", "relaxed"] = "full"
    cleanup_interval: float | None = None
    cleanup_batch_size: int | None = None
    connect_timeout: float | None = None
    statement_timeout: float | None = None
    prepared_statements: bool | None = None

    def __post_init__(self) -> None:
        if self.url is not None:
            normalize_url(self.url)
        _validate.check_identifier(self.table, what="table")
        if self.schema is not None:
            _validate.check_identifier(self.schema, what="schema")
        _validate.check_ttl(self.ttl)
        if self.pool_size is not None:
            _validate.check_positive_int(self.pool_size, what="pool_size")
        if self.durability not in ("full", "relaxed"):
            raise ConfigError(f"durability must be 'full' or 'relaxed', got {self.durability!r}.")
        if self.cleanup_interval is not None:
            _validate.check_ttl(self.cleanup_interval, what="cleanup_interval")
        if self.cleanup_batch_size is not None:
            _validate.check_positive_int(self.cleanup_batch_size, what="cleanup_batch_size")
        for name in ("connect_timeout", "statement_timeout"):
            _validate.check_ttl(getattr(self, name), what=name)
        if self.prepared_statements not in (None, True, False):
            raise ConfigError(
                "prepared_statements must be True, False or None, got "
                f"{self.prepared_statements!r}."
            )

    def __repr__(self) -> str:
        url = None if self.url is None else redact_url(self.url)
        fields = [f"url={url!r}"] + [
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)[1:]
        ]
        return f"SQLOptions({', '.join(fields)})"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SQLOptions:
        """Build the options from a driver config dict, as `session_drivers.sql` wrote it.

        Raises:
            ConfigError: the dict has a key that is not an option, or a bad value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f"Unknown SQL driver option(s) {unknown}; known: {sorted(known)}.")
        return cls(**config)

    def connection(self) -> tuple[str, SQLOptions]:
        """The URL to connect with, and these options with the URL's settings filled in.

        An option given here wins over the URL's query; the URL's wins over the default
        (`connect_timeout` 5 s). The URL comes back without sqlsession's own query
        parameters, which the database driver would not take.
        """
        url, query = split_query(resolve_url(self.url))
        connect_timeout = self.connect_timeout or query.connect_timeout or DEFAULT_CONNECT_TIMEOUT
        return url, dataclasses.replace(
            self,
            connect_timeout=connect_timeout,
            statement_timeout=self.statement_timeout or query.statement_timeout,
            prepared_statements=(
                self.prepared_statements
                if self.prepared_statements is not None
                else query.prepared_statements
            ),
        )

    def as_config(self) -> dict[str, Any]:
        """The options as the JSON-serializable dict a `SessionDriverConfig` carries."""
        return dataclasses.asdict(self)
