"""What every part of the harness shares: the data, the table, timing and percentiles."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import make_url

from sqlsession._url import normalize_url

TABLE = "bench_sessions"
TTL = 3600.0  # seconds; every contender writes with this lifetime


def session_value(i: int) -> dict[str, Any]:
    """A realistic web session of about 1 KB of JSON (a user, a CSRF token, a cart)."""
    rng = random.Random(i)
    return {
        "user_id": 100_000 + i,
        "csrf": secrets.token_urlsafe(32),
        "login_at": 1_700_000_000 + rng.randrange(10**6),
        "roles": ["customer", "newsletter"],
        "locale": "en-GB",
        "flash": [{"level": "info", "text": "Welcome back!"}],
        "cart": [
            {
                "sku": f"SKU-{rng.randrange(10**6):06d}",
                "name": "Stainless steel water bottle, 750 ml",
                "qty": rng.randrange(1, 4),
                "price": round(rng.uniform(3, 80), 2),
            }
            for _ in range(6)
        ],
        "prefs": {"theme": "dark", "currency": "EUR", "tz": "Europe/Berlin", "beta": False},
        "recently_viewed": [rng.randrange(10**7) for _ in range(12)],
    }


def make_keys(n: int) -> list[str]:
    """`n` distinct session keys of 32 characters (Django's key column holds 40 at most)."""
    return [secrets.token_hex(16) for _ in range(n)]


def dumps(value: Any) -> str:
    """JSON as the raw contenders write it: compact, the same text sqlsession stores."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def now_ms() -> int:
    return round(time.time() * 1000)


@dataclass
class Timing:
    """Latencies (ns) of one operation and the wall time of the whole run."""

    latencies: list[int] = field(default_factory=list)
    wall: float = 0.0

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        n = len(lat)
        return {
            "ops": n,
            "ops_per_s": n / self.wall if self.wall else 0.0,
            "p50_us": lat[n // 2] / 1000 if n else 0.0,
            "p99_us": lat[min(n - 1, (n * 99) // 100)] / 1000 if n else 0.0,
        }


def percentile(values: list[int], q: float) -> float:
    """The `q`-th percentile of `values` (ns), in microseconds."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] / 1000


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


def is_mysql(url: str) -> bool:
    """MySQL or MariaDB (sqlsession serves both through asyncmy as ``mysql+asyncmy``)."""
    return url.startswith(("mysql", "mariadb"))


def sqlite_path(url: str) -> str:
    database = make_url(url).database
    assert database, "the SQLite URL needs a file"
    return os.path.abspath(database)


def asyncpg_dsn(url: str) -> str:
    """The libpq-style DSN asyncpg and psycopg accept, from a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# What sqlsession's MySQL engine sets on each connection it opens: the raw asyncmy
# contenders and the bulk loads run with it too, so the server locks as it does for
# sqlsession (no gap locks on the upsert's duplicate check at READ COMMITTED).
MYSQL_SETUP = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"


def asyncmy_args(url: str) -> dict[str, Any]:
    """`asyncmy.connect` arguments for a MySQL URL, set up as sqlsession's connections are.

    Autocommit, the URL's charset (utf8mb4 once normalised), and FOUND_ROWS, which
    SQLAlchemy's asyncmy dialect sets so that an UPDATE counts the rows it matched
    rather than the rows it changed (touch then reports a live key as found).
    """
    from asyncmy.constants import CLIENT

    u = make_url(url)
    return {
        "host": u.host or "127.0.0.1",
        "port": u.port or 3306,
        "user": u.username or "root",
        "password": u.password or "",
        "database": u.database,
        "charset": str(u.query.get("charset", "utf8mb4")),
        "autocommit": True,
        "client_flag": CLIENT.FOUND_ROWS,
        "init_command": MYSQL_SETUP,
    }


def normalized(url: str) -> str:
    return normalize_url(url)


async def migrate(url: str, table: str) -> None:
    """Create the session table through sqlsession's own migrations."""
    from sqlsession._migrate import upgrade

    await asyncio.to_thread(upgrade, url, table=table)


async def unmigrate(url: str, table: str) -> None:
    """Drop the session table and its version table again."""
    from sqlsession._migrate import downgrade

    await asyncio.to_thread(downgrade, url, revision="base", table=table)
    # alembic leaves its (now empty) version table behind; the harness leaves nothing.
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from sqlsession._table import version_table_name

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {version_table_name(table)}"))
    finally:
        await engine.dispose()
