"""The pytest plugin sqlsession installs (entry point ``pytest11``): fixtures for app tests.

Loaded by every pytest run where sqlsession is installed, so it imports nothing but
pytest until a fixture is used (the testing kit needs pytest-asyncio and hypothesis,
which an app's test environment may not have).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import ClientSessions, FakeClock


@pytest.fixture
def client_sessions() -> ClientSessions:
    """Put a test client into a session, or read the one it holds (`ClientSessions`)."""
    from .testing._apps import ClientSessions

    return ClientSessions()


@pytest.fixture
def session_clock() -> FakeClock:
    """A clock to pass as ``clock=`` to a driver or ``SessionMiddleware``; tests advance() it."""
    from .testing._clock import FakeClock

    return FakeClock()
