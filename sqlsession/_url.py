"""Database URL selection and normalisation, without importing SQLAlchemy."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from .errors import ConfigError

ENV_VAR = "SQLSESSION_URL"
DEFAULT_FILE = "sqlsession.db"
DEFAULT_URL = f"sqlite+aiosqlite:///{DEFAULT_FILE}"

UrlOrigin = Literal["given", "environment", "default"]

# The URL table: every scheme we accept, mapped to the async driver that serves it. The
# part before "+" names the dialect module (sqlsession/drivers/sql/dialects/<name>.py).
_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mysql+asyncmy": "mysql+asyncmy",
    "mariadb": "mysql+asyncmy",
    "mariadb+asyncmy": "mysql+asyncmy",
}
_EXAMPLES = "'sqlite:///sessions.db', 'postgresql://user@host/db' or 'mysql://user@host/db'"


def normalize_url(url: object) -> str:
    """Map a database URL to the async SQLAlchemy URL we connect with.

    ``sqlite:///x.db`` becomes ``sqlite+aiosqlite:///x.db``; ``postgres://`` and
    ``postgresql://`` (as hosting platforms hand them out) become
    ``postgresql+asyncpg://``, and their ``?sslmode=`` becomes asyncpg's ``?ssl=``;
    ``mysql://`` and ``mariadb://`` become ``mysql+asyncmy://`` with ``charset=utf8mb4``
    unless the URL names a charset.

    Raises:
        ConfigError: the URL is not a string or names a database we do not support.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"Database URL must look like {_EXAMPLES}, got {redact_url(str(url))!r}.")
    scheme, rest = url.split("://", 1)
    target = _SCHEMES.get(scheme.lower())
    if target is None:
        raise ConfigError(
            f"Unsupported database URL scheme {scheme!r} in {redact_url(url)!r}: use sqlite:// "
            "(sqlite+aiosqlite://), postgresql:// (postgres://, postgresql+asyncpg://) or "
            "mysql:// (mariadb://, mysql+asyncmy://)."
        )
    if target.startswith("sqlite") and not rest.startswith("/"):
        raise ConfigError(
            f"A SQLite URL has three slashes before a relative path and four before an "
            f"absolute one ('sqlite:///sessions.db'), got {redact_url(url)!r}."
        )
    if target == "postgresql+asyncpg":
        rest = _hosts_to_query(rest)
        if "?" in rest:
            rest = _libpq_to_asyncpg(rest)
    if target == "mysql+asyncmy":
        rest = _with_utf8mb4(rest)
    full = f"{target}://{rest}"
    split_query(full)  # refuses unknown parameters and bad values
    return full


def dialect_name(url: str) -> str:
    """The dialect of a normalised URL: ``sqlite``, ``postgresql`` or ``mysql``."""
    return url.split("://", 1)[0].split("+", 1)[0]


def _with_utf8mb4(rest: str) -> str:
    """Ask for utf8mb4 unless the URL names a charset: MySQL's "utf8" has no emoji."""
    location, _, query = rest.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name == "charset" for name, _ in pairs):
        pairs.append(("charset", "utf8mb4"))
    return f"{location}?{urlencode(pairs)}"


def _libpq_to_asyncpg(rest: str) -> str:
    """Rename libpq's ``sslmode`` (in URLs platforms hand out) to asyncpg's ``ssl``.

    asyncpg takes the same modes (disable, allow, prefer, require, verify-ca,
    verify-full) under another name, and refuses ``sslmode``.
    """
    location, _, query = rest.partition("?")
    pairs = [("ssl" if name == "sslmode" else name, value) for name, value in parse_qsl(query)]
    return f"{location}?{urlencode(pairs)}"


def _hosts_to_query(rest: str) -> str:
    """Move libpq's multi-host form (``h1:5432,h2:5432``) to SQLAlchemy's ``?host=`` list.

    SQLAlchemy cannot parse several hosts in the URL's authority; it takes them as
    repeated ``host=`` query parameters (``?host=h1:5432&host=h2:5432``) and hands asyncpg
    the list, which tries them in order (with ``target_session_attrs``).
    """
    authority, slash, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if "," not in hosts:
        return rest
    location, _, query = path.partition("?")
    pairs = [("host", host) for host in hosts.split(",") if host]
    pairs += parse_qsl(query, keep_blank_values=True)
    return f"{userinfo}{at}{slash}{location}?{urlencode(pairs)}"


@dataclass(frozen=True)
class QuerySettings:
    """What sqlsession reads from a URL's query itself, typed (None: not in the URL)."""

    connect_timeout: float | None = None
    statement_timeout: float | None = None
    prepared_statements: bool | None = None


# Query parameters sqlsession reads and removes from the URL, with the setting each
# sets: libpq's and our names, asyncpg's (timeout, command_timeout), and the
# statement-cache sizes pgbouncer guides give (0 turns prepared statements off).
_OWN_PARAMETERS = {
    "postgresql": {
        "connect_timeout": "connect_timeout",
        "timeout": "connect_timeout",
        "statement_timeout": "statement_timeout",
        "command_timeout": "statement_timeout",
        "statement_cache_size": "prepared_statements",
        "prepared_statement_cache_size": "prepared_statements",
    },
    "mysql": {"connect_timeout": "connect_timeout", "statement_timeout": "statement_timeout"},
}
# Passed on to the database driver, which takes them as the strings they are.
_DRIVER_PARAMETERS = {
    "postgresql": {
        "application_name",
        "gsslib",
        "host",
        "krbsrvname",
        "passfile",
        "password",
        "ssl",
        "target_session_attrs",
    },
    "mysql": {
        "charset",
        "local_infile",
        "password",
        "read_timeout",
        "ssl_ca",
        "ssl_capath",
        "ssl_cert",
        "ssl_check_hostname",
        "ssl_cipher",
        "ssl_key",
        "unix_socket",
    },
}


def split_query(url: str) -> tuple[str, QuerySettings]:
    """Take sqlsession's own parameters out of a normalised URL's query, typed.

    SQLite URLs are returned as they are (their query holds SQLite's own options).

    Returns:
        The URL without those parameters, and their values.

    Raises:
        ConfigError: the query names a parameter neither sqlsession nor the database
            driver takes, names one twice, or has a value of the wrong type. The message
            names parameters, never values (one may be a password).
    """
    dialect = dialect_name(url)
    own = _OWN_PARAMETERS.get(dialect)
    if own is None or "?" not in url:
        return url, QuerySettings()
    location, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    passed = _DRIVER_PARAMETERS[dialect]
    unknown = sorted({name for name, _ in pairs if name not in own and name not in passed})
    if unknown:
        raise ConfigError(
            f"Unknown query parameter(s) {unknown} in the {dialect} URL "
            f"{redact_url(location)}; sqlsession takes {sorted(own)}, and passes "
            f"{sorted(passed)} to the database driver."
        )
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1 and name != "host"})
    if repeated:
        raise ConfigError(f"Query parameter(s) {repeated} appear more than once in the URL.")
    settings: dict[str, Any] = {}
    for name, value in pairs:
        setting = own.get(name)
        if setting == "prepared_statements":
            settings[setting] = _cache_size(name, value) > 0
        elif setting is not None:
            settings[setting] = _seconds(name, value)
    rest = [(name, value) for name, value in pairs if name not in own]
    return (f"{location}?{urlencode(rest)}" if rest else location), QuerySettings(**settings)


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{name} in the URL must be a number of seconds above 0 (2.5 or 30).")
    # asyncpg takes connect and command timeouts in seconds; libpq's connect_timeout
    # too. PostgreSQL's own statement_timeout setting is in milliseconds: not here.
    return seconds


def _cache_size(name: str, value: str) -> int:
    if not value.isdigit():
        raise ConfigError(f"{name} in the URL must be a whole number (0 turns the cache off).")
    return int(value)


def url_origin(url: str | None) -> UrlOrigin:
    """Where `resolve_url` takes the URL from: `url` itself, ``$SQLSESSION_URL``, or the default."""
    if url is not None:
        return "given"
    return "environment" if os.environ.get(ENV_VAR) else "default"


def default_database_path() -> str:
    """The absolute path of the default SQLite file, ``sqlsession.db`` in the working directory."""
    return os.path.abspath(DEFAULT_FILE)


def resolve_url(url: str | None) -> str:
    """Return the normalised URL: `url`, else ``$SQLSESSION_URL``, else the SQLite default."""
    if url is None:
        url = os.environ.get(ENV_VAR) or DEFAULT_URL
    return normalize_url(url)


def redact_url(url: str) -> str:
    """Hide the passwords in a URL: ``user:password@``, and ``password=`` or ``passwd=``.

    Also in a string that is not a URL we can parse (``postgresql:/user:pw@host/db``,
    one slash, or no scheme at all): whatever precedes the last ``@`` is user info, and
    everything in it after the first ``:`` is hidden.
    """
    parsed = _URL_START.match(url)
    if parsed is not None:
        head, rest = parsed.group(), url[parsed.end() :]
    else:
        head, rest = _unparsed_head(url)
    # The last @ ends the user info, whatever a password holds (/, ? or @ unescaped).
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = f"{userinfo.split(':', 1)[0]}:***"
    location, question, query = host.partition("?")
    if question:
        query = "&".join(_redact_parameter(part) for part in query.split("&"))
    return f"{head}{userinfo}{at}{location}{question}{query}"


# A URL we can parse starts with its scheme and "://"; in anything else, a scheme is a
# name followed by ":" and slashes, or a name we know followed by ":".
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_LOOSE_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(/*)")


def _unparsed_head(url: str) -> tuple[str, str]:
    """Split what looks like a scheme off a string that is not a URL we can parse."""
    loose = _LOOSE_SCHEME.match(url)
    if loose is not None and (loose.group(2) or loose.group(1).lower() in _SCHEMES):
        return loose.group(), url[loose.end() :]
    return "", url


def _redact_parameter(part: str) -> str:
    name, equals, _value = part.partition("=")
    secret = "password" in name.lower() or name.lower() in ("passwd", "pwd")
    return f"{name}=***" if equals and secret else part


# Option names whose value is a secret, wherever they appear in a driver config.
_SECRET_NAMES = ("password", "passwd", "secret", "token", "credential", "api_key", "private")


def redact_config(value: Any, name: str = "") -> Any:
    """A copy of a driver config (or a value in it) fit for a repr or a message.

    A value whose name says it is a secret (``password``, ``token``, ...) becomes
    ``"***"``; a URL (named ``url`` or ``dsn``, or any string with ``://``) is
    redacted with `redact_url`. Dicts and lists are copied through.
    """
    if isinstance(value, dict):
        return {k: redact_config(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_config(v, name) for v in value]
    if isinstance(value, str):
        lowered = name.lower()
        if any(word in lowered for word in _SECRET_NAMES):
            return "***"
        if "url" in lowered or "dsn" in lowered or "://" in value:
            return redact_url(value)
    return value


def describe_table(url: str | None, table: str, schema: str | None) -> str:
    """``'schema.table' in <url without password>``, for messages (`url` None: the default)."""
    name = f"{schema}.{table}" if schema else table
    return f"{name!r} in {redact_url(resolve_url(url))}"
