"""Timeouts as options and URL parameters, typed URL queries, unknown parameters refused."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from sqlsession import session_drivers
from sqlsession._url import normalize_url, split_query
from sqlsession.drivers.sql import SQLDriver
from sqlsession.errors import ConfigError, OperationTimeoutError


async def lock_table(url: str) -> Any:
    """A connection holding an exclusive lock on the session table, until it closes."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    holder = await asyncpg.connect(dsn)
    await holder.execute("BEGIN; LOCK TABLE sqlsession IN ACCESS EXCLUSIVE MODE")
    return holder


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("query", "options"),
    [
        ("", {"statement_timeout": 0.5}),
        ("?statement_timeout=0.5&connect_timeout=3", {}),
        ("?command_timeout=0.5", {}),  # asyncpg's name
    ],
)
async def test_a_lock_held_elsewhere_fails_within_statement_timeout(
    postgres_url: str, query: str, options: dict[str, Any]
) -> None:
    async with SQLDriver(postgres_url + query, **options) as driver:
        await driver.set_item("k", 1)
        holder = await lock_table(postgres_url)
        try:
            for operation in (
                lambda: driver.set_item("k", 2),  # the fast path
                lambda: driver.get_keys(),  # SQLAlchemy's path
                lambda: driver.merge_item("k", {"a": 1}),  # a transaction
            ):
                started = time.monotonic()
                with pytest.raises(OperationTimeoutError, match="statement timeout"):
                    await operation()
                # Reported once, never run again into twice the time.
                assert 0.4 < time.monotonic() - started < 0.95
        finally:
            await holder.close()
        # The connections stay usable.
        await driver.set_item("k", 3)
        assert await driver.get_item("k") == 3


def test_url_parameters_are_typed() -> None:
    url, settings = split_query(
        normalize_url(
            "postgresql://u@db/app?connect_timeout=2.5&statement_timeout=30"
            "&statement_cache_size=0&target_session_attrs=read-write"
        )
    )
    assert url == "postgresql+asyncpg://u@db/app?target_session_attrs=read-write"
    assert (settings.connect_timeout, settings.statement_timeout) == (2.5, 30.0)
    assert settings.prepared_statements is False
    assert split_query(normalize_url("postgresql://u@db/app?prepared_statement_cache_size=100"))[
        1
    ].prepared_statements


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://root@db/app?passwd=s3cret-value", "passwd"),
        ("postgresql://u@db/app?sslmode=require&pasword=s3cret-value", "pasword"),
        ("postgresql://u@db/app?statement_timeout=s3cret-value", "statement_timeout"),
        ("postgresql://u@db/app?connect_timeout=-1&s3cret-value=1", "s3cret-value"),
        ("postgresql://u@db/app?statement_cache_size=s3cret-value", "statement_cache_size"),
        ("postgresql://u@db/app?ssl=a&ssl=s3cret-value", "ssl"),
    ],
)
def test_bad_url_parameters_are_refused_by_name(url: str, named: str) -> None:
    for build in (lambda: SQLDriver(url), lambda: session_drivers.sql(url=url)):
        with pytest.raises(ConfigError, match=named) as info:
            build()
        # The name, never the value (a misspelt password parameter holds a password).
        assert "s3cret-value" not in str(info.value).replace(named, "")


def test_statement_timeout_is_refused_where_it_cannot_be_set(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="statement_timeout is a PostgreSQL option"):
        SQLDriver(f"sqlite:///{tmp_path / 'x.db'}", statement_timeout=1)


@pytest.mark.parametrize("bad", [0, -1, float("inf"), "5", True])
def test_bad_timeouts_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        SQLDriver("postgresql://u@db/app", connect_timeout=bad)


def test_a_multi_host_url_becomes_sqlalchemys_host_list() -> None:
    url = normalize_url("postgresql://u@h1:5432,h2:5433/app?target_session_attrs=read-write")
    parsed = make_url(url)
    assert parsed.query["host"] == ("h1:5432", "h2:5433")
    assert parsed.query["target_session_attrs"] == "read-write"
    assert parsed.database == "app"


async def test_timeouts_are_refused_with_an_engine_of_your_own(tmp_path: Any) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(ConfigError, match="connect_args"):
            SQLDriver(engine=engine, connect_timeout=1)
    finally:
        await engine.dispose()
