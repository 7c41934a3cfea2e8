"""Peak resident memory of this process while something runs."""

from __future__ import annotations

import asyncio
import contextlib
import os

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The resident set size now (psutil where installed, else /proc on Linux)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    return int(psutil.Process().memory_info().rss)


class RssSampler:
    """Samples RSS every 20 ms from `start` to `stop`; `stop` returns the peak growth in MB."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self.start_rss = 0
        self.peak = 0

    def start(self) -> None:
        self.start_rss = self.peak = rss_bytes()
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes())
            await asyncio.sleep(0.02)

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.peak = max(self.peak, rss_bytes())
        return (self.peak - self.start_rss) / 2**20
