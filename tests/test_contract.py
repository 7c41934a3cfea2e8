"""The driver contract of `sqlsession.testing`, run on memory, SQLite, PostgreSQL and MariaDB.

Each built-in driver gets one class that subclasses the shipped contract, exactly as a
third party's driver would (see `tests/test_example_driver.py`), with its own
``driver_factory``.
"""

from __future__ import annotations

from typing import Any

import pytest

from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.testing import DriverContract, DriverFactory, InputValidationContract


class BuiltInContract(DriverContract, InputValidationContract):
    """Both halves of the contract: the built-in drivers keep sqlsession's input rules too."""


class TestMemoryDriver(BuiltInContract):
    @pytest.fixture
    def driver_factory(self) -> DriverFactory:
        return lambda clock, **options: MemoryDriver(clock=clock, **options)


def sql_factory(url: str) -> DriverFactory:
    def make(clock: Any, **options: Any) -> SQLDriver:
        return SQLDriver(url, clock=clock, **options)

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
