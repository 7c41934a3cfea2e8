"""Testing kit: the driver contract as test classes, and session helpers for app tests.

Needs pytest, pytest-asyncio and hypothesis (``pip install 'sqlsession-store[testing]'``);
importing `sqlsession` itself never imports them.

For a driver's author, subclass `DriverContract` (and `InputValidationContract` if the
driver keeps sqlsession's input rules) and provide one ``driver_factory`` fixture::

    class TestMyDriver(DriverContract):
        @pytest.fixture
        def driver_factory(self):
            return lambda clock, **options: MyDriver(clock=clock, **options)

For an app's author, the pytest plugin (installed with the package) provides the
``client_sessions`` fixture, a `ClientSessions`: sign a ``TestClient`` in or give it
session data without going through the UI, and read the session a response left.
"""

from ._apps import ClientSessions, find_session_middleware
from ._clock import FakeClock
from ._contract import JSON_VALUES, ROUND_TRIPS, DriverContract
from ._fixtures import DriverFactory, MakeDriver, needs
from ._validation import BAD_KEYS, BAD_TTLS, BAD_VALUES, InputValidationContract

__all__ = [
    "BAD_KEYS",
    "BAD_TTLS",
    "BAD_VALUES",
    "JSON_VALUES",
    "ROUND_TRIPS",
    "ClientSessions",
    "DriverContract",
    "DriverFactory",
    "FakeClock",
    "InputValidationContract",
    "MakeDriver",
    "find_session_middleware",
    "needs",
]
