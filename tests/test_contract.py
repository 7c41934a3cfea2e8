"""The driver contract of `sqlsession.testing`, run on memory, SQLite, PostgreSQL and MariaDB.

Each built-in driver gets one class that subclasses the shipped contract, exactly as a
third party's driver would (see `tests/test_example_driver.py`), with its own
``driver_factory``.
"""

from __future__ import annotations

from typing import Any

import pytest

from sqlsession import (
    SupportsAddItem,
    SupportsDeleteItem,
    SupportsEntries,
    SupportsMany,
    SupportsPrefixCleanup,
)
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.testing import DriverContract, DriverFactory, InputValidationContract


class BuiltInContract(DriverContract, InputValidationContract):
    """Both halves of the contract: the built-in drivers keep sqlsession's input rules too."""

    async def test_the_built_in_drivers_have_every_store_operation(self, driver: Any) -> None:
        for protocol in (
            SupportsEntries,
            SupportsDeleteItem,
            SupportsMany,
            SupportsAddItem,
            SupportsPrefixCleanup,
        ):
            assert isinstance(driver, protocol), protocol.__name__


class TestMemoryDriver(BuiltInContract):
    drivers_share_storage = False  # each MemoryDriver is a store of its own

    @pytest.fixture
    def driver_factory(self) -> DriverFactory:
        # Room for the 2,000 items of the bulk test (the default keeps 500).
        return lambda clock, **options: MemoryDriver(clock=clock, **{"max": 5000, **options})


def sql_factory(url: str) -> DriverFactory:
    def make(clock: Any, **options: Any) -> SQLDriver:
        # Small cleanup batches, so that a cleanup of a few rows runs several.
        return SQLDriver(url, clock=clock, **{"cleanup_batch_size": 2, **options})

    return make


class TestSQLiteDriver(BuiltInContract):
    @pytest.fixture
    def driver_factory(self, sqlite_url: str) -> DriverFactory:
        return sql_factory(sqlite_url)


class TestPostgreSQLDriver(BuiltInContract):
    @pytest.fixture
    def driver_factory(self, postgres_url: str) -> DriverFactory:
        return sql_factory(postgres_url)


class TestMariaDBDriver(BuiltInContract):
    @pytest.fixture
    def driver_factory(self, mysql_url: str) -> DriverFactory:
        return sql_factory(mysql_url)
