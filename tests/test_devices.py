"""A user's sessions ("devices"): listed with labels that are not ids, ended one by one or
all but the current one, from a request or an admin tool; on every backend.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from sqlsession import InvalidLabelError, SessionError
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.web import (
    DeviceSession,
    Session,
    SessionStore,
    end_user_session,
    end_user_sessions,
    list_user_sessions,
)
from sqlsession.web._ids import is_well_formed
from tests.conftest import DriverFactory, FakeClock
from tests.test_session import Recording, reopen, storage_key

MAX_AGE = 1000
LONG_AGENT = "Mozilla/5.0 (X11; Linux x86_64) " + "Gecko/20100101 " * 30


def scope(agent: str | None = "Firefox/140", address: str = "203.0.113.77") -> dict[str, Any]:
    headers = [] if agent is None else [(b"user-agent", agent.encode())]
    return {"type": "http", "headers": headers, "client": (address, 51234)}


def index_key(user: str) -> str:
    return "d:" + hashlib.sha256(user.encode()).hexdigest()


async def sign_in(store: SessionStore, user: str, request: Any = None) -> str:
    session = await store.load([], request=request)
    session["who"] = user
    session.bind_user(user)
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    return change.session_id


async def sessions_of(store: SessionStore, session_id: str) -> list[DeviceSession]:
    session = await reopen(store, session_id)
    assert session.session_id == session_id
    return await session.user_sessions()


async def test_a_user_lists_their_sessions_with_when_and_from_where(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE, record_client=True)
    laptop = await sign_in(store, "ada", scope(LONG_AGENT, "203.0.113.77"))
    clock.advance(10)
    phone = await sign_in(store, "ada", scope("Phone/1", "2001:db8:1:2:3:4:5:6"))
    clock.advance(10)
    await sign_in(store, "bob", scope())  # another user's session is never listed
    # A request with no cookie-related change reads nothing of the index.
    listed = await sessions_of(store, phone)
    assert [d.current for d in listed] == [True, False]  # newest activity first
    mine, other = listed
    assert (mine.user_agent, mine.client_address) == ("Phone/1", "2001:db8:1::/48")
    assert other.user_agent == LONG_AGENT[:200]
    assert other.client_address == "203.0.113.0/24"
    assert other.created_at.timestamp() == pytest.approx(clock.now - 20)
    assert mine.last_seen_at.timestamp() == pytest.approx(clock.now - 10)
    assert other.created_at.tzinfo is not None
    # Seen from the laptop, the same two sessions with the same labels.
    from_laptop = await sessions_of(store, laptop)
    assert {d.label for d in from_laptop} == {mine.label, other.label}
    assert [d.label for d in from_laptop if d.current] == [other.label]


async def test_labels_are_neither_ids_nor_storage_keys_and_are_refused_as_cookies(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE)
    ids = [await sign_in(store, "ada") for _ in range(3)]
    labels = [d.label for d in await sessions_of(store, ids[0])]
    assert len(set(labels)) == 3
    for label in labels:
        assert not is_well_formed(label)
        for sid in ids:
            assert label not in sid
            assert label not in storage_key(sid)
    # A label presented as the session cookie is refused before any read.
    recording = Recording(driver)
    probe = SessionStore(recording, clock=clock, max_age=MAX_AGE)
    session = await probe.load(labels)
    assert (session.session_id, recording.calls) == (None, [])


async def test_end_session_ends_another_device_at_once(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE)
    laptop, phone = await sign_in(store, "ada"), await sign_in(store, "ada")
    session = await reopen(store, phone)
    target = next(d.label for d in await session.user_sessions() if not d.current)
    assert await session.end_session(target) is True
    assert await session.end_session(target) is False  # already ended
    assert dict(await reopen(store, laptop)) == {}
    assert await driver.get_item(storage_key(laptop)) is None
    assert [d.current for d in await sessions_of(store, phone)] == [True]
    assert (await reopen(store, phone))["who"] == "ada"


async def test_end_session_refuses_its_own_label_a_bad_label_and_an_unbound_session(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE)
    sid = await sign_in(store, "ada")
    session = await reopen(store, sid)
    (own,) = await session.user_sessions()
    with pytest.raises(SessionError, match=r"destroy\(\)"):
        await session.end_session(own.label)
    for bad in [sid, "short", 42]:
        with pytest.raises(InvalidLabelError) as caught:
            await session.end_session(bad)  # type: ignore[arg-type]
        assert sid not in str(caught.value)
    assert (await reopen(store, sid))["who"] == "ada"  # nothing was ended
    anonymous = await store.load([])
    with pytest.raises(SessionError, match="bind_user"):
        await anonymous.user_sessions()
    with pytest.raises(SessionError, match="SessionStore"):
        await Session().sign_out_other_devices()
    # Another user's label names nothing in this user's index.
    bob = await sign_in(store, "bob")
    (bobs,) = await sessions_of(store, bob)
    assert await session.end_session(bobs.label) is False
    assert (await reopen(store, bob))["who"] == "bob"


async def test_sign_out_other_devices_keeps_the_current_one(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE)
    others = [await sign_in(store, "ada") for _ in range(3)]
    bob = await sign_in(store, "bob")
    current = await sign_in(store, "ada")
    session = await reopen(store, current)
    assert await session.sign_out_other_devices() == 3
    await store.commit(session)
    for sid in others:
        assert dict(await reopen(store, sid)) == {}
    assert (await reopen(store, current))["who"] == "ada"
    assert (await reopen(store, bob))["who"] == "bob"
    assert [d.current for d in await sessions_of(store, current)] == [True]


async def test_two_sign_ins_at_once_are_both_listed(
    make_driver: DriverFactory, clock: FakeClock
) -> None:
    # Two drivers (two pools on the SQL backends), as two app processes would have; the
    # memory driver's storage is its own, so there one driver serves both.
    first = await make_driver()
    second = first if isinstance(first, MemoryDriver) else await make_driver()
    stores = [SessionStore(d, clock=clock, max_age=MAX_AGE) for d in (first, second)]
    for _ in range(3):
        a, b = await asyncio.gather(*(sign_in(s, "ada") for s in stores))
        listed = await sessions_of(stores[0], a)
        assert len(listed) >= 2
    assert len(await sessions_of(stores[1], b)) == 6


async def test_ended_sessions_leave_the_index(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE, identity_key="who")
    keep = await sign_in(store, "ada")

    async def labels() -> set[str]:
        return {d.label for d in await sessions_of(store, keep)}

    async def index() -> set[str]:
        return set(await driver.get_item(index_key("ada")) or {})

    # destroy
    sid = await sign_in(store, "ada")
    session = await reopen(store, sid)
    session.destroy()
    await store.commit(session)
    assert len(await index()) == 1
    # sign-out through the identity key, and clear()
    for sign_out in ("del", "clear"):
        sid = await sign_in(store, "ada")
        session = await reopen(store, sid)
        if sign_out == "del":
            del session["who"]
        else:
            session.clear()
        await store.commit(session)
        assert len(await index()) == 1
    # signing in as another user moves the session to that user's index
    sid = await sign_in(store, "ada")
    session = await reopen(store, sid)
    session["who"] = "bob"
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    assert len(await index()) == 1
    assert [d.current for d in await sessions_of(store, change.session_id)] == [True]
    # regenerate keeps the label and points it at the new id; the old id ends
    before = await labels()
    session = await reopen(store, keep)
    session.regenerate()
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    assert {d.label for d in await sessions_of(store, change.session_id)} == before
    assert dict(await reopen(store, keep)) == {}


async def test_sign_out_everywhere_and_end_user_sessions_remove_the_index(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE)
    await sign_in(store, "ada")
    session = await reopen(store, await sign_in(store, "ada"))
    session.sign_out_everywhere()
    await store.commit(session)
    assert await driver.get_item(index_key("ada")) is None
    await sign_in(store, "ada")
    await end_user_sessions(driver, "ada", max_age=MAX_AGE)
    assert await driver.get_item(index_key("ada")) is None
    assert await list_user_sessions(driver, "ada") == []


@pytest.mark.parametrize("idle_timeout", [None, 100])
async def test_expired_sessions_are_pruned_and_the_index_expires_with_them(
    driver: Any, clock: FakeClock, idle_timeout: float | None
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE, idle_timeout=idle_timeout)
    old = await sign_in(store, "ada")
    clock.advance(MAX_AGE / 2)
    new = await sign_in(store, "ada")
    assert len(await driver.get_item(index_key("ada"))) == 2
    # The first one outlives its lifetime: max_age, or idle_timeout without a request.
    clock.advance(MAX_AGE / 2 if idle_timeout is None else idle_timeout)
    if idle_timeout is not None:
        clock.advance(-1)
        session = await reopen(store, new)  # keep the new one active
        session["seen"] = True
        await store.commit(session)
        clock.advance(1)
    assert dict(await reopen(store, old)) == {}
    listed = await sessions_of(store, new)
    assert [d.current for d in listed] == [True]
    assert len(await driver.get_item(index_key("ada"))) == 1  # pruned
    # The index item lives max_age from its last write (the pruning, just now): as long
    # as any session in it.
    clock.advance(MAX_AGE - 0.001)
    assert await driver.get_item(index_key("ada")) is not None
    clock.advance(0.001)
    assert await driver.get_item(index_key("ada")) is None


async def test_the_admin_tool_lists_and_ends_a_users_sessions_with_the_secret_key(
    driver: Any, clock: FakeClock
) -> None:
    secret = "s3cret"
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE, secret_key=secret)
    laptop, phone = await sign_in(store, "ada"), await sign_in(store, "ada")
    assert await list_user_sessions(driver, "ada") == []  # not the key the app hashes with
    listed = await list_user_sessions(
        driver, "ada", secret_key=secret, max_age=MAX_AGE, clock=clock
    )
    assert len(listed) == 2
    assert not any(d.current for d in listed)
    laptop_label = next(d.label for d in await sessions_of(store, phone) if not d.current)
    assert await end_user_session(driver, "ada", laptop_label, secret_key=secret) is True
    assert await end_user_session(driver, "ada", laptop_label, secret_key=secret) is False
    assert dict(await reopen(store, laptop)) == {}
    assert (await reopen(store, phone))["who"] == "ada"
    with pytest.raises(InvalidLabelError):
        await end_user_session(driver, "ada", phone, secret_key=secret)
    with pytest.raises(TypeError):
        await list_user_sessions(driver, "")


async def test_devices_cost_no_reads_or_writes_on_ordinary_requests(
    driver: Any, clock: FakeClock
) -> None:
    recording = Recording(driver)
    store = SessionStore(recording, clock=clock, max_age=MAX_AGE, record_client=True)
    sid = await sign_in(store, "ada", scope())
    # Sign-in: one index merge, one row; no extra read.
    assert recording.calls == ["get_item", "merge_item", "set_item"]
    recording.calls.clear()
    session = await reopen(store, sid)
    session["cart"] = [1]
    await store.commit(session)
    # A bound session: its row and its user's token, then the one write, as before.
    assert recording.calls == ["get_item", "get_item", "merge_item"]
    recording.calls.clear()
    session = await reopen(store, sid)
    assert session["cart"] == [1]
    assert await store.commit(session) is None
    assert recording.calls == ["get_item", "get_item"]


async def test_without_record_client_no_agent_or_address_is_stored(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE)
    sid = await sign_in(store, "ada", scope())
    (device,) = await sessions_of(store, sid)
    assert (device.user_agent, device.client_address) == (None, None)
    assert set((await driver.get_item(storage_key(sid)))["dev"]) == {"l"}


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),  # IPv4 seen through an IPv6 socket
        ("testclient", None),
        ("", None),
    ],
)
def test_client_addresses_are_cut_to_their_network(address: str, network: str | None) -> None:
    from sqlsession.web.devices import truncate_address

    assert truncate_address(address) == network


async def test_a_sign_in_drops_the_entries_past_their_deadline(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, clock=clock, max_age=MAX_AGE, idle_timeout=100)
    for _ in range(3):
        await sign_in(store, "ada")  # never signed out of: left to expire
    clock.advance(MAX_AGE / 2)
    middle = await sign_in(store, "ada")
    assert len(await driver.get_item(index_key("ada"))) == 4
    clock.advance(MAX_AGE / 2)
    # Nobody listed the sessions, yet the next sign-in leaves only the live entries.
    await sign_in(store, "ada")
    index = await driver.get_item(index_key("ada"))
    assert len(index) == 2
    assert storage_key(middle) in {entry[0] for entry in index.values()}
