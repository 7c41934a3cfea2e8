"""The runtime half's loader: turn a `SessionDriverConfig` into a driver object."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlparse

from .config import SessionDriverConfig
from .driver import SessionDriver, SupportsDispose
from .errors import DriverLoadError, SessionError

__all__ = ["load_driver", "open_driver"]

ENTRY_POINT_GROUP = "sqlsession.drivers"
FACTORY = "create_driver"


# The modules `session_drivers` names, accepted from an untrusted config too.
BUILT_IN = ("sqlsession.drivers.sql", "sqlsession.drivers.memory")


def load_driver(cfg: SessionDriverConfig, *, trusted: bool = True) -> SessionDriver:
    """Import the driver named by ``cfg.entrypoint`` and build it from ``cfg.config``.

    An entrypoint is code: loading a config imports the module or runs the file it
    names, whatever that does. Load a config that came from somewhere you do not
    control (a file others can write, a request, a message) with ``trusted=False``.

    A string is resolved in this order: a ``file://`` URL, or a string ending in ``.py``
    or containing a path separator, is a file (relative to the working directory);
    otherwise ``module:attribute``; otherwise a name registered in the entry-point group
    ``sqlsession.drivers``, then a module path whose ``create_driver`` is the factory.

    Args:
        cfg: the config to load.
        trusted: False accepts only the names registered in the entry-point group
            ``sqlsession.drivers`` (``"sql"``, ``"memory"`` and those of installed
            packages) and the built-in drivers' modules that `session_drivers` names;
            any other entrypoint is refused before anything is imported.

    Raises:
        DriverLoadError: nothing could be imported, there is no factory, the factory
            raised, or it returned something without ``get_item``/``set_item``/
            ``remove_item``; with ``trusted=False``, the entrypoint is not a registered
            name or built-in driver. The message names the entrypoint; the original
            error is the ``__cause__``.
    """
    if not isinstance(cfg, SessionDriverConfig):
        raise DriverLoadError(
            f"load_driver() takes a SessionDriverConfig (session_drivers.sql(...), or "
            f"SessionDriverConfig(entrypoint=..., config=...)), got {type(cfg).__name__}."
        )
    entrypoint = cfg.entrypoint
    if not trusted:
        _check_registered(entrypoint)
    factory, origin = _resolve(entrypoint)
    try:
        driver = factory(dict(cfg.config or {}))
    except Exception as exc:
        detail = str(exc) if isinstance(exc, SessionError) else f"{type(exc).__name__}: {exc}"
        raise DriverLoadError(
            f"The driver factory {origin} for entrypoint {entrypoint!r} raised: {detail}"
        ) from exc
    if not isinstance(driver, SessionDriver):
        raise DriverLoadError(
            f"The driver factory {origin} for entrypoint {entrypoint!r} returned "
            f"{type(driver).__name__}, which lacks get_item, set_item or remove_item."
        )
    return driver


@asynccontextmanager
async def open_driver(
    cfg: SessionDriverConfig, *, trusted: bool = True
) -> AsyncIterator[SessionDriver]:
    """Load a driver for the ``async with`` block and dispose it on the way out.

    `trusted` is as for `load_driver`: pass False for a config from an untrusted place.
    """
    driver = load_driver(cfg, trusted=trusted)
    try:
        yield driver
    finally:
        if isinstance(driver, SupportsDispose):
            await driver.dispose()


def _check_registered(entrypoint: str | os.PathLike[str]) -> None:
    """Refuse, before any import, an entrypoint an untrusted config may not name."""
    if isinstance(entrypoint, str) and entrypoint in BUILT_IN:
        return
    registered = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    if isinstance(entrypoint, str) and entrypoint in registered:
        # By name alone: "sql" is the registered driver, never a module named sql.
        return
    raise DriverLoadError(
        f"Refusing the session driver {entrypoint!r} from an untrusted config "
        f"(trusted=False): such a config may only name a driver registered in the "
        f"entry-point group {ENTRY_POINT_GROUP!r} ({', '.join(map(repr, registered))}) or a "
        f"built-in driver ({', '.join(map(repr, BUILT_IN))}). An entrypoint is code that "
        "loading runs; load a config naming a module or file only with trusted=True, "
        "and only from a source you control."
    )


def _resolve(entrypoint: str | os.PathLike[str]) -> tuple[Callable[..., Any], str]:
    """Return the factory for `entrypoint` and a description of where it came from."""
    if isinstance(entrypoint, os.PathLike):
        return _from_file(Path(os.fspath(entrypoint)), entrypoint)
    if entrypoint.startswith("file://"):
        return _from_file(Path(unquote(urlparse(entrypoint).path)), entrypoint)
    if entrypoint.endswith(".py") or "/" in entrypoint or os.sep in entrypoint:
        return _from_file(Path(entrypoint), entrypoint)
    if ":" in entrypoint:
        module_name, _, attribute = entrypoint.partition(":")
        return _attribute(_import(module_name, entrypoint), attribute, entrypoint)
    registered = entry_points(group=ENTRY_POINT_GROUP, name=entrypoint)
    for ep in registered:
        try:
            factory = ep.load()
        except Exception as exc:
            raise DriverLoadError(
                f"The driver {entrypoint!r} is registered in the entry-point group "
                f"{ENTRY_POINT_GROUP!r} as {ep.value!r}, but loading it failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return _callable(factory, f"{ep.value!r} (entry point {entrypoint!r})", entrypoint)
    return _attribute(_import(entrypoint, entrypoint), FACTORY, entrypoint)


def _import(module_name: str, entrypoint: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        tried = f"module {module_name!r}"
        if ":" not in entrypoint:
            tried = f"an entry point named {entrypoint!r} in {ENTRY_POINT_GROUP!r}, then {tried}"
        raise DriverLoadError(
            f"Cannot load the session driver {entrypoint!r}: tried {tried}, and importing "
            f"it failed with {type(exc).__name__}: {exc}. Check the spelling, install the "
            "package that provides it, or pass a file path."
        ) from exc


def _from_file(path: Path, entrypoint: str | os.PathLike[str]) -> tuple[Callable[..., Any], str]:
    path = path.resolve()
    if not path.is_file():
        raise DriverLoadError(
            f"Cannot load the session driver {entrypoint!r}: the file {str(path)!r} does not "
            "exist. A relative path is taken from the working directory; use "
            "Path(__file__).with_name(...) to point next to your config module."
        )
    # One module per file, reused, so loading a driver twice does not run its file twice.
    name = "_sqlsession_file_driver_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise DriverLoadError(
                f"Cannot load the session driver {entrypoint!r}: {str(path)!r} is not a "
                "Python file."
            )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise DriverLoadError(
                f"Cannot load the session driver {entrypoint!r}: running {str(path)!r} "
                f"failed with {type(exc).__name__}: {exc}"
            ) from exc
    return _attribute(module, FACTORY, entrypoint)


def _attribute(
    module: ModuleType, attribute: str, entrypoint: str | os.PathLike[str]
) -> tuple[Callable[..., Any], str]:
    origin = f"{module.__name__}:{attribute}"
    try:
        factory = getattr(module, attribute)
    except AttributeError as exc:
        raise DriverLoadError(
            f"Cannot load the session driver {entrypoint!r}: {module.__name__!r} has no "
            f"attribute {attribute!r}. A driver module defines create_driver(config)."
        ) from exc
    return _callable(factory, origin, entrypoint)


def _callable(
    factory: object, origin: str, entrypoint: str | os.PathLike[str]
) -> tuple[Callable[..., Any], str]:
    if not callable(factory):
        raise DriverLoadError(
            f"Cannot load the session driver {entrypoint!r}: {origin} is a "
            f"{type(factory).__name__}, not a callable factory."
        )
    return factory, origin
