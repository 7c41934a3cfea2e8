"""`Session.set_max_age`: a session's own lifetime ("remember me"), on every backend.

Bounded by the store's ``max_age``, counted from creation, stored in the row, reflected in
the cookie's Max-Age and the row's expiry, and kept through regenerate and sign-in.
"""

from __future__ import annotations

from typing import Any

import pytest

from sqlsession import InvalidTTLError
from sqlsession.web import CookieChange, SessionStore
from tests.conftest import FakeClock
from tests.test_session import reopen, start, storage_key

MAX_AGE = 1000


async def set_max_age(store: SessionStore, sid: str, seconds: float | None) -> CookieChange:
    session = await reopen(store, sid)
    session.set_max_age(seconds)
    change = await store.commit(session)
    assert change is not None
    return change


async def test_a_shorter_lifetime_shows_in_the_cookie_the_row_and_on_later_requests(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE)
    sid = await start(store, cart=[1])
    clock.advance(10)
    change = await set_max_age(store, sid, 100)
    # Counted from creation, as max_age: 90 seconds are left.
    assert change.session_id == sid
    assert change.max_age == pytest.approx(90)
    assert (await driver.get_item(storage_key(sid)))["ma"] == 100_000
    clock.advance(89.999)
    session = await reopen(store, sid)
    assert session["cart"] == [1]
    session["cart"] = [1, 2]  # a later write keeps the session's own lifetime
    change2 = await store.commit(session)
    assert change2 is None  # no idle_timeout: the cookie needs no change
    clock.advance(0.001)
    assert dict(await reopen(store, sid)) == {}
    # The row expired with it (on drivers with expiry, before any cleanup).
    assert await driver.get_item(storage_key(sid)) is None


async def test_a_longer_lifetime_than_max_age_is_refused_and_changes_nothing(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE)
    sid = await start(store, cart=[1])
    session = await reopen(store, sid)
    for bad in [MAX_AGE + 0.001, -1, float("nan"), True, "60"]:
        with pytest.raises(InvalidTTLError, match="set_max_age"):
            session.set_max_age(bad)  # type: ignore[arg-type]
    assert session.modified is False
    assert await store.commit(session) is None
    # Without a max_age, any lifetime is allowed.
    unbounded = SessionStore(driver, clock=clock, max_age=None)
    change = await set_max_age(unbounded, await start(unbounded, a=1), 10 * MAX_AGE)
    assert change.max_age == pytest.approx(10 * MAX_AGE)


async def test_zero_is_a_browser_session_and_none_goes_back_to_max_age(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE, idle_timeout=100)
    sid = await start(store, a=1)
    change = await set_max_age(store, sid, 0)
    assert (change.session_id, change.max_age) == (sid, None)  # no Max-Age attribute
    clock.advance(60)  # an idle refresh re-sends the cookie: still without Max-Age
    session = await reopen(store, sid)
    refreshed = await store.commit(session)
    assert refreshed is not None
    assert (refreshed.session_id, refreshed.max_age) == (sid, None)
    change = await set_max_age(store, sid, None)
    assert change.max_age == pytest.approx(100)  # the idle deadline is the nearer one
    assert "ma" not in await driver.get_item(storage_key(sid))


async def test_the_lifetime_survives_regenerate_and_sign_in(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE)
    sid = await start(store, a=1)
    await set_max_age(store, sid, 300)
    session = await reopen(store, sid)
    session.bind_user("ada")  # regenerates
    change = await store.commit(session)
    assert change is not None
    assert change.session_id not in (None, sid)
    assert change.max_age == pytest.approx(300)
    new = change.session_id
    assert new is not None
    session = await reopen(store, new)
    session.regenerate()
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    assert change.max_age == pytest.approx(300)
    clock.advance(300)
    assert dict(await reopen(store, change.session_id)) == {}
    # destroy forgets it: the next session gets the store's max_age.
    other = await start(store, b=1)
    session = await reopen(store, other)
    session.set_max_age(5)
    session.destroy()
    session["c"] = 1
    change = await store.commit(session)
    assert change is not None
    assert change.max_age == pytest.approx(MAX_AGE)


async def test_a_lowered_max_age_still_bounds_a_stored_lifetime(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE)
    sid = await start(store, a=1)
    await set_max_age(store, sid, MAX_AGE)
    lowered = SessionStore(driver, clock=clock, max_age=100)
    clock.advance(100)
    assert dict(await reopen(lowered, sid)) == {}
    assert (await reopen(store, sid))["a"] == 1  # under the old config it had time left
