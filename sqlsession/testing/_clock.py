"""A clock that tests move by hand, so expiry is tested without sleeping."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """Seconds since the epoch that only change when a test says so; starts in 2026.

    Pass it wherever sqlsession takes a ``clock`` (a driver, `SessionStore`,
    ``SessionMiddleware``), then call `advance` instead of sleeping.

    Args:
        start: the time to start at, in seconds since the epoch.
    """

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        self.now += seconds

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now!r})"
