"""Metrics through OpenTelemetry: operations, errors, pool connections and cleanup.

The SDK's in-memory reader is this process's meter provider (set once: OpenTelemetry
allows one per process); each test reads the points of its own driver, told apart by
its table (memory drivers: by the operations it ran, counted as differences).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.errors import InvalidKeyError, SessionError

from .conftest import DriverFactory, FakeClock

_READER = InMemoryMetricReader()


@pytest.fixture(scope="module")
def reader() -> InMemoryMetricReader:
    # The provider can be set once per process; another module may have set it (then
    # this test's reader would see nothing: fail loudly rather than pass vacuously).
    metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
    provider = metrics.get_meter_provider()
    assert getattr(provider, "_sdk_config", None) is not None, provider
    return _READER


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    """(attributes, point) of every point of metric `name`, as collected now."""
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += [(dict(p.attributes or {}), p) for p in metric.data.data_points]
    return found


def durations(
    reader: InMemoryMetricReader, driver: Any
) -> dict[tuple[str, str | None], tuple[int, float]]:
    """(operation, error type) -> (count, sum of seconds) of `driver`'s operations."""
    mine = _identity(driver)
    out = {}
    for attrs, point in points(reader, "db.client.operation.duration"):
        if all(attrs.get(k) == v for k, v in mine.items()):
            out[(attrs["db.operation.name"], attrs.get("error.type"))] = (point.count, point.sum)
    return out


def _identity(driver: Any) -> dict[str, Any]:
    if isinstance(driver, SQLDriver):
        common = dict(vars(driver)["_metrics_probe"].common)
        system = {"postgresql": "postgresql", "sqlite": "sqlite"}.get(driver.dialect, "mysql")
        assert common["db.system.name"] == system
        assert common["db.collection.name"] == driver.table_name
        return common
    return {"db.system.name": "memory"}


def delta(
    after: dict[tuple[str, str | None], tuple[int, float]],
    before: dict[tuple[str, str | None], tuple[int, float]],
) -> dict[tuple[str, str | None], int]:
    counts = {k: n - before.get(k, (0, 0.0))[0] for k, (n, _) in after.items()}
    return {k: n for k, n in counts.items() if n}


async def test_operations_counted_with_latency_and_error_types(
    reader: InMemoryMetricReader, make_driver: DriverFactory
) -> None:
    driver = await make_driver()
    before = durations(reader, driver)
    await driver.set_item("a", {"n": 1})
    await driver.get_item("a")
    await driver.get_item("a")
    await driver.get_item("missing")
    await driver.merge_item("a", {"m": 2})
    with pytest.raises(InvalidKeyError):
        await driver.get_item("")
    with pytest.raises(InvalidKeyError):
        await driver.set_item("", 1)
    after = durations(reader, driver)
    assert delta(after, before) == {
        ("set_item", None): 1,
        ("get_item", None): 3,
        ("merge_item", None): 1,
        ("get_item", "sqlsession.errors.InvalidKeyError"): 1,
        ("set_item", "sqlsession.errors.InvalidKeyError"): 1,
    }
    # Latency is recorded in seconds, and a database round trip takes some.
    count, total = after[("get_item", None)]
    assert count >= 3
    assert 0 < total < 60


async def test_every_public_operation_is_recorded(
    reader: InMemoryMetricReader, make_driver: DriverFactory
) -> None:
    driver = await make_driver()
    before = durations(reader, driver)
    await driver.set_many({"k1": 1, "k2": 2})
    await driver.get_many(["k1"])
    await driver.get_entries(["k1"])
    await driver.get_entry("k1")
    await driver.has_item("k1")
    await driver.get_keys()
    await driver.touch("k1", 60)
    await driver.add_item("k3", 3)
    await driver.delete_item("k3")
    await driver.remove_many(["k2"])
    await driver.set_text("t", '{"a":1}')
    await driver.get_text("t")
    await driver.merge_existing_text("t", {"b": "2"})
    await driver.merge_existing("t", {"c": 3})
    await driver.remove_item("t")
    await driver.clear("zz")
    await driver.cleanup()
    seen = {name for name, _ in delta(durations(reader, driver), before)}
    assert seen == {
        "set_many",
        "get_many",
        "get_entries",
        "get_entry",
        "has_item",
        "get_keys",
        "touch",
        "add_item",
        "delete_item",
        "remove_many",
        "set_text",
        "get_text",
        "merge_existing_text",
        "merge_existing",
        "remove_item",
        "clear",
        "cleanup",
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
async def test_a_database_failure_is_counted_by_its_type(
    reader: InMemoryMetricReader, make_driver: DriverFactory
) -> None:
    driver = await make_driver(table="never_migrated")
    before = durations(reader, driver)
    with pytest.raises(SessionError) as raised:
        await driver.get_item("a")
    error = f"{type(raised.value).__module__}.{type(raised.value).__qualname__}"
    assert error == "sqlsession.errors.SchemaError"
    assert delta(durations(reader, driver), before) == {("get_item", error): 1}


async def test_cleanup_rows_and_backlog(
    reader: InMemoryMetricReader, make_driver: DriverFactory, clock: FakeClock
) -> None:
    driver = await make_driver()
    mine = _identity(driver)

    def deleted() -> int:
        found = points(reader, "sqlsession.cleanup.deleted")
        return sum(p.value for a, p in found if all(a.get(k) == v for k, v in mine.items()))

    def backlog() -> list[int]:
        found = points(reader, "sqlsession.cleanup.backlog")
        return [p.value for a, p in found if all(a.get(k) == v for k, v in mine.items())]

    # Another driver of the same kind may have measured a backlog: ours starts with none.
    start = deleted()
    await driver.set_many({f"old{i}": i for i in range(5)}, ttl=10)
    await driver.set_item("live", 1, ttl=1000)
    clock.advance(20)
    if isinstance(driver, SQLDriver):
        assert await driver.stats() == {"live": 1, "expired": 5}
        assert 5 in backlog()
    assert await driver.cleanup() == 5
    assert deleted() - start == 5
    assert 0 in backlog()
    if isinstance(driver, SQLDriver):
        # A cleanup limited to a prefix counts its rows but says nothing of the backlog.
        await driver.set_item("p1", 1, ttl=10)
        await driver.stats()
        clock.advance(20)
        assert await driver.cleanup("p") == 1
        assert deleted() - start == 6
        assert backlog() == [0]

    other = await make_driver()
    if isinstance(driver, SQLDriver):
        # Drivers of one table share its backlog: the latest count wins.
        await driver.set_item("old", 1, ttl=10)
        clock.advance(20)
        await other.stats()
        assert backlog() == [1]


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
async def test_pool_connections_in_use(
    reader: InMemoryMetricReader, make_driver: DriverFactory
) -> None:
    driver = await make_driver()
    await driver.set_item("a", 1)
    if driver._fast is not None:  # the connection kept for a next operation (<= 1 ms)
        await driver._fast.release()

    def connections() -> dict[str, int]:
        found = points(reader, "db.client.connection.count")
        return {
            a["db.client.connection.state"]: p.value
            for a, p in found
            if a["db.client.connection.pool.name"] == vars(driver)["_metrics_probe"].pool_name
        }

    idle = connections()
    assert idle["used"] == 0
    assert idle["idle"] >= 1
    async with driver.engine.connect() as one, driver.engine.connect() as two:
        assert one is not two
        held = connections()
        assert held["used"] == 2
    assert connections()["used"] == 0


async def test_a_cancelled_operation_is_counted_as_such(
    reader: InMemoryMetricReader,
) -> None:
    driver = MemoryDriver()
    before = durations(reader, driver)

    async def slow_get(key: str) -> Any:
        await asyncio.sleep(10)

    class Slow(MemoryDriver):
        """A memory driver whose get_item never ends (instrumented as it is built)."""

        get_item = staticmethod(slow_get)

    slow = Slow()
    task = asyncio.ensure_future(slow.get_item("a"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    got = delta(durations(reader, driver), before)
    assert got.get(("get_item", "asyncio.exceptions.CancelledError")) == 1


BLOCKED = """
import asyncio, inspect, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError("blocked for the test")
        return None

sys.meta_path.insert(0, Block())

from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver

plain = []
for driver in (MemoryDriver(), SQLDriver("sqlite+aiosqlite:///unused.db")):
    for name, method in inspect.getmembers(type(driver), inspect.iscoroutinefunction):
        if not name.startswith("_"):
            assert name not in vars(driver), name
            assert getattr(driver, name).__func__ is method, name
            plain.append(name)
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
print(len(plain))
"""


def test_without_opentelemetry_the_methods_are_the_plain_ones(tmp_path: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BLOCKED)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 30  # both drivers' operations were looked at


def test_with_opentelemetry_the_methods_are_wrapped(reader: InMemoryMetricReader) -> None:
    driver = MemoryDriver()
    assert "get_item" in vars(driver)
    assert driver.get_item.__wrapped__.__func__ is MemoryDriver.get_item  # type: ignore[attr-defined]
    assert "dispose" not in vars(driver)
