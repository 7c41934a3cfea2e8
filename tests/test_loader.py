"""The config half and the loader: entrypoint forms, errors, and light imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlsession import (
    ConfigError,
    DriverLoadError,
    SessionDriver,
    SessionDriverConfig,
    SessionError,
    load_driver,
    open_driver,
    session_drivers,
)
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver

RUNTIME = textwrap.dedent(
    """
    from typing import Any

    class DictDriver:
        def __init__(self, config: dict[str, Any]) -> None:
            self.config = config
            self.items: dict[str, Any] = {}
            self.disposed = False

        async def get_item(self, key: str) -> Any:
            return self.items.get(key)

        async def set_item(self, key: str, value: Any) -> None:
            self.items[key] = value

        async def remove_item(self, key: str) -> None:
            self.items.pop(key, None)

        async def dispose(self) -> None:
            self.disposed = True

    def create_driver(config: dict[str, Any]) -> DictDriver:
        return DictDriver(config)

    def make(config: dict[str, Any]) -> DictDriver:
        return DictDriver({"made_by": "make", **config})

    def broken(config: dict[str, Any]) -> DictDriver:
        raise RuntimeError("the factory is broken")

    def not_a_driver(config: dict[str, Any]) -> object:
        return object()

    NOT_CALLABLE = 42
    """
)


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's own driver package, ``myapp.driver``, importable and as files."""
    package = tmp_path / "myapp" / "driver"
    package.mkdir(parents=True)
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "runtime.py").write_text(RUNTIME)
    (package / "config.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path
            from sqlsession import SessionDriverConfig

            def dict_driver(config=None):
                return SessionDriverConfig(
                    entrypoint=Path(__file__).with_name("runtime.py"), config=config
                )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield package
    for name in [m for m in sys.modules if m == "myapp" or m.startswith("myapp.")]:
        del sys.modules[name]


# -- SessionDriverConfig -----------------------------------------------------------------


def test_config_is_frozen_and_copied() -> None:
    options = {"a": [1]}
    cfg = SessionDriverConfig("memory", options)
    options["a"].append(2)
    assert cfg.config == {"a": [1]}
    with pytest.raises(AttributeError):
        cfg.entrypoint = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "config", [{"when": object()}, {"x": float("nan")}, [1, 2], "text", {"s": {1, 2}}]
)
def test_config_must_be_json(config: Any) -> None:
    with pytest.raises(ConfigError, match="config"):
        SessionDriverConfig("memory", config)


@pytest.mark.parametrize("entrypoint", ["", 42, None, b"bytes"])
def test_entrypoint_must_be_a_string_or_path(entrypoint: Any) -> None:
    with pytest.raises(ConfigError, match="entrypoint"):
        SessionDriverConfig(entrypoint)


def test_builtin_configs_are_json() -> None:
    for cfg in (session_drivers.sql(url="postgres://u@h/db", ttl=3600), session_drivers.memory()):
        assert isinstance(cfg.entrypoint, str)
        assert json.loads(json.dumps(cfg.config)) == cfg.config


def test_importing_the_config_half_and_the_web_layer_is_light() -> None:
    script = textwrap.dedent(
        """
        import sys
        import sqlsession
        import sqlsession.web
        from sqlsession import session_drivers, SessionDriverConfig
        session_drivers.sql(url="postgresql://app@db/app", ttl=3600)
        session_drivers.memory(max=10)
        SessionDriverConfig("sqlsession.drivers.sql", {"url": None})
        heavy_roots = ("sqlalchemy", "asyncpg", "aiosqlite", "alembic")
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in heavy_roots)
        print(",".join(heavy))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""


# -- the four entrypoint forms ------------------------------------------------------------


async def test_module_path() -> None:
    driver = load_driver(SessionDriverConfig("sqlsession.drivers.memory", {"max": 3}))
    assert isinstance(driver, MemoryDriver)
    assert driver.max == 3


def test_module_and_attribute(user_package: Path) -> None:
    driver: Any = load_driver(SessionDriverConfig("myapp.driver.runtime:make", {"x": 1}))
    assert driver.config == {"made_by": "make", "x": 1}


async def test_file_path_forms(user_package: Path) -> None:
    from myapp.driver.config import dict_driver  # type: ignore[import-not-found]

    runtime = user_package / "runtime.py"
    cfgs = [
        dict_driver({"n": 1}),  # Path(__file__).with_name(...)
        SessionDriverConfig(str(runtime), {"n": 1}),
        SessionDriverConfig(runtime.as_uri(), {"n": 1}),
        SessionDriverConfig("myapp/driver/runtime.py", {"n": 1}),  # relative to the cwd
    ]
    drivers = [load_driver(cfg) for cfg in cfgs]
    for driver in drivers:
        assert isinstance(driver, SessionDriver)
        assert driver.config == {"n": 1}  # type: ignore[attr-defined]
    # One file, one module: loading it twice does not run it twice.
    assert len({type(d) for d in drivers}) == 1
    async with open_driver(cfgs[0]) as driver:
        await driver.set_item("k", "v")
        assert await driver.get_item("k") == "v"
    assert driver.disposed  # type: ignore[attr-defined]


def test_registered_names_are_the_builtin_drivers() -> None:
    assert isinstance(load_driver(SessionDriverConfig("memory")), MemoryDriver)
    sql = load_driver(SessionDriverConfig("sql", {"url": "sqlite:///x.db"}))
    assert isinstance(sql, SQLDriver)


def test_factory_always_gets_a_dict(user_package: Path) -> None:
    driver: Any = load_driver(SessionDriverConfig("myapp.driver.runtime"))
    assert driver.config == {}


def test_a_registered_name_wins_over_a_module(
    tmp_path: Path, user_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A third-party package registering "myapp" in our entry-point group, while a
    # module called "myapp" is importable too.
    dist = tmp_path / "thirdparty-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[sqlsession.drivers]\nmyapp = myapp.driver.runtime:make\n"
    )
    driver: Any = load_driver(SessionDriverConfig("myapp", {"y": 2}))
    assert driver.config == {"made_by": "make", "y": 2}


# -- loader errors -------------------------------------------------------------------------


def load_error(entrypoint: Any, config: Any = None) -> DriverLoadError:
    with pytest.raises(DriverLoadError) as info:
        load_driver(SessionDriverConfig(entrypoint, config))
    assert isinstance(info.value, SessionError)
    return info.value


def test_nothing_to_import() -> None:
    error = load_error("no_such_driver_module")
    assert "'no_such_driver_module'" in str(error)
    assert "entry point" in str(error)  # says what was tried
    assert isinstance(error.__cause__, ModuleNotFoundError)


def test_no_such_attribute(user_package: Path) -> None:
    error = load_error("myapp.driver.runtime:nope")
    assert "'nope'" in str(error)
    assert isinstance(error.__cause__, AttributeError)


def test_module_without_factory(user_package: Path) -> None:
    error = load_error("myapp.driver.config")
    assert "create_driver" in str(error)


def test_not_callable(user_package: Path) -> None:
    assert "not a callable" in str(load_error("myapp.driver.runtime:NOT_CALLABLE"))


def test_factory_raised(user_package: Path) -> None:
    error = load_error("myapp.driver.runtime:broken")
    assert "the factory is broken" in str(error)
    assert "'myapp.driver.runtime:broken'" in str(error)
    assert isinstance(error.__cause__, RuntimeError)


def test_factory_returned_no_driver(user_package: Path) -> None:
    assert "lacks get_item" in str(load_error("myapp.driver.runtime:not_a_driver"))


def test_missing_file(tmp_path: Path) -> None:
    error = load_error(tmp_path / "absent.py")
    assert "does not exist" in str(error)


def test_file_that_fails_to_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("raise ImportError('needs a package')\n")
    error = load_error(str(bad))
    assert "needs a package" in str(error)
    assert isinstance(error.__cause__, ImportError)


def test_builtin_driver_with_bad_config_names_the_entrypoint() -> None:
    error = load_error("sql", {"url": "mssql://x/y"})
    assert "'sql'" in str(error)
    assert "Unsupported database URL scheme" in str(error)
    assert isinstance(error.__cause__, ConfigError)


def test_load_driver_needs_a_config() -> None:
    with pytest.raises(DriverLoadError, match="SessionDriverConfig"):
        load_driver("memory")  # type: ignore[arg-type]
