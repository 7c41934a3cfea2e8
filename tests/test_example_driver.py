"""A third party's driver passes the shipped contract by subclassing it with one fixture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sqlsession.testing import DriverContract, DriverFactory

from .example_driver import JsonFileDriver


class TestJsonFileDriver(DriverContract):
    @pytest.fixture
    def driver_factory(self, tmp_path: Path) -> DriverFactory:
        def make(clock: Any, **options: Any) -> JsonFileDriver:
            return JsonFileDriver(tmp_path / "sessions.json", clock=clock, **options)

        return make
