"""Configs from untrusted places: ``load_driver(cfg, trusted=False)`` runs no code they name."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlsession import (
    DriverLoadError,
    SessionDriverConfig,
    load_driver,
    open_driver,
    session_drivers,
)
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver

MODULE = "untrusted_9b_driver"


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module on sys.path (and its file) that leaves a marker file when it runs."""
    marker = tmp_path / "ran"
    source = (
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "def create_driver(config):\n"
        "    raise AssertionError('never called')\n"
    )
    (tmp_path / f"{MODULE}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop(MODULE, None)


def entrypoints(tmp_path: Path) -> list[str | os.PathLike[str]]:
    path = tmp_path / f"{MODULE}.py"
    return [MODULE, f"{MODULE}:create_driver", str(path), path, path.as_uri()]


def test_an_untrusted_config_naming_code_is_refused_before_any_import(
    planted: Path, tmp_path: Path
) -> None:
    loaded_before = set(sys.modules)
    for entrypoint in entrypoints(tmp_path):
        cfg = SessionDriverConfig(entrypoint, {})
        with pytest.raises(DriverLoadError, match="untrusted") as refused:
            load_driver(cfg, trusted=False)
        assert "'sql'" in str(refused.value)
        assert "'memory'" in str(refused.value)
        assert not planted.exists(), entrypoint
        assert MODULE not in sys.modules
        assert not any(
            name.startswith("_sqlsession_file_driver_")
            for name in sys.modules.keys() - loaded_before
        )
    # The same config, trusted, runs the module: that is what was refused.
    with pytest.raises(DriverLoadError):
        load_driver(SessionDriverConfig(MODULE, {}))
    assert planted.read_text() == "imported"


def test_an_untrusted_config_cannot_run_a_program(tmp_path: Path) -> None:
    # subprocess.run(config) would run the program the config's first key names.
    marker = tmp_path / "touched"
    cfg = SessionDriverConfig("subprocess:run", {"/usr/bin/touch": 0, str(marker): 0})
    with pytest.raises(DriverLoadError, match="untrusted"):
        load_driver(cfg, trusted=False)
    assert not marker.exists()


async def test_an_untrusted_config_loads_registered_and_built_in_drivers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    for cfg in [
        SessionDriverConfig("memory", {"max": 10}),
        session_drivers.memory(),
        SessionDriverConfig("sql", {"url": url}),
        session_drivers.sql(url=url),
    ]:
        async with open_driver(cfg, trusted=False) as driver:
            assert isinstance(driver, MemoryDriver | SQLDriver)
    assert isinstance(load_driver(session_drivers.memory(), trusted=False), MemoryDriver)
