"""The stores measured side by side, each behind the same five operations.

Every contender stores the same JSON sessions under the same keys with the same
lifetime. The raw-driver contenders run the SQL sqlsession runs (an upsert, a read that
filters expiry, a delete, an update of the expiry) on the same table, and encode with
the standard library's json, the least any store has to do; the peers go through their
own public APIs and their own tables in the same database.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

from _common import (
    TABLE,
    TTL,
    asyncmy_args,
    asyncpg_dsn,
    dumps,
    is_mysql,
    is_postgres,
    now_ms,
    sqlite_path,
)

OPS = ("set_item", "get_item", "get_miss", "touch", "remove_item")


class Contender:
    """One store. Async contenders implement the coroutines; threaded ones the `*_sync`."""

    name = ""
    ops: tuple[str, ...] = OPS
    threaded = False  # operations are blocking calls, run on worker threads
    concurrent = True  # measured in the concurrent run too

    async def start(self, concurrency: int) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def set(self, key: str, value: Any) -> None:
        raise NotImplementedError

    async def get(self, key: str) -> Any:
        raise NotImplementedError

    async def remove(self, key: str) -> None:
        raise NotImplementedError

    async def touch(self, key: str) -> bool:
        raise NotImplementedError

    async def seed(self, key: str, value: Any) -> None:
        await self.set(key, value)


def _sql(table: str, key: str = "key") -> dict[str, str]:
    # The statements sqlsession runs, written out by hand for the raw drivers. `key` is
    # the key column as the database spells it (MySQL reserves the word).
    live = "(expires_at IS NULL OR expires_at > {now})"
    return {
        "set": f"INSERT INTO {table} ({key}, value, expires_at) VALUES ({{k}}, {{v}}, {{exp}}) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
        "get": f"SELECT value FROM {table} WHERE {key} = {{k}} AND {live}",
        "remove": f"DELETE FROM {table} WHERE {key} = {{k}}",
        "touch": f"UPDATE {table} SET expires_at = {{exp}} WHERE {key} = {{k}} AND {live}",
    }


def _pg_sql(table: str) -> dict[str, str]:
    return {
        # Each statement uses either "now" or "v" as its second parameter, never both.
        name: sql.format(k="$1", now="$2", v="$2", exp="$3")
        for name, sql in _sql(table).items()
    }


def _mysql_sql(table: str) -> dict[str, str]:
    """The statements for asyncmy, whose placeholders are positional ``%s``.

    The parameters go in the order they appear: set (k, v, exp), get (k, now),
    remove (k), touch (exp, k, now). The upsert is MySQL's; ``VALUES(col)`` rather than
    MySQL 8.0.19's row alias, which MariaDB lacks (sqlsession writes it the same way).
    """
    sql = _sql(table, key="`key`")
    sql["set"] = (
        f"INSERT INTO {table} (`key`, value, expires_at) VALUES ({{k}}, {{v}}, {{exp}}) "
        "ON DUPLICATE KEY UPDATE value = VALUES(value), expires_at = VALUES(expires_at)"
    )
    return {name: s.format(k="%s", now="%s", v="%s", exp="%s") for name, s in sql.items()}


class SQLSession(Contender):
    """sqlsession's SQL driver, as an application would build it."""

    name = "sqlsession"

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options = options
        if options:
            self.name = "sqlsession " + " ".join(f"{k}={v}" for k, v in options.items())

    async def start(self, concurrency: int) -> None:
        from sqlsession.drivers.sql import SQLDriver

        self.driver = SQLDriver(self.url, table=TABLE, ttl=TTL, **self.options)

    async def stop(self) -> None:
        await self.driver.dispose()

    async def set(self, key: str, value: Any) -> None:
        await self.driver.set_item(key, value)

    async def get(self, key: str) -> Any:
        return await self.driver.get_item(key)

    async def remove(self, key: str) -> None:
        await self.driver.remove_item(key)

    async def touch(self, key: str) -> bool:
        return await self.driver.touch(key)


class AsyncpgHeld(Contender):
    """asyncpg on one connection held for the whole run (statements cached by asyncpg)."""

    name = "asyncpg (held connection)"
    concurrent = False  # one asyncpg connection runs one query at a time

    def __init__(self, url: str) -> None:
        self.dsn = asyncpg_dsn(url)
        self.sql = _pg_sql(TABLE)

    async def start(self, concurrency: int) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.dsn)

    async def stop(self) -> None:
        await self.conn.close()

    async def set(self, key: str, value: Any) -> None:
        await self.conn.execute(self.sql["set"], key, dumps(value), now_ms() + int(TTL * 1000))

    async def get(self, key: str) -> Any:
        text = await self.conn.fetchval(self.sql["get"], key, now_ms())
        return None if text is None else json.loads(text)

    async def remove(self, key: str) -> None:
        await self.conn.execute(self.sql["remove"], key)

    async def touch(self, key: str) -> bool:
        now = now_ms()
        status = await self.conn.execute(self.sql["touch"], key, now, now + int(TTL * 1000))
        return bool(status != "UPDATE 0")


class AsyncpgPool(AsyncpgHeld):
    """asyncpg's own pool, one acquire per operation."""

    name = "asyncpg (pool, acquire per op)"
    concurrent = True

    async def start(self, concurrency: int) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(self.dsn, min_size=concurrency, max_size=concurrency)

    async def stop(self) -> None:
        await self.pool.close()

    async def set(self, key: str, value: Any) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(self.sql["set"], key, dumps(value), now_ms() + int(TTL * 1000))

    async def get(self, key: str) -> Any:
        async with self.pool.acquire() as conn:
            text = await conn.fetchval(self.sql["get"], key, now_ms())
        return None if text is None else json.loads(text)

    async def remove(self, key: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(self.sql["remove"], key)

    async def touch(self, key: str) -> bool:
        now = now_ms()
        async with self.pool.acquire() as conn:
            status = await conn.execute(self.sql["touch"], key, now, now + int(TTL * 1000))
        return bool(status != "UPDATE 0")


class AsyncmyHeld(Contender):
    """asyncmy on one connection held for the whole run, in autocommit.

    Keys are sent as the str they are: the key column is VARBINARY, and the server
    converts the UTF-8 text, as it does for sqlsession's. Parameters are interpolated
    on the client (asyncmy's text protocol), as they are under sqlsession, and each
    statement runs on a fresh cursor, as sqlsession's fast path does.
    """

    name = "asyncmy (held connection)"
    concurrent = False  # one MySQL connection runs one query at a time

    def __init__(self, url: str) -> None:
        self.connect_args = asyncmy_args(url)
        self.sql = _mysql_sql(TABLE)

    async def start(self, concurrency: int) -> None:
        import asyncmy

        self.conn = await asyncmy.connect(**self.connect_args)

    async def stop(self) -> None:
        await self.conn.ensure_closed()

    async def _run(self, name: str, args: tuple[Any, ...], fetch: bool = False) -> Any:
        return await self._execute(self.conn, name, args, fetch)

    async def _execute(self, conn: Any, name: str, args: tuple[Any, ...], fetch: bool) -> Any:
        async with conn.cursor() as cursor:
            await cursor.execute(self.sql[name], args)
            if not fetch:
                return cursor.rowcount
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def set(self, key: str, value: Any) -> None:
        await self._run("set", (key, dumps(value), now_ms() + int(TTL * 1000)))

    async def get(self, key: str) -> Any:
        text = await self._run("get", (key, now_ms()), fetch=True)
        return None if text is None else json.loads(text)

    async def remove(self, key: str) -> None:
        await self._run("remove", (key,))

    async def touch(self, key: str) -> bool:
        now = now_ms()
        return bool(await self._run("touch", (now + int(TTL * 1000), key, now)))


class AsyncmyPool(AsyncmyHeld):
    """asyncmy's own pool (`asyncmy.create_pool`), one acquire per operation."""

    name = "asyncmy (pool, acquire per op)"
    concurrent = True

    async def start(self, concurrency: int) -> None:
        import asyncmy

        self.pool = await asyncmy.create_pool(
            minsize=concurrency, maxsize=concurrency, **self.connect_args
        )

    async def stop(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()

    async def _run(self, name: str, args: tuple[Any, ...], fetch: bool = False) -> Any:
        async with self.pool.acquire() as conn:
            return await self._execute(conn, name, args, fetch)


class AiosqliteHeld(Contender):
    """aiosqlite on one held connection, in autocommit, WAL and synchronous=NORMAL.

    Reads use `execute_fetchall` and writes a bare `execute`: one trip to aiosqlite's
    thread per operation, the fewest its public API allows.
    """

    name = "aiosqlite (held connection)"

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self.sql = {
            name: sql.format(k=":k", now=":now", v=":v", exp=":exp")
            for name, sql in _sql(TABLE).items()
        }

    async def start(self, concurrency: int) -> None:
        import aiosqlite

        self.conn = await aiosqlite.connect(self.path, isolation_level=None)
        await self.conn.execute("PRAGMA busy_timeout = 30000")
        await self.conn.execute("PRAGMA journal_mode = WAL")
        await self.conn.execute("PRAGMA synchronous = NORMAL")

    async def stop(self) -> None:
        await self.conn.close()

    async def set(self, key: str, value: Any) -> None:
        params = {"k": key, "v": dumps(value), "exp": now_ms() + int(TTL * 1000)}
        await self.conn.execute(self.sql["set"], params)

    async def get(self, key: str) -> Any:
        rows = await self.conn.execute_fetchall(self.sql["get"], {"k": key, "now": now_ms()})
        return json.loads(rows[0][0]) if rows else None

    async def remove(self, key: str) -> None:
        await self.conn.execute(self.sql["remove"], {"k": key})

    async def touch(self, key: str) -> bool:
        now = now_ms()
        params = {"k": key, "now": now, "exp": now + int(TTL * 1000)}
        cursor = await self.conn.execute(self.sql["touch"], params)
        return bool(cursor.rowcount)


class Redis(Contender):
    """redis-py's asyncio client: SET with PX, GET, DEL, PEXPIRE."""

    name = "redis-py asyncio"
    PREFIX = "sqlsession-bench:"

    async def start(self, concurrency: int) -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis(host="127.0.0.1", port=6379)
        self.ttl_ms = int(TTL * 1000)

    async def stop(self) -> None:
        keys = [k async for k in self.client.scan_iter(match=self.PREFIX + "*", count=1000)]
        if keys:
            await self.client.delete(*keys)
        await self.client.aclose()

    async def set(self, key: str, value: Any) -> None:
        await self.client.set(self.PREFIX + key, dumps(value), px=self.ttl_ms)

    async def get(self, key: str) -> Any:
        text = await self.client.get(self.PREFIX + key)
        return None if text is None else json.loads(text)

    async def remove(self, key: str) -> None:
        await self.client.delete(self.PREFIX + key)

    async def touch(self, key: str) -> bool:
        return bool(await self.client.pexpire(self.PREFIX + key, self.ttl_ms))


async def redis_answers() -> bool:
    """Whether a Redis server answers on 127.0.0.1:6379 (and redis-py is installed)."""
    try:
        import redis.asyncio
    except ImportError:
        return False
    client = redis.asyncio.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


class AdvancedAlchemy(Contender):
    """advanced-alchemy's `SQLAlchemyStore` (async SQLAlchemy sessions), its own table.

    It has no operation that only renews an expiry, so `touch` is not measured.
    """

    name = "advanced-alchemy SQLAlchemyStore"
    ops = ("set_item", "get_item", "get_miss", "remove_item")
    TABLE = "bench_aa_store"
    _model: Any = None

    def __init__(self, url: str) -> None:
        self.url = url

    @classmethod
    def model(cls) -> Any:
        # Declared once: a second declaration of the same table would be refused.
        if cls._model is None:
            from advanced_alchemy.extensions.litestar.store import StoreModelMixin

            class BenchStoreItem(StoreModelMixin):
                __tablename__ = cls.TABLE

            cls._model = BenchStoreItem
        return cls._model

    async def start(self, concurrency: int) -> None:
        from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
        from advanced_alchemy.extensions.litestar.store import SQLAlchemyStore
        from sqlalchemy.ext.asyncio import create_async_engine

        # The same pool size sqlsession uses, so that neither side queues for connections.
        kwargs: dict[str, Any] = {"pool_size": max(concurrency, 5)}
        if is_postgres(self.url) or is_mysql(self.url):
            kwargs["max_overflow"] = concurrency
        self.engine = create_async_engine(self.url, **kwargs)
        model = self.model()
        async with self.engine.begin() as conn:
            await conn.run_sync(model.__table__.drop, checkfirst=True)
            await conn.run_sync(model.__table__.create)
        self.store = SQLAlchemyStore(
            SQLAlchemyAsyncConfig(engine_instance=self.engine), model=model, namespace="bench"
        )
        self.ttl = int(TTL)

    async def stop(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(self.model().__table__.drop, checkfirst=True)
        await self.engine.dispose()

    async def set(self, key: str, value: Any) -> None:
        await self.store.set(key, dumps(value), expires_in=self.ttl)

    async def get(self, key: str) -> Any:
        data = await self.store.get(key)
        return None if data is None else json.loads(data)

    async def remove(self, key: str) -> None:
        await self.store.delete(key)


class Django(Contender):
    """Django's database session backend: `SessionStore.save()`, `.load()`, `.delete()`.

    Django's ORM is synchronous and refuses to run inside an event loop, so its
    operations run as blocking calls on worker threads, one persistent connection per
    thread (as under a threaded WSGI server); that is the fastest Django gets. The
    session's data is handed to the store directly before `save()`, sparing it the
    read that `save()` would otherwise do first. It has no expiry-only update, so
    `touch` is not measured.
    """

    name = "Django db sessions"
    ops = ("set_item", "get_item", "get_miss", "remove_item")
    threaded = True
    TABLE = "bench_django_session"

    def __init__(self, url: str) -> None:
        if is_mysql(url):
            # Django's MySQL backend runs on mysqlclient (a C extension built against
            # libmysqlclient), which the bench extra does not install.
            try:
                import MySQLdb  # noqa: F401
            except ImportError as exc:
                raise ImportError(
                    f"{exc}; Django's MySQL backend needs mysqlclient (pip install mysqlclient)"
                ) from exc
        self.url = url

    def _configure(self) -> None:
        import django
        from django.conf import settings
        from sqlalchemy.engine import make_url

        if not settings.configured:
            u = make_url(self.url)
            if is_postgres(self.url) or is_mysql(self.url):
                db = {
                    "ENGINE": "django.db.backends."
                    + ("postgresql" if is_postgres(self.url) else "mysql"),
                    "NAME": u.database,
                    "USER": u.username or "",
                    "PASSWORD": u.password or "",
                    "HOST": u.host or "",
                    "PORT": str(u.port or ""),
                }
                if is_mysql(self.url):
                    # utf8mb4, and the isolation level sqlsession's connections use.
                    db["OPTIONS"] = {"charset": "utf8mb4", "isolation_level": "read committed"}
            else:
                db = {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": sqlite_path(self.url),
                    "OPTIONS": {
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                        "timeout": 30,
                    },
                }
            db["CONN_MAX_AGE"] = None  # persistent connections, as in production
            settings.configure(
                DATABASES={"default": db},
                INSTALLED_APPS=["django.contrib.sessions"],
                SECRET_KEY="sqlsession-benchmark-" + "x" * 40,
                USE_TZ=True,
                SESSION_COOKIE_AGE=int(TTL),
            )
            django.setup()
        from django.contrib.sessions.models import Session

        # Its own table, so the benchmark never touches an app's django_session.
        Session._meta.db_table = self.TABLE
        self.store_class = __import__(
            "django.contrib.sessions.backends.db", fromlist=["SessionStore"]
        ).SessionStore

    def _create_table(self) -> None:
        from django.contrib.sessions.models import Session
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.TABLE}")
        with connection.schema_editor() as editor:
            editor.create_model(Session)

    def _drop_table(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.TABLE}")
        connection.close()

    async def start(self, concurrency: int) -> None:
        self.pool = _ThreadPool(concurrency)
        self._configure()
        await self.pool.run(self._create_table)

    async def stop(self) -> None:
        await self.pool.run(self._drop_table)
        await self.pool.close()

    def seed_sync(self, key: str, value: Any) -> None:
        store = self.store_class(session_key=key)
        store._session_cache = value
        store.save(must_create=True)

    def set_sync(self, key: str, value: Any) -> None:
        store = self.store_class(session_key=key)
        store._session_cache = value
        store.modified = True
        store.save()

    def get_sync(self, key: str) -> Any:
        data = self.store_class(session_key=key).load()
        return data or None

    def remove_sync(self, key: str) -> None:
        self.store_class().delete(key)


class _ThreadPool:
    """Worker threads that each keep their own Django connection, closed at the end."""

    def __init__(self, size: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.size = size
        self.executor = ThreadPoolExecutor(size, thread_name_prefix="bench-django")
        self._threads: set[int] = set()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def close(self) -> None:
        def close_connection(barrier: threading.Barrier) -> None:
            from django.db import connections

            connections.close_all()
            barrier.wait(timeout=10)  # one call on every worker thread

        barrier = threading.Barrier(self.size)
        await asyncio.gather(*(self.run(close_connection, barrier) for _ in range(self.size)))
        self.executor.shutdown()
