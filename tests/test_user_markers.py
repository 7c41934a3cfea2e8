"""Per-user marker rows (sign out everywhere) expire and are cleaned up; user keys are keyed.

A marker lives exactly as long as a session it ends could: ``max_age`` (or a shorter
``idle_timeout``) from the sign-out. Once it is gone, sessions bound after it stay
signed in, and those bound before it have expired.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from sqlsession import ConfigError
from sqlsession.web import SessionStore, end_user_sessions
from tests.conftest import FakeClock
from tests.test_session import reopen

MAX_AGE = 1000


def user_key(user_id: str, secret: bytes | None = None) -> str:
    if secret is None:
        return "u:" + hashlib.sha256(user_id.encode()).hexdigest()
    return "u:" + hmac.new(secret, user_id.encode(), hashlib.sha256).hexdigest()


async def sign_in(store: SessionStore, user: str) -> str:
    session = await store.load([])
    session.bind_user(user)
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    return change.session_id


async def sign_out_everywhere(store: SessionStore, sid: str) -> None:
    session = await reopen(store, sid)
    session.sign_out_everywhere()
    await store.commit(session)


@pytest.mark.parametrize(
    ("idle_timeout", "lifetime"), [(None, MAX_AGE), (300, 300)], ids=["max_age", "idle"]
)
async def test_a_marker_expires_with_the_longest_session_it_can_end_and_cleanup_removes_it(
    driver: Any, clock: FakeClock, idle_timeout: float | None, lifetime: float
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE, idle_timeout=idle_timeout)
    before = await sign_in(store, "ada")
    await sign_out_everywhere(store, await sign_in(store, "ada"))
    clock.advance(1)
    after = await sign_in(store, "ada")
    assert dict(await reopen(store, before)) == {}  # ended by the marker
    clock.advance(lifetime - 1.001)
    assert await driver.has_item(user_key("ada")) is True
    clock.advance(0.001)
    assert await driver.has_item(user_key("ada")) is False
    # Every session bound before the sign-out has expired with it; one bound after stays.
    assert dict(await reopen(store, before)) == {}
    if idle_timeout is None:
        assert (await reopen(store, after)).session_id == after
    # The marker (and the sessions whose time is up) are cleanup's to delete.
    assert await driver.cleanup() >= 1
    assert await driver.get_keys("u:") == []


async def test_end_user_sessions_outside_a_request_writes_an_expiring_marker(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE)
    sid = await sign_in(store, "ada")
    await end_user_sessions(driver, "ada", max_age=MAX_AGE)
    assert dict(await reopen(store, sid)) == {}
    clock.advance(MAX_AGE)
    assert await driver.has_item(user_key("ada")) is False
    await store.end_user_sessions("bob")
    clock.advance(MAX_AGE - 0.001)
    assert await driver.has_item(user_key("bob")) is True
    clock.advance(0.001)
    assert await driver.has_item(user_key("bob")) is False


async def test_with_a_secret_the_user_key_is_a_keyed_hash(driver: Any, clock: FakeClock) -> None:
    secret = b"an app secret"
    store = SessionStore(driver, clock=clock, secret_key=secret)
    sid = await sign_in(store, "42")
    stored = await driver.get_item("s:" + hashlib.sha256(sid.encode()).hexdigest())
    assert stored["user"][0] == user_key("42", secret)
    assert stored["user"][0] != user_key("42")
    # Sign-out everywhere finds the sessions by the same keyed hash ...
    await end_user_sessions(driver, "42", secret_key="wrong secret")
    assert (await reopen(store, sid)).session_id == sid
    await end_user_sessions(driver, "42", secret_key=secret)
    assert dict(await reopen(store, sid)) == {}
    assert await driver.has_item(user_key("42", secret)) is True
    assert await driver.has_item(user_key("42")) is False


@pytest.mark.parametrize("bad", ["", b"", 42])
def test_a_secret_must_be_non_empty_str_or_bytes(bad: Any) -> None:
    from sqlsession.drivers.memory import MemoryDriver

    with pytest.raises(ConfigError, match="secret_key"):
        SessionStore(MemoryDriver(), secret_key=bad)
