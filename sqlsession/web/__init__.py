"""Sessions for web apps, on any driver: the `Session` mapping, the store, the ASGI middleware.

For Starlette and FastAPI::

    from sqlsession import session_drivers
    from sqlsession.web import SessionMiddleware

    app.add_middleware(SessionMiddleware, driver=session_drivers.sql())

Another framework's integration loads and commits sessions with `SessionStore` (the
middleware is one such integration, in `sqlsession.web.asgi`) and reads `Session.accessed`
and `Session.modified`. Nothing here imports a web framework.
"""

from ._crypto import generate_encryption_key
from ._flash import Flash
from .asgi import SessionMiddleware, get_session
from .csrf import CSRFMiddleware
from .devices import DeviceSession, end_user_session, list_user_sessions
from .session import Clock, Session
from .store import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_SIZE,
    CookieChange,
    SessionStore,
    end_user_sessions,
)

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_SIZE",
    "CSRFMiddleware",
    "Clock",
    "CookieChange",
    "DeviceSession",
    "Flash",
    "Session",
    "SessionMiddleware",
    "SessionStore",
    "end_user_session",
    "end_user_sessions",
    "generate_encryption_key",
    "get_session",
    "list_user_sessions",
]
