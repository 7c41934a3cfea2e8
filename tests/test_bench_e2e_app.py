"""The end-to-end benchmark's app (benchmarks/_e2e_app.py) serves its routes right on every
in-process contender, so the harness cannot rot: a contender whose writes do not land or
whose reads change the session would make its figures meaningless.

The harness signs visitors in, then replays the sign-in cookie (wrk keeps no cookies):
a server-side store must count the replayed writes up.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from starlette.testclient import TestClient

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# The Redis contenders' store: the harness's own db number (it is there on CI machines).
REDIS_URL = "redis://127.0.0.1:6379/13"
SQL_FIXTURES = {
    "sqlsession-sqlite": "sqlite_url",
    "sqlsession-postgres": "postgres_url",
    "sqlsession-mariadb": "mysql_url",
}
CONTENDERS = [
    "none",
    "cookie",
    "sqlsession-memory",
    "sqlsession-sqlite",
    pytest.param("sqlsession-postgres", marks=pytest.mark.postgres),
    pytest.param("sqlsession-mariadb", marks=pytest.mark.mysql),
    "starsessions-memory",
    "starsessions-redis",
    "litestar-redis",
]


def load(name: str) -> ModuleType:
    # benchmarks/ is not a package: load the module from its file, under the name the
    # harness's launcher imports it by (dataclasses and the Litestar app look it up).
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    try:
        yield load("_e2e_app")
    finally:
        sys.modules.pop("_e2e_app", None)
        sys.modules.pop("_e2e_litestar", None)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the harness's Redis db, its keys deleted after."""
    import redis

    with redis.Redis.from_url(REDIS_URL) as client:
        try:
            client.ping()
        except redis.RedisError as exc:
            pytest.skip(f"Redis at {REDIS_URL} does not answer ({exc}): start redis-server")
        prefix = f"sqlsession-test-{uuid.uuid4().hex[:12]}:"
        try:
            yield prefix
        finally:
            for key in client.scan_iter(match=prefix + "*"):
                client.delete(key)


@pytest.fixture(params=CONTENDERS)
def contender(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(
    contender: str, request: pytest.FixtureRequest, bench: ModuleType
) -> Iterator[TestClient]:
    url = None
    if contender in SQL_FIXTURES:
        url = request.getfixturevalue(SQL_FIXTURES[contender])
    prefix = bench.Target.redis_prefix
    if contender.endswith("-redis"):
        prefix = request.getfixturevalue("redis_prefix")
    target = bench.Target(sql_url=url, redis_url=REDIS_URL, redis_prefix=prefix)
    if contender == "litestar-redis":
        with warnings.catch_warnings():
            # Litestar imports advanced-alchemy when it is installed (the [bench] extra),
            # whose import warns on SQLAlchemy 2.1; as in test_litestar.py.
            warnings.filterwarnings("ignore", "The declarative_mixin decorator", DeprecationWarning)
            app = load("_e2e_litestar").build_app(target)
    else:
        app = bench.build_app(contender, target)
    with TestClient(app) as test_client:
        yield test_client


def sign_in(client: TestClient, user: int) -> str:
    """Sign `user` in as a new visitor; returns the Cookie header the harness would send."""
    client.cookies.clear()
    response = client.post(f"/signin/{user}")
    assert response.status_code == 200
    set_cookies = response.headers.get_list("set-cookie")
    assert set_cookies
    return "; ".join(header.split(";", 1)[0] for header in set_cookies)


def replay(client: TestClient, method: str, path: str, cookie: str) -> Any:
    """A request with exactly this Cookie header, as wrk sends it (no cookie jar)."""
    client.cookies.clear()
    return client.request(method, path, headers={"Cookie": cookie})


def test_sign_in_read_write_plain(client: TestClient, contender: str) -> None:
    cookie = sign_in(client, 7)
    # read: the whole session is there, and reading changes nothing.
    for _ in range(3):
        response = client.get("/read")
        assert response.status_code == 200
        assert response.text == "user-7 6 0"
    # plain: answered, session untouched.
    assert client.get("/plain").status_code == 200
    # write: counter one up each time, the cart keeps its length.
    assert client.post("/write").text == "1"
    assert client.post("/write").text == "2"
    assert client.get("/read").text == "user-7 6 2"

    if contender == "cookie":
        # The session lives in the cookie: a replayed sign-in cookie is the session as
        # it was signed in, and the harness checks the cookie contender's writes so.
        assert replay(client, "GET", "/read", cookie).text == "user-7 6 0"
        assert replay(client, "POST", "/write", cookie).text == "1"
        return
    # Server-side stores: the sign-in cookie replayed sees and counts up the stored session.
    assert replay(client, "GET", "/read", cookie).text == "user-7 6 2"
    assert replay(client, "POST", "/write", cookie).text == "3"
    assert replay(client, "GET", "/plain", cookie).status_code == 200
    assert replay(client, "GET", "/read", cookie).text == "user-7 6 3"


def test_visitors_have_sessions_of_their_own(client: TestClient, contender: str) -> None:
    first = sign_in(client, 1)
    second = sign_in(client, 2)
    assert first != second
    if contender == "cookie":
        return  # no server-side state to share
    assert replay(client, "POST", "/write", first).text == "1"
    assert replay(client, "POST", "/write", first).text == "2"
    assert replay(client, "GET", "/read", second).text == "user-2 6 0"
    assert replay(client, "GET", "/read", first).text == "user-1 6 2"


def test_the_session_is_about_930_bytes_and_stays_so(bench: ModuleType) -> None:
    import json

    session = bench.profile(12345)
    size = len(json.dumps(session, separators=(",", ":")))
    assert 900 <= size <= 960
    for _ in range(50):
        bench.write(session)
    assert len(session["cart"]) == bench.CART_KEEP
    assert session["counter"] == 50
    assert abs(len(json.dumps(session, separators=(",", ":"))) - size) <= 10
