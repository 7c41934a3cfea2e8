"""The SQL driver (`SQLDriver`) and its factory, the runtime half of `session_drivers.sql`.

``driver.py`` holds what every database shares; ``dialects/`` holds one module per
database. ``sqlsession.drivers.sql`` is the entrypoint `session_drivers.sql` names.
"""

from .driver import SQLDriver, create_driver

__all__ = ["SQLDriver", "create_driver"]
