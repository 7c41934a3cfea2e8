"""A steady load of writes on a driver while a fault hits its server, and what it cost.

Eight tasks write keys of their own (`set_item`) and add entries to a dict of their own
(`merge_item`), remembering every write the driver acknowledged. After the fault, every
acknowledged write is read back through a fresh driver: one missing is a write lost.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlsession.drivers.sql import SQLDriver
from sqlsession.errors import SessionError


@dataclass
class FaultReport:
    """What one fault cost the load."""

    fault: str
    outage: float
    """Seconds from the fault's start to the first write that succeeded after it, or 0
    when no write failed; the longest gap between two successful writes in that window."""
    errors: collections.Counter[str]
    """Errors the operations raised, by type name."""
    foreign: list[BaseException]
    """Errors outside `SessionError` (must be none)."""
    acknowledged: int
    lost: int

    def line(self) -> str:
        errors = ", ".join(f"{name} {count}" for name, count in sorted(self.errors.items()))
        return (
            f"{self.fault:<22} outage {self.outage * 1000:7.0f} ms  "
            f"acknowledged {self.acknowledged:5d}  lost {self.lost}  "
            f"errors: {errors or 'none'}"
        )


@dataclass
class _Log:
    successes: list[float] = field(default_factory=list)
    failures: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    foreign: list[BaseException] = field(default_factory=list)
    acked_sets: dict[str, int] = field(default_factory=dict)
    acked_merges: dict[str, set[int]] = field(default_factory=lambda: collections.defaultdict(set))


class Load:
    """`tasks` writers on `driver`, each pausing `pause` seconds between writes."""

    def __init__(self, driver: SQLDriver, *, tasks: int = 8, pause: float = 0.005) -> None:
        self.driver = driver
        self.tasks = tasks
        self.pause = pause
        self._log = _Log()
        self._stop = asyncio.Event()
        self._running: list[asyncio.Task[None]] = []

    async def _writer(self, task: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                if n % 2:
                    key = f"w{task}:{n}"
                    await self.driver.set_item(key, n)
                    self._log.acked_sets[key] = n
                else:
                    await self.driver.merge_item(f"m{task}", {str(n): n})
                    self._log.acked_merges[f"m{task}"].add(n)
                self._log.successes.append(time.monotonic())
            except Exception as exc:
                self._log.failures.append(time.monotonic())
                self._log.errors[type(exc).__name__] += 1
                if not isinstance(exc, SessionError):
                    self._log.foreign.append(exc)
                await asyncio.sleep(0.02)  # as a client would, rather than spin
            await asyncio.sleep(self.pause)

    def start(self) -> None:
        self._running = [asyncio.create_task(self._writer(t)) for t in range(self.tasks)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._running)

    async def fault(
        self,
        name: str,
        action: Callable[[], Awaitable[None]],
        *,
        settle: float = 1.0,
        verify_url: str,
        table: str = "sqlsession",
    ) -> FaultReport:
        """Run the load, apply `action` mid-way, run `settle` seconds more, and count."""
        self.start()
        await asyncio.sleep(0.3)
        began = time.monotonic()
        await action()
        await asyncio.sleep(settle)
        await self.stop()
        return await self._report(name, began, verify_url, table)

    async def _report(self, name: str, began: float, url: str, table: str) -> FaultReport:
        log = self._log
        outage = 0.0
        failed_after = [t for t in log.failures if t >= began]
        if failed_after:
            marks = [began, *sorted(t for t in log.successes if t >= began)]
            gaps = [b - a for a, b in itertools.pairwise(marks)]
            outage = max(gaps, default=time.monotonic() - began)
        lost = 0
        async with SQLDriver(url, table=table) as reader:
            for key, value in log.acked_sets.items():
                if await reader.get_item(key) != value:
                    lost += 1
            for key, values in log.acked_merges.items():
                stored = await reader.get_item(key) or {}
                lost += sum(1 for value in values if stored.get(str(value)) != value)
        acknowledged = len(log.acked_sets) + sum(len(v) for v in log.acked_merges.values())
        return FaultReport(name, outage, log.errors, log.foreign, acknowledged, lost)
