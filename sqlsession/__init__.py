"""Server-side web sessions stored in SQL, with Astro-style session drivers.

The public API is re-exported here; importing it does not import SQLAlchemy, asyncpg or
aiosqlite (those load with the SQL driver's runtime half). The web layer (`Session`, the
ASGI `SessionMiddleware`) is `sqlsession.web`.
"""

from .config import SessionDriverConfig, session_drivers
from .driver import (
    Entry,
    SessionDriver,
    SupportsAddItem,
    SupportsCleanup,
    SupportsClear,
    SupportsDeleteItem,
    SupportsDispose,
    SupportsEntries,
    SupportsExpiry,
    SupportsHasItem,
    SupportsJSONText,
    SupportsKeys,
    SupportsMany,
    SupportsMerge,
    SupportsMergeExisting,
    SupportsPrefixCleanup,
)
from .errors import (
    ConfigError,
    ConflictError,
    CorruptValueError,
    DatabaseUnavailableError,
    DriverLoadError,
    InvalidKeyError,
    InvalidLabelError,
    InvalidTTLError,
    OperationTimeoutError,
    ReadOnlyDatabaseError,
    SchemaError,
    SessionError,
    SessionTooLargeError,
    StorageError,
    ValueNotSerializableError,
)
from .loader import load_driver, open_driver

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConflictError",
    "CorruptValueError",
    "DatabaseUnavailableError",
    "DriverLoadError",
    "Entry",
    "InvalidKeyError",
    "InvalidLabelError",
    "InvalidTTLError",
    "OperationTimeoutError",
    "ReadOnlyDatabaseError",
    "SchemaError",
    "SessionDriver",
    "SessionDriverConfig",
    "SessionError",
    "SessionTooLargeError",
    "StorageError",
    "SupportsAddItem",
    "SupportsCleanup",
    "SupportsClear",
    "SupportsDeleteItem",
    "SupportsDispose",
    "SupportsEntries",
    "SupportsExpiry",
    "SupportsHasItem",
    "SupportsJSONText",
    "SupportsKeys",
    "SupportsMany",
    "SupportsMerge",
    "SupportsMergeExisting",
    "SupportsPrefixCleanup",
    "ValueNotSerializableError",
    "__version__",
    "load_driver",
    "open_driver",
    "session_drivers",
]
