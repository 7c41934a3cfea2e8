"""What the store adapters (`sqlsession.litestar`, `sqlsession.keyvalue`) share."""

from __future__ import annotations

import inspect
from typing import Any

from .driver import (
    SupportsAddItem,
    SupportsClear,
    SupportsDeleteItem,
    SupportsEntries,
    SupportsExpiry,
    SupportsHasItem,
    SupportsKeys,
    SupportsMany,
    SupportsPrefixCleanup,
)
from .errors import ConfigError, InvalidKeyError

__all__ = ["check_namespace", "missing_extra", "require"]

_CAPABILITIES: dict[type[Any], str] = {
    SupportsExpiry: "touch",
    SupportsEntries: "get_entry, get_entries",
    SupportsDeleteItem: "delete_item",
    SupportsMany: "get_many, set_many, remove_many",
    SupportsAddItem: "add_item",
    SupportsHasItem: "has_item",
    SupportsKeys: "get_keys",
    SupportsClear: "clear",
    SupportsPrefixCleanup: "cleanup(prefix=...)",
}


def require(driver: Any, adapter: str, *protocols: type[Any]) -> None:
    """Refuse a driver that lacks a capability the adapter calls, naming what is missing.

    The adapters never emulate a missing operation (a value wrapped with its expiry, a
    read then a delete): a driver without it is refused when the adapter is built.
    """
    missing = [_CAPABILITIES[p] for p in protocols if not isinstance(driver, p)]
    if SupportsPrefixCleanup in protocols and not missing and not _takes_prefix(driver.cleanup):
        missing.append(_CAPABILITIES[SupportsPrefixCleanup])
    if missing:
        raise ConfigError(
            f"{adapter} needs a driver with {'; '.join(missing)}; {type(driver).__name__} "
            "has not. The built-in drivers (session_drivers.sql(), session_drivers.memory()) "
            "have them all."
        )


def _takes_prefix(method: Any) -> bool:
    try:
        return "prefix" in inspect.signature(method).parameters
    except (TypeError, ValueError):  # a callable without a signature: trust it
        return True


def check_namespace(name: Any, *, what: str, separator: str) -> str:
    """A namespace or collection name: a non-empty str without `separator`."""
    if type(name) is not str or not name or separator in name:
        raise InvalidKeyError(
            f"A {what} must be a non-empty str without {separator!r}, got {name!r}."
        )
    return name


def missing_extra(exc: ImportError, package: str, extra: str) -> ImportError:
    """The error raised when an adapter's framework is not installed."""
    return ImportError(
        f"sqlsession.{extra} needs {package}: pip install 'sqlsession-store[{extra}]'"
    )
