"""Metrics through OpenTelemetry when ``opentelemetry-api`` is installed; nothing otherwise.

`instrument` runs once, when a driver is built. Without the API (or with
``OTEL_SDK_DISABLED=true``) it returns at once and the driver keeps its plain methods:
no wrapper, no check per operation. With it, every public operation of the driver is
replaced, on that instance only, by a wrapper that records the operation's duration in
the ``db.client.operation.duration`` histogram of OpenTelemetry's semantic conventions
for database clients (its count is the operation count, ``error.type`` marks the
failures). The wrapper sits above the fast path, which SQLAlchemy's own instrumentation
never sees.

Observed at collection time, from what the process already holds (no query per scrape):
``db.client.connection.count`` (SQLAlchemy's pool: used and idle connections) and
``sqlsession.cleanup.backlog`` (the expired rows the last `stats` counted, or 0 after a
full `cleanup`). ``sqlsession.cleanup.deleted`` counts the rows cleanups deleted.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["instrument"]

# The boundaries the semantic conventions advise for db.client.operation.duration.
_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
_UNSET: Any = object()
_instruments: Any = _UNSET  # decided on the first driver built: _Instruments or None


class _Probe:
    """What the observable instruments read of one driver, at collection time."""

    def __init__(
        self, common: dict[str, str | int], pool_name: str, pool: Callable[[], Any] | None
    ) -> None:
        self.common = common  # the attributes of every measurement of this driver
        self.pool_name = pool_name
        self.pool = pool
        self.table = frozenset(common.items())  # drivers of one table share its backlog


class _Instruments:
    def __init__(self, otel: Any) -> None:
        from . import __version__

        meter = otel.get_meter("sqlsession", __version__)
        self.duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of sqlsession driver operations.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self.deleted = meter.create_counter(
            "sqlsession.cleanup.deleted",
            unit="{row}",
            description="Expired rows deleted by cleanup.",
        )
        self.probes: weakref.WeakSet[_Probe] = weakref.WeakSet()
        # The last count of each table's expired rows, whichever driver measured it.
        self.backlogs: dict[frozenset[tuple[str, str | int]], tuple[Mapping[str, Any], int]] = {}
        self.observation = otel.Observation
        meter.create_observable_up_down_counter(
            "db.client.connection.count",
            callbacks=[self._connections],
            unit="{connection}",
            description="Connections of the driver's pool, by state (used, idle).",
        )
        meter.create_observable_gauge(
            "sqlsession.cleanup.backlog",
            callbacks=[self._backlog],
            unit="{row}",
            description="Expired rows awaiting cleanup, as the last stats() or cleanup() found.",
        )

    def _connections(self, _options: Any) -> Iterator[Any]:
        for probe in list(self.probes):
            pool = probe.pool() if probe.pool is not None else None
            used, idle = getattr(pool, "checkedout", None), getattr(pool, "checkedin", None)
            if not (callable(used) and callable(idle)):
                continue  # a pool that keeps no count (NullPool, StaticPool)
            name = {"db.client.connection.pool.name": probe.pool_name}
            yield self.observation(used(), {**name, "db.client.connection.state": "used"})
            yield self.observation(idle(), {**name, "db.client.connection.state": "idle"})

    def _backlog(self, _options: Any) -> Iterator[Any]:
        for attributes, rows in list(self.backlogs.values()):
            yield self.observation(rows, attributes)


def _load() -> _Instruments | None:
    global _instruments
    if _instruments is _UNSET:
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            _instruments = None
        else:
            try:
                from opentelemetry import metrics
            except ImportError:
                _instruments = None
            else:
                _instruments = _Instruments(metrics)
    instruments: _Instruments | None = _instruments
    return instruments


def instrument(
    driver: object,
    *,
    system: str,
    collection: str | None = None,
    namespace: str | None = None,
    server: tuple[str, int | None] | None = None,
    pool_name: str | None = None,
    pool: Callable[[], Any] | None = None,
) -> bool:
    """Record `driver`'s operations, when OpenTelemetry's API is installed.

    Args:
        driver: the driver just built; its public coroutine methods (``dispose`` aside)
            get a recording wrapper, set on the instance.
        system: ``db.system.name`` (``"postgresql"``, ``"sqlite"``, ``"mariadb"``...).
        collection: ``db.collection.name``, the session table.
        namespace: ``db.namespace``, the database's name.
        server: ``server.address`` and ``server.port``, for a database on a server.
        pool_name: ``db.client.connection.pool.name``.
        pool: returns the SQLAlchemy pool to count connections of (asked at each
            collection: disposing an engine replaces its pool).

    Returns:
        True when the driver is instrumented; False (nothing changed) without the API.
    """
    instruments = _load()
    if instruments is None:
        return False
    common: dict[str, str | int] = {"db.system.name": system}
    if collection is not None:
        common["db.collection.name"] = collection
    if namespace:
        common["db.namespace"] = namespace
    if server is not None and server[0]:
        common["server.address"] = server[0]
        if server[1] is not None:
            common["server.port"] = server[1]
    name = pool_name or system
    taken = {probe.pool_name for probe in instruments.probes}
    if name in taken:
        # Two drivers on one database and table each have a pool: number the later ones.
        name = next(f"{name} #{n}" for n in range(2, len(taken) + 3) if f"{name} #{n}" not in taken)
    probe = _Probe(common, name, pool)
    instruments.probes.add(probe)
    for name in _operations(type(driver)):
        method = getattr(driver, name)
        after = _AFTER.get(name)
        setattr(driver, name, _timed(instruments, probe, driver, name, method, common, after))
    # The probe lives as long as the driver (the wrappers hold it too).
    driver.__dict__["_metrics_probe"] = probe
    return True


_OPERATIONS: dict[type, tuple[str, ...]] = {}


def _operations(cls: type) -> tuple[str, ...]:
    names = _OPERATIONS.get(cls)
    if names is None:
        names = _OPERATIONS[cls] = tuple(
            name
            for name, _ in inspect.getmembers(cls, inspect.iscoroutinefunction)
            if not name.startswith("_") and name != "dispose"
        )
    return names


_After = Callable[[_Instruments, _Probe, Any, tuple[Any, ...], Mapping[str, Any], Any], None]


def _timed(
    instruments: _Instruments,
    probe: _Probe,
    driver: Any,
    name: str,
    method: Callable[..., Any],
    common: Mapping[str, str | int],
    after: _After | None,
) -> Callable[..., Any]:
    record = instruments.duration.record
    ok = {**common, "db.operation.name": name}
    clock = time.perf_counter

    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            result = await method(*args, **kwargs)
        except BaseException as exc:
            record(clock() - started, {**ok, "error.type": _error_type(type(exc))})
            raise
        record(clock() - started, ok)
        if after is not None:
            after(instruments, probe, driver, args, kwargs, result)
        return result

    return timed


_ERROR_TYPES: dict[type[BaseException], str] = {}


def _error_type(cls: type[BaseException]) -> str:
    # The fully qualified class name, as the conventions ask: sqlsession.errors.StorageError.
    name = _ERROR_TYPES.get(cls)
    if name is None:
        name = cls.__qualname__
        if cls.__module__ != "builtins":
            name = f"{cls.__module__}.{name}"
        _ERROR_TYPES[cls] = name
    return name


def _whole_table(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    prefix = args[0] if args else kwargs.get("prefix", "")
    return bool(prefix == "")


def _after_cleanup(
    instruments: _Instruments,
    probe: _Probe,
    driver: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    deleted: Any,
) -> None:
    if deleted:
        instruments.deleted.add(deleted, probe.common)
    # A run that found another process cleaning measured nothing; one limited to a
    # prefix left the other keys' expired rows.
    if _whole_table(args, kwargs) and not getattr(driver, "last_cleanup_skipped", False):
        instruments.backlogs[probe.table] = (probe.common, 0)


def _after_stats(
    instruments: _Instruments,
    probe: _Probe,
    driver: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    counts: Any,
) -> None:
    if _whole_table(args, kwargs):
        instruments.backlogs[probe.table] = (probe.common, int(counts["expired"]))


_AFTER: dict[str, _After] = {"cleanup": _after_cleanup, "stats": _after_stats}
