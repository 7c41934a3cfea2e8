"""Cleanup paced by what it does to the app's own latency.

The driver times each of its operations (reads and writes apart) in a `LatencyWatch`:
outside a cleanup the last few hundred latencies, whose 99th percentile is the idle
baseline; during one, how many operations ran and how many were slow (over the baseline
by `SLACK`), apart for those that overlapped a batch and those that ran wholly between
two batches. The latter are the control: what the machine does to the app anyway (other
load, a slow disk), which waiting would not cure. Only the slow operations beyond the
control's share are the cleanup's. Between two batches the `CleanupPacer` keeps those
under `BUDGET` of the app's operations, so their p99 stays near the idle one: it halves
the batch after a batch that slowed too many (grows it back slowly after one that did
not) and, while over budget, waits for the app's operations to bring the share back, at
most `MAX_WAIT` per batch and `WAIT_RATIO` times the batch's own time, so a cleanup
always finishes. An app that sends nothing is not waited for, and with no baseline (too
few operations since the driver started) the cleanup runs as before, unpaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator

__all__ = ["CleanupPacer", "LatencyWatch"]

# The latencies the idle baseline is taken from (a power of two: the ring's mask).
SAMPLES = 512
MIN_SAMPLES = 64
# An operation during cleanup is slow when it takes longer than the idle p99 times this.
SLACK = 1.3
# The share of the app's operations a cleanup may slow: under 1%, their p99 stays under
# the idle p99 times SLACK.
BUDGET = 0.006
# The longest wait between two batches for the budget to come back: MAX_WAIT, and no
# more than WAIT_RATIO times the batch took, so a cleanup takes at most about that many
# times longer than its batches do. STEP: how often the budget is looked at meanwhile.
MAX_WAIT = 1.0
WAIT_RATIO = 20
STEP = 0.01
# Operations between batches needed before their slow share counts as the control.
CONTROL_MIN = 50
# The smallest batch, as a share of the configured size.
MIN_BATCH_SHARE = 50


class _Tally:
    """The app's operations during one cleanup: [in a batch, between batches] each."""

    __slots__ = ("batch_ended", "in_batch", "slow", "threshold", "total")

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.total = [0, 0]
        self.slow = [0, 0]
        self.in_batch = True  # a batch runs now
        self.batch_ended = 0.0  # perf_counter() when the last one ended

    def count(self, seconds: float) -> None:
        # An operation that began before the last batch ended, or ends while one runs,
        # overlapped a batch.
        apart = 0 if self.in_batch or time.perf_counter() - seconds < self.batch_ended else 1
        self.total[apart] += 1
        if seconds > self.threshold:
            self.slow[apart] += 1

    def excess(self) -> float:
        """The slow operations beyond what the control (between batches) had anyway."""
        control = self.slow[1] / self.total[1] if self.total[1] >= CONTROL_MIN else 0.0
        return self.slow[0] - control * self.total[0]

    def over_budget(self) -> bool:
        return self.excess() > BUDGET * (self.total[0] + self.total[1])


class LatencyWatch:
    """The latencies of one kind of the driver's operations (reads, or writes)."""

    __slots__ = ("_count", "_samples", "tally")

    def __init__(self) -> None:
        self._samples = [0.0] * SAMPLES
        self._count = 0
        self.tally: _Tally | None = None  # set while a cleanup runs

    def observe(self, seconds: float) -> None:
        """Note one operation's latency."""
        tally = self.tally
        if tally is None:
            self._samples[self._count & (SAMPLES - 1)] = seconds
            self._count += 1
            return
        # Kept out of the baseline: a cleanup's effect is what is measured against it.
        tally.count(seconds)

    def baseline(self) -> float | None:
        """The p99 of the latest latencies outside cleanup (None: too few yet)."""
        n = min(self._count, SAMPLES)
        if n < MIN_SAMPLES:
            return None
        return sorted(self._samples[:n])[(n * 99) // 100]


class CleanupPacer:
    """Batch sizes and pauses of one cleanup run, from the app's latency.

    Args:
        batch_size: the configured batch size, the largest a batch gets.
        watches: the driver's latency watches; none: a fixed batch size, no waiting.
    """

    def __init__(self, batch_size: int, watches: tuple[LatencyWatch, ...] = ()) -> None:
        self.largest = batch_size
        self.smallest = max(1, min(batch_size, max(20, batch_size // MIN_BATCH_SHARE)))
        self.size = batch_size
        self._watches = watches
        self._tallies: list[_Tally] = []
        self._seen = (0.0, 0)
        self.waited = 0.0
        """Seconds this run waited for the app's latency to come back (tests, benchmarks)."""

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Count the app's slow operations while the cleanup runs."""
        owned = []
        for watch in self._watches:
            baseline = watch.baseline()
            if baseline is None or watch.tally is not None:
                continue  # no baseline yet, or another cleanup of this driver counts
            watch.tally = _Tally(baseline * SLACK)
            owned.append(watch)
        self._tallies = [w.tally for w in owned if w.tally is not None]
        self._seen = self._window()
        try:
            yield
        finally:
            for watch in owned:
                watch.tally = None
            self._tallies = []

    def _ops(self) -> int:
        return sum(sum(t.total) for t in self._tallies)

    def _window(self) -> tuple[float, int]:
        return sum(t.excess() for t in self._tallies), self._ops()

    async def pause(self, elapsed: float, floor: Callable[[float], Awaitable[None]]) -> None:
        """Between two batches: the dialect's own pause, then the app's latency's.

        Args:
            elapsed: seconds the batch took.
            floor: the dialect's pause, given `elapsed`.
        """
        if not self._tallies:
            await floor(elapsed)
            return
        ended = time.perf_counter()
        for tally in self._tallies:
            tally.in_batch = False
            tally.batch_ended = ended
        try:
            await floor(elapsed)
            excess, ops = self._window()
            seen_excess, seen_ops = self._seen
            if excess - seen_excess > max(1.0, BUDGET * (ops - seen_ops)):
                self.size = max(self.smallest, self.size // 2)
            else:
                self.size = min(self.largest, self.size + max(1, self.size // 8))
            waited, longest = 0.0, min(MAX_WAIT, WAIT_RATIO * elapsed)
            while any(t.over_budget() for t in self._tallies) and waited < longest:
                before = self._ops()
                await asyncio.sleep(STEP)
                waited += STEP
                if self._ops() == before:
                    break  # the app sent nothing meanwhile: there is nobody to slow down
            self.waited += waited
        finally:
            for tally in self._tallies:
                tally.in_batch = True
        # Operations slowed while the cleanup waited are not the next batch's doing.
        self._seen = self._window()
