"""The fixtures the contract classes share, and how a test names the capabilities it needs."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from ..driver import SupportsDispose, SupportsHasItem, SupportsKeys
from ._clock import FakeClock

__all__ = ["DriverFactory", "MakeDriver", "exists", "keys_if_listed", "needs"]

DriverFactory = Callable[..., Any]
"""``factory(clock, **options)``: a new driver, or an awaitable of one.

`clock` returns seconds since the epoch; an expiry-capable driver must read the time
only from it. The only option passed today is ``ttl`` (the default lifetime in
seconds, or None), and only to expiry-capable drivers; without options the driver has
no default lifetime.
"""

MakeDriver = Callable[..., Awaitable[Any]]
"""``await make_driver(**options)``: a driver from the factory, on the test's clock."""

_T = TypeVar("_T", bound=Callable[..., Any])
_NEEDS = "__sqlsession_needs__"


def needs(*capabilities: type) -> Callable[[_T], _T]:
    """Mark a contract test as applying only to drivers with all of `capabilities`.

    The test is skipped, with the missing protocols named, for a driver without them.
    """

    def mark(test: _T) -> _T:
        setattr(test, _NEEDS, capabilities)
        return test

    return mark


async def exists(driver: Any, key: str) -> bool:
    """Whether `key` is live: `has_item` when the driver has it, else a non-None value."""
    if isinstance(driver, SupportsHasItem):
        return await driver.has_item(key)
    return await driver.get_item(key) is not None


async def keys_if_listed(driver: Any, expected: list[str]) -> None:
    """Assert the live keys are `expected`, on a driver that can list them."""
    if isinstance(driver, SupportsKeys):
        assert await driver.get_keys() == expected


class DriverFixtures:
    """`clock`, `make_driver` and `driver`, built from the subclass's `driver_factory`."""

    @pytest.fixture
    def driver_factory(self) -> DriverFactory:
        """Override in the subclass: ``factory(clock, **options)`` returning a new driver."""
        pytest.fail(
            f"{type(self).__name__} must provide a driver_factory fixture: a callable "
            "factory(clock, **options) that returns a new driver (or an awaitable of one) "
            "reading the time from clock and taking ttl= as its default lifetime.",
            pytrace=False,
        )

    @pytest.fixture
    def clock(self) -> FakeClock:
        """The clock every driver of the test reads; tests move it instead of sleeping."""
        return FakeClock()

    @pytest_asyncio.fixture
    async def make_driver(
        self, driver_factory: DriverFactory, clock: FakeClock, request: pytest.FixtureRequest
    ) -> AsyncIterator[MakeDriver]:
        """Build drivers on the test's clock; dispose them (if they can be) afterwards."""
        made: list[Any] = []
        spare: list[Any] = []

        async def make(**options: Any) -> Any:
            if not options and spare:
                return spare.pop()  # the probe below, handed out rather than wasted
            driver = driver_factory(clock, **options)
            if inspect.isawaitable(driver):
                driver = await driver
            made.append(driver)
            return driver

        async def dispose() -> None:
            for driver in made:
                if isinstance(driver, SupportsDispose):
                    await driver.dispose()

        wanted: tuple[type, ...] = getattr(request.function, _NEEDS, ())
        if wanted:
            probe = await make()
            missing = [c.__name__ for c in wanted if not isinstance(probe, c)]
            if missing:
                await dispose()
                pytest.skip(
                    f"{type(probe).__name__} does not implement {', '.join(missing)} "
                    "(sqlsession.driver): this part of the contract does not apply."
                )
            spare.append(probe)
        try:
            yield make
        finally:
            await dispose()

    @pytest_asyncio.fixture
    async def driver(self, make_driver: MakeDriver) -> Any:
        """A driver with no default lifetime."""
        return await make_driver()
