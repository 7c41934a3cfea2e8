"""The `Session` semantics, through `SessionStore`, on every driver (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from typing import Any

import pytest

from sqlsession import InvalidTTLError, SessionError, ValueNotSerializableError
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.web import CookieChange, Session, SessionStore, end_user_sessions
from tests.conftest import FakeClock


class Recording:
    """Forwards to a real driver and records which methods were called (no mock storage)."""

    def __init__(self, driver: Any, *, merge: bool = True) -> None:
        self.inner = driver
        self.calls: list[str] = []
        if merge:
            self.merge_item = self._merge_item

    async def get_item(self, key: str) -> Any:
        self.calls.append("get_item")
        return await self.inner.get_item(key)

    async def set_item(self, key: str, value: Any, *, ttl: Any = None) -> None:
        self.calls.append("set_item")
        await self.inner.set_item(key, value, ttl=ttl)

    async def remove_item(self, key: str) -> None:
        self.calls.append("remove_item")
        await self.inner.remove_item(key)

    async def touch(self, key: str, ttl: Any = None) -> bool:
        # Present, as on the wrapped driver, so that set_item is passed its ttl.
        self.calls.append("touch")
        result: bool = await self.inner.touch(key, ttl)
        return result

    async def _merge_item(
        self, key: str, set: Any = None, delete: Any = (), *, ttl: Any = None
    ) -> dict[str, Any]:
        self.calls.append("merge_item")
        result: dict[str, Any] = await self.inner.merge_item(key, set=set, delete=delete, ttl=ttl)
        return result

    def writes(self) -> list[str]:
        return [c for c in self.calls if c != "get_item"]


def storage_key(session_id: str) -> str:
    return "s:" + hashlib.sha256(session_id.encode()).hexdigest()


async def start(store: SessionStore, **data: Any) -> str:
    """Create a session holding `data`; return its id."""
    session = await store.load([])
    session.update(data)
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    return change.session_id


async def reopen(store: SessionStore, session_id: str) -> Session:
    return await store.load([session_id])


# -- reads and writes happen only when needed ----------------------------------------------


async def test_no_cookie_reads_nothing_and_unused_session_writes_nothing(
    driver: Any, clock: FakeClock
) -> None:
    recording = Recording(driver)
    store = SessionStore(recording, clock=clock)
    session = await store.load([])
    assert dict(session) == {}
    assert session.session_id is None
    assert await store.commit(session) is None
    assert recording.calls == []


async def test_unchanged_session_is_read_once_and_not_written(
    driver: Any, clock: FakeClock
) -> None:
    recording = Recording(driver)
    store = SessionStore(recording, clock=clock)
    sid = await start(store, user="ada")
    recording.calls.clear()
    session = await reopen(store, sid)
    assert session["user"] == "ada"
    session["user"] = "ada"  # the same value again is no change
    assert await store.commit(session) is None
    assert recording.calls == ["get_item"]


async def test_a_delete_as_the_only_change_is_persisted(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, a=1, b=2)
    session = await reopen(store, sid)
    del session["a"]
    await store.commit(session)
    assert dict(await reopen(store, sid)) == {"b": 2}


async def test_values_are_kept_as_assigned_and_edits_in_place_persist(
    driver: Any, clock: FakeClock
) -> None:
    # Was "values are copied at assignment and read": issue 9 made the session behave
    # as Starlette's, where a value changed in place after assignment or read is saved.
    store = SessionStore(driver, clock=clock)
    session = await store.load([])
    cart = [1]
    session["cart"] = cart
    cart.append(2)  # after assignment: the session holds this very list
    assert session["cart"] == [1, 2]
    session["cart"].append(3)  # a read hands out the same list again
    assert session["cart"] == [1, 2, 3]
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    assert (await reopen(store, change.session_id))["cart"] == [1, 2, 3]


async def test_values_are_checked_at_assignment(clock: FakeClock) -> None:
    session = Session(clock=clock)
    with pytest.raises(ValueNotSerializableError, match="when"):
        session["when"] = {1, 2}
    with pytest.raises(TypeError, match="str"):
        session[1] = "x"  # type: ignore[index]
    with pytest.raises(InvalidTTLError):
        session.set("x", 1, ttl=0)
    assert dict(session) == {}
    assert session.session_id is None


# -- expiry --------------------------------------------------------------------------------


async def test_per_key_ttl(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    session = await store.load([])
    session.set("flash", "saved", ttl=30)
    session["user"] = "ada"
    change = await store.commit(session)
    assert change is not None
    sid = change.session_id
    assert sid is not None
    clock.advance(29)
    assert dict(await reopen(store, sid)) == {"flash": "saved", "user": "ada"}
    clock.advance(1)
    session = await reopen(store, sid)
    assert dict(session) == {"user": "ada"}
    assert "flash" not in session
    with pytest.raises(KeyError):
        session["flash"]
    # Plain assignment clears a per-key ttl.
    session.set("flash", "again", ttl=5)
    session["flash"] = "kept"
    await store.commit(session)
    clock.advance(3600)
    assert (await reopen(store, sid))["flash"] == "kept"


async def test_max_age_is_absolute_and_ends_the_row_too(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, max_age=100, clock=clock)
    sid = await start(store, n=0)
    for n in range(1, 10):  # activity every 10 s: no extension
        clock.advance(10)
        session = await reopen(store, sid)
        assert session["n"] == n - 1
        session["n"] = n
        await store.commit(session)
    clock.advance(9.9)
    assert (await reopen(store, sid))["n"] == 9
    clock.advance(0.1)
    assert dict(await reopen(store, sid)) == {}
    # The driver expires the row itself at the same instant.
    assert await driver.get_item(storage_key(sid)) is None


async def test_idle_timeout_slides_and_is_written_once_per_half(
    driver: Any, clock: FakeClock
) -> None:
    recording = Recording(driver)
    store = SessionStore(recording, max_age=None, idle_timeout=60, clock=clock)
    sid = await start(store, user="ada")
    writes_before = len(recording.writes())
    # A request every 10 s for 10 minutes: far past idle_timeout, still alive.
    changes: list[CookieChange] = []
    for _ in range(60):
        clock.advance(10)
        session = await reopen(store, sid)
        assert session["user"] == "ada"
        change = await store.commit(session)
        if change is not None:
            changes.append(change)
    refreshes = len(recording.writes()) - writes_before
    assert refreshes == 20  # once per 30 s (half of 60), not once per request
    assert recording.writes().count("merge_item") == 20
    # Each refresh re-sends the cookie with the moved deadline.
    assert [c.max_age for c in changes] == [60.0] * 20
    assert all(c.session_id == sid for c in changes)
    # Without requests it ends idle_timeout after the last write.
    clock.advance(50)
    assert (await reopen(store, sid))["user"] == "ada"
    clock.advance(10)
    assert dict(await reopen(store, sid)) == {}
    assert await driver.get_item(storage_key(sid)) is None


async def test_row_expiry_is_the_nearer_deadline(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, max_age=100, idle_timeout=60, clock=clock)
    session = await store.load([])
    session["x"] = 1
    change = await store.commit(session)
    assert change == CookieChange(session.session_id, 60.0)
    clock.advance(59)
    session = await reopen(store, change.session_id or "")
    session["x"] = 2
    # Idle would allow 119 s, the absolute lifetime only 41 s more.
    assert await store.commit(session) == CookieChange(change.session_id, 41.0)
    clock.advance(40.9)
    assert dict(await reopen(store, change.session_id or "")) == {"x": 2}
    clock.advance(0.1)
    assert await driver.get_item(storage_key(change.session_id or "")) is None


# -- identity: regenerate, destroy, ids ---------------------------------------------------


async def test_regenerate_keeps_data_under_a_new_id_and_removes_the_old_row(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, max_age=100, clock=clock)
    old = await start(store, cart=[1, 2])
    clock.advance(30)
    session = await reopen(store, old)
    session.regenerate()
    new = session.session_id
    assert new is not None
    assert new != old
    change = await store.commit(session)
    assert change == CookieChange(new, 70.0)  # max_age still counts from creation
    assert await driver.get_item(storage_key(old)) is None
    assert dict(await reopen(store, old)) == {}
    assert dict(await reopen(store, new)) == {"cart": [1, 2]}


async def test_destroy_removes_the_row_and_expires_the_cookie(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, user="ada")
    session = await reopen(store, sid)
    session.destroy()
    assert dict(session) == {}
    assert session.session_id is None
    assert await store.commit(session) == CookieChange(None)
    assert await driver.get_item(storage_key(sid)) is None


async def test_destroy_without_a_loaded_session_still_expires_the_cookie(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock)
    session = await store.load([])
    session.destroy()
    assert await store.commit(session) == CookieChange(None)


async def test_writing_after_destroy_starts_a_new_session(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    old = await start(store, user="ada")
    session = await reopen(store, old)
    session.destroy()
    session["flash"] = "signed out"
    change = await store.commit(session)
    assert change is not None
    assert change.session_id not in (None, old)
    assert dict(await reopen(store, old)) == {}
    assert dict(await reopen(store, change.session_id or "")) == {"flash": "signed out"}


async def test_ids_are_256_bit_random_and_stored_hashed(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    ids = {await start(store, n=n) for n in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", i) for i in ids)  # 43 x 6 bits >= 256
    if hasattr(driver, "get_keys"):
        keys = await driver.get_keys("s:")
        assert sorted(keys) == sorted(storage_key(i) for i in ids)
        assert not any(i in k for k in keys for i in ids)


@pytest.mark.parametrize(
    "cookie",
    ["", "short", "A" * 42 + "!", "A" * 44, " " + "A" * 43, "A" * 43 + "\x00", "é" * 43],
)
async def test_malformed_cookie_is_not_looked_up(
    driver: Any, clock: FakeClock, cookie: str
) -> None:
    recording = Recording(driver)
    store = SessionStore(recording, clock=clock)
    session = await store.load([cookie])
    assert recording.calls == []
    session["x"] = 1
    change = await store.commit(session)
    assert change is not None
    assert change.session_id != cookie


async def test_unknown_or_expired_id_is_never_adopted(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, max_age=10, clock=clock)
    unknown = "A" * 43
    session = await store.load([unknown])
    assert session.session_id is None
    session["x"] = 1
    change = await store.commit(session)
    assert change is not None
    assert change.session_id != unknown
    assert await driver.get_item(storage_key(unknown)) is None
    # Nothing written: the stale cookie is expired so the browser stops sending it.
    assert await store.commit(await store.load([unknown])) == CookieChange(None)
    sid = change.session_id or ""
    clock.advance(10)
    session = await reopen(store, sid)
    session["x"] = 2
    change = await store.commit(session)
    assert change is not None
    assert change.session_id != sid


# -- decoding failures ----------------------------------------------------------------------


async def test_stored_value_that_is_not_a_session_is_logged_and_replaced(
    driver: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, user="ada")
    await driver.set_item(storage_key(sid), ["not", "a", "session"])
    with caplog.at_level(logging.WARNING, logger="sqlsession"):
        session = await reopen(store, sid)
    assert dict(session) == {}
    assert "cannot read" in caplog.text
    assert sid not in caplog.text  # ids never reach the logs
    session["x"] = 1
    change = await store.commit(session)
    assert change is not None
    assert change.session_id != sid
    assert await driver.get_item(storage_key(sid)) is None


async def test_undecodable_json_in_sqlite_is_an_empty_session(
    sqlite_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with SQLDriver(sqlite_url, clock=clock) as driver:
        store = SessionStore(driver, clock=clock)
        sid = await start(store, user="ada")
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
            conn.execute(
                "UPDATE sqlsession SET value = '{broken' WHERE key = ?", (storage_key(sid),)
            )
        with caplog.at_level(logging.WARNING, logger="sqlsession"):
            session = await reopen(store, sid)
        assert dict(session) == {}
        assert "cannot be decoded" in caplog.text
        assert await store.commit(session) == CookieChange(None)
        assert await driver.has_item(storage_key(sid)) is False


# -- concurrency ----------------------------------------------------------------------------


async def test_concurrent_changes_to_different_keys_both_persist(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, count=0, cart=[], note="x")
    first, second = await reopen(store, sid), await reopen(store, sid)
    first["count"] = 1
    second["cart"] = ["apple"]
    del second["note"]
    await store.commit(first)
    await store.commit(second)
    assert dict(await reopen(store, sid)) == {"count": 1, "cart": ["apple"]}


async def test_without_merge_item_a_re_read_keeps_an_earlier_commit(
    driver: Any, clock: FakeClock
) -> None:
    recording = Recording(driver, merge=False)
    store = SessionStore(recording, clock=clock)
    sid = await start(store, count=0, cart=[])
    first, second = await reopen(store, sid), await reopen(store, sid)
    first["count"] = 1
    second["cart"] = ["apple"]
    await store.commit(first)
    await store.commit(second)
    assert dict(await reopen(store, sid)) == {"count": 1, "cart": ["apple"]}
    assert "merge_item" not in recording.calls


async def test_without_merge_item_a_concurrently_destroyed_session_stays_gone(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(Recording(driver, merge=False), clock=clock)
    sid = await start(store, user="ada")
    first, second = await reopen(store, sid), await reopen(store, sid)
    first.destroy()
    second["cart"] = [1]
    await store.commit(first)
    await store.commit(second)
    assert dict(await reopen(store, sid)) == {}


async def test_with_merge_item_a_concurrently_destroyed_session_is_not_revived(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, user="ada")
    first, second = await reopen(store, sid), await reopen(store, sid)
    first.destroy()
    second["cart"] = [1]
    await store.commit(first)
    await store.commit(second)  # the merge leaves a fragment without a creation time
    assert dict(await reopen(store, sid)) == {}


# -- sign out everywhere ------------------------------------------------------------------


async def sign_in(store: SessionStore, user: str) -> str:
    session = await store.load([])
    session["user"] = user
    session.bind_user(user)
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    return change.session_id


async def test_sign_out_everywhere_ends_every_session_of_the_user(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock)
    laptop, phone = await sign_in(store, "ada"), await sign_in(store, "ada")
    other = await sign_in(store, "bob")
    session = await reopen(store, phone)
    assert session["user"] == "ada"
    session.sign_out_everywhere()
    assert await store.commit(session) == CookieChange(None)
    assert dict(await reopen(store, laptop)) == {}
    assert dict(await reopen(store, phone)) == {}
    assert (await reopen(store, other))["user"] == "bob"
    # Signing in again afterwards works, and the user key is a hash too.
    again = await sign_in(store, "ada")
    assert (await reopen(store, again))["user"] == "ada"
    if hasattr(driver, "get_keys"):
        # Every stored key is a prefix and a SHA-256 hex digest, so no user name or session
        # id appears in the table. (Looking for "ada" inside the keys would be flaky: a hex
        # digest contains those three letters in about one key of seventy.)
        keys = await driver.get_keys()
        # Three session rows (bob's, ada's new one, and the laptop's, which is refused on
        # load and left to expire), ada's sign-out-everywhere token, and the device
        # indexes of bob and of ada's new sign-in (her old one went with the sign-out).
        assert len(keys) == 6, keys
        assert [k for k in keys if k.startswith("u:")] == [
            "u:" + hashlib.sha256(b"ada").hexdigest()
        ]
        assert sorted(k for k in keys if k.startswith("d:")) == sorted(
            "d:" + hashlib.sha256(name).hexdigest() for name in (b"ada", b"bob")
        )
        assert all(re.fullmatch(r"[sud]:[0-9a-f]{64}", k) for k in keys), keys


async def test_end_user_sessions_from_outside_a_request(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await sign_in(store, "ada")
    await end_user_sessions(driver, "ada")
    assert dict(await reopen(store, sid)) == {}
    # The revoked row is removed when it is next presented.
    await store.commit(await store.load([sid]))
    assert await driver.get_item(storage_key(sid)) is None


async def test_bind_user_regenerates_the_id(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    planted = await start(store, cart=[1])
    session = await reopen(store, planted)
    session.bind_user("ada")
    change = await store.commit(session)
    assert change is not None
    assert change.session_id != planted
    assert dict(await reopen(store, planted)) == {}
    assert dict(await reopen(store, change.session_id or "")) == {"cart": [1]}


async def test_sign_out_everywhere_needs_a_bound_user(clock: FakeClock) -> None:
    with pytest.raises(SessionError, match="bind_user"):
        Session(clock=clock).sign_out_everywhere()


async def test_a_driver_with_only_the_three_required_methods_works(clock: FakeClock) -> None:
    class Plain:
        def __init__(self) -> None:
            self.items: dict[str, Any] = {}

        async def get_item(self, key: str) -> Any:
            return self.items.get(key)

        async def set_item(self, key: str, value: Any) -> None:
            self.items[key] = value

        async def remove_item(self, key: str) -> None:
            self.items.pop(key, None)

    store = SessionStore(Plain(), max_age=60, clock=clock)
    sid = await start(store, user="ada")
    session = await reopen(store, sid)
    session["cart"] = [1]
    await store.commit(session)
    assert dict(await reopen(store, sid)) == {"user": "ada", "cart": [1]}
    # Without driver expiry, the session's own deadline still holds.
    clock.advance(60)
    assert dict(await reopen(store, sid)) == {}


def test_timeouts_are_validated() -> None:
    with pytest.raises(InvalidTTLError, match="max_age"):
        SessionStore(MemoryDriver(), max_age=0)
    with pytest.raises(InvalidTTLError, match="idle_timeout"):
        SessionStore(MemoryDriver(), idle_timeout=-1)


# -- what integrations may ask: accessed and modified -------------------------------------


async def test_accessed_says_whether_the_app_looked(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, user="ada")
    session = await reopen(store, sid)
    repr(session)
    assert not session.accessed  # neither asking nor a repr counts
    assert "user" in session
    assert session.accessed
    for look in (lambda s: s.get("x"), lambda s: list(s), lambda s: s.session_id):
        session = await reopen(store, sid)
        look(session)
        assert session.accessed


async def test_modified_says_whether_the_app_changed_it(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock)
    sid = await start(store, user="ada", cart=[1])
    session = await reopen(store, sid)
    assert session["user"] == "ada"
    assert not session.modified  # reading is not changing
    session["user"] = "ada"
    assert session.modified  # even when the value is the same ...
    assert await store.commit(session) is None  # ... and nothing is written
    assert not session.modified
    changes: list[Any] = [
        lambda s: s.set("flash", "hi", ttl=5),
        lambda s: s.pop("cart"),
        lambda s: s.clear(),
        lambda s: s.regenerate(),
        lambda s: s.destroy(),
        lambda s: s.bind_user("ada"),
    ]
    for change in changes:
        session = await reopen(store, sid)
        change(session)
        assert session.modified
    assert not (await reopen(store, sid)).modified


async def test_ids_and_values_stay_out_of_reprs(driver: Any, clock: FakeClock) -> None:
    from sqlsession.web import _row
    from sqlsession.web.session import state_of

    store = SessionStore(driver, clock=clock)
    session = await store.load([])
    session["secret"] = "hunter2"
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    sid = change.session_id
    session = await reopen(store, sid)
    row = _row.parse(await driver.get_item(storage_key(sid)))
    assert row is not None
    for thing in (change, session, state_of(session), row):
        assert sid not in repr(thing)
        assert "hunter2" not in repr(thing)
    with pytest.raises(TypeError) as error:
        session.bind_user(4242)  # type: ignore[arg-type]
    assert "4242" not in str(error.value)
    with pytest.raises(TypeError, match="empty"):
        await end_user_sessions(driver, "")
