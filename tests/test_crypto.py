"""Encryption at rest (``encryption_keys``), on memory, SQLite, PostgreSQL and MariaDB.

The raw table is read with SQL (with the driver on memory) to show that values are not
there in clear; rows are altered through the driver to show that altered, swapped and
orphaned values are refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sqlsession import ConfigError, SessionTooLargeError
from sqlsession._url import resolve_url
from sqlsession.cli import main
from sqlsession.drivers.sql import SQLDriver
from sqlsession.web import (
    CookieChange,
    SessionMiddleware,
    SessionStore,
    generate_encryption_key,
)
from sqlsession.web._crypto import Cipher, Sealed
from sqlsession.web.session import state_of
from tests.conftest import FakeClock
from tests.test_session import Recording, reopen, start, storage_key

KEY1 = generate_encryption_key()
KEY2 = generate_encryption_key()
SECRET = "correct-horse-battery-staple"


async def raw_table(backend: str, driver: Any, request: pytest.FixtureRequest) -> str:
    """Everything stored, as the database holds it: SQL on a database, the driver on memory."""
    if backend == "memory":
        keys = await driver.get_keys()
        return json.dumps([await driver.get_item(key) for key in keys], ensure_ascii=False)
    url = request.getfixturevalue(f"{backend}_url")
    engine = create_async_engine(resolve_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT value FROM sqlsession"))).all()
    finally:
        await engine.dispose()
    assert rows
    return "\n".join(str(row[0]) for row in rows)


def entry(row: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = row["k:" + name]
    return found


# -- what is stored -----------------------------------------------------------------------


async def test_values_are_not_in_the_table_and_come_back_equal(
    driver: Any, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    store = SessionStore(driver, encryption_keys=[KEY1], clock=clock)
    data = {"password_hint": SECRET, "cart": [{"sku": SECRET + "-2", "n": 2}], "n": 12345678}
    sid = await start(store, **data)
    raw = await raw_table(backend, driver, request)
    assert SECRET not in raw
    assert "12345678" not in raw
    stored = await driver.get_item(storage_key(sid))
    # Metadata stays plain, for cleanup, listings and expiry.
    assert stored["created"] == stored["seen"] == round(clock() * 1000)
    assert set(entry(stored, "cart")) == {"c"}
    assert dict(await reopen(store, sid)) == data
    # A store without the keys cannot read it: a new session.
    assert dict(await reopen(SessionStore(driver, clock=clock), sid)) == {}


async def test_per_key_expiry_stays_plain_and_still_applies(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, encryption_keys=[KEY1], clock=clock)
    session = await store.load([])
    session.set("flash", "saved", ttl=30)
    session["keep"] = 1
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    stored = await driver.get_item(storage_key(change.session_id))
    assert entry(stored, "flash")["e"] == round(clock() * 1000) + 30_000
    clock.advance(31)
    assert dict(await reopen(store, change.session_id)) == {"keep": 1}


async def test_values_are_decrypted_only_when_read(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, encryption_keys=[KEY1], clock=clock)
    sid = await start(store, a=1, b=[2])
    session = await reopen(store, sid)
    entries = state_of(session).entries
    assert type(entries["a"][0]) is Sealed
    assert type(entries["b"][0]) is Sealed
    assert session["a"] == 1
    assert entries["a"][0] == "1"
    assert type(entries["b"][0]) is Sealed  # not read, not decrypted
    assert sorted(session) == ["a", "b"]  # names and membership need no key


async def test_each_write_uses_a_fresh_nonce(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, encryption_keys=[KEY1], clock=clock)
    first, second = await start(store, a="same"), await start(store, a="same")
    one = entry(await driver.get_item(storage_key(first)), "a")["c"]
    two = entry(await driver.get_item(storage_key(second)), "a")["c"]
    assert one != two
    assert one[:8] == two[:8]  # the same key id


# -- rotation -------------------------------------------------------------------------------


async def test_rotation_old_keys_decrypt_and_the_first_key_writes(
    driver: Any, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    old = SessionStore(driver, encryption_keys=[KEY1], clock=clock)
    sid = await start(old, a=SECRET, b=2)
    old_id = entry(await driver.get_item(storage_key(sid)), "a")["c"][:8]
    rotated = SessionStore(driver, encryption_keys=[KEY2, KEY1], clock=clock)
    assert dict(await reopen(rotated, sid)) == {"a": SECRET, "b": 2}  # old key decrypts
    recording = Recording(driver)
    rotated = SessionStore(recording, encryption_keys=[KEY2, KEY1], clock=clock)
    session = await reopen(rotated, sid)
    assert await rotated.commit(session) is None
    assert recording.writes() == []  # reading is no reason to write
    session = await reopen(rotated, sid)
    session["c"] = 3
    await rotated.commit(session)
    stored = await driver.get_item(storage_key(sid))
    ids = {name: entry(stored, name)["c"][:8] for name in ("a", "b", "c")}
    # The write went out anyway: the unchanged values moved to the new key with it.
    assert len(set(ids.values())) == 1
    assert ids["a"] != old_id
    assert SECRET not in await raw_table(backend, driver, request)
    # The old key can go now.
    new_only = SessionStore(driver, encryption_keys=[KEY2], clock=clock)
    assert dict(await reopen(new_only, sid)) == {"a": SECRET, "b": 2, "c": 3}


async def test_a_removed_key_makes_a_new_session_logged_without_secrets(
    driver: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sid = await start(SessionStore(driver, encryption_keys=[KEY1], clock=clock), a=SECRET)
    store = SessionStore(driver, encryption_keys=[KEY2], clock=clock)
    with caplog.at_level(logging.DEBUG, logger="sqlsession"):
        session = await reopen(store, sid)
    assert dict(session) == {}
    assert "encrypted with a key not in encryption_keys" in caplog.text
    for secret in (sid, storage_key(sid), KEY1, KEY2, SECRET):
        assert secret not in caplog.text
    assert await store.commit(session) == CookieChange(None)
    assert await driver.get_item(storage_key(sid)) is None


# -- tampering --------------------------------------------------------------------------------


def _flip(token: str, at: int) -> str:
    swapped = "A" if token[at] != "A" else "B"
    return token[:at] + swapped + token[at + 1 :]


@pytest.mark.parametrize("where", [12, -5])  # in the nonce, in the tag
async def test_an_altered_value_ends_the_session_when_read(
    driver: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture, where: int
) -> None:
    store = SessionStore(driver, encryption_keys=[KEY1], clock=clock)
    sid = await start(store, a=SECRET, b=2)
    row = await driver.get_item(storage_key(sid))
    token = entry(row, "a")["c"]
    row["k:a"] = {"c": _flip(token, where % len(token))}
    await driver.set_item(storage_key(sid), row)
    session = await reopen(store, sid)
    assert session["b"] == 2  # an intact value still opens
    with caplog.at_level(logging.WARNING, logger="sqlsession"), pytest.raises(KeyError):
        session["a"]
    assert "cannot be decrypted" in caplog.text
    for secret in (sid, KEY1, SECRET, token):
        assert secret not in caplog.text
    assert dict(session) == {}  # a new session
    assert await store.commit(session) == CookieChange(None)
    assert await driver.get_item(storage_key(sid)) is None


async def test_a_value_moved_to_another_key_name_is_refused(driver: Any, clock: FakeClock) -> None:
    store = SessionStore(driver, encryption_keys=[KEY1], clock=clock)
    sid = await start(store, role="user", admin_role="admin")
    row = await driver.get_item(storage_key(sid))
    row["k:role"] = row["k:admin_role"]
    await driver.set_item(storage_key(sid), row)
    session = await reopen(store, sid)
    with pytest.raises(KeyError):
        session["role"]
    assert dict(session) == {}


async def test_a_value_copied_into_another_session_is_refused(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, encryption_keys=[KEY1], clock=clock)
    victim = await start(store, user=SECRET)
    attacker = await start(store, user="mallory")
    stolen = await driver.get_item(storage_key(victim))
    await driver.set_item(storage_key(attacker), stolen)  # the whole row, even
    session = await reopen(store, attacker)
    with pytest.raises(KeyError):
        session["user"]
    assert session.session_id is None


# -- migration from plain rows ----------------------------------------------------------------


async def test_plain_rows_stay_readable_and_are_encrypted_on_their_next_write(
    driver: Any, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    sid = await start(SessionStore(driver, clock=clock), a=SECRET, b=[1, 2])
    assert SECRET in await raw_table(backend, driver, request)
    recording = Recording(driver)
    store = SessionStore(recording, encryption_keys=[KEY1], clock=clock)
    session = await reopen(store, sid)
    assert dict(session) == {"a": SECRET, "b": [1, 2]}
    assert await store.commit(session) is None
    assert recording.writes() == []  # read only: nothing written, still plain
    session = await reopen(store, sid)
    session["b"].append(3)
    await store.commit(session)
    assert SECRET not in await raw_table(backend, driver, request)
    stored = await driver.get_item(storage_key(sid))
    assert {name: set(entry(stored, name)) for name in ("a", "b")} == {"a": {"c"}, "b": {"c"}}
    assert dict(await reopen(store, sid)) == {"a": SECRET, "b": [1, 2, 3]}


# -- the session layer's behaviour is unchanged ----------------------------------------------


async def test_in_place_edits_and_concurrent_merges_still_work(
    driver: Any, clock: FakeClock
) -> None:
    recording = Recording(driver)
    store = SessionStore(recording, encryption_keys=[KEY2, KEY1], clock=clock)
    sid = await start(store, cart=["apple"], count=0, note="x")
    first, second = await reopen(store, sid), await reopen(store, sid)
    first["cart"].append("pear")
    assert first["note"] == "x"  # read, not changed
    second["count"] = 1
    second["note"] = "y"
    await store.commit(second)
    await store.commit(first)
    assert dict(await reopen(store, sid)) == {"cart": ["apple", "pear"], "count": 1, "note": "y"}
    # Assigning the value a key holds is no change, encrypted or not.
    recording.calls.clear()
    session = await reopen(store, sid)
    session["note"] = session["note"]
    session["count"] = 1
    assert await store.commit(session) is None
    assert recording.writes() == []


async def test_without_merge_a_re_read_keeps_an_earlier_commit(
    driver: Any, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    store = SessionStore(Recording(driver, merge=False), encryption_keys=[KEY1], clock=clock)
    sid = await start(store, count=0, cart=[])
    first, second = await reopen(store, sid), await reopen(store, sid)
    first["count"] = 1
    second["cart"] = [SECRET]
    await store.commit(first)
    await store.commit(second)
    assert dict(await reopen(store, sid)) == {"count": 1, "cart": [SECRET]}
    assert SECRET not in await raw_table(backend, driver, request)


async def test_regenerate_and_sign_in_carry_encrypted_values_to_the_new_id(
    driver: Any, clock: FakeClock
) -> None:
    store = SessionStore(driver, encryption_keys=[KEY1], clock=clock)
    sid = await start(store, cart=[1], note="n")
    session = await reopen(store, sid)
    session.bind_user("ada")  # a new id; nothing was read
    change = await store.commit(session)
    assert change is not None
    assert change.session_id not in (None, sid)
    assert await driver.get_item(storage_key(sid)) is None
    assert dict(await reopen(store, change.session_id)) == {"cart": [1], "note": "n"}


async def test_max_size_counts_the_json_not_the_larger_ciphertext(
    driver: Any, clock: FakeClock
) -> None:
    limit = 100
    store = SessionStore(driver, encryption_keys=[KEY1], max_size=limit, clock=clock)
    fits = "x" * (limit - len("v") - 2)  # the name, the JSON string with its quotes
    sid = await start(store, v=fits)
    stored = await driver.get_item(storage_key(sid))
    assert len(entry(stored, "v")["c"]) > limit  # stored larger than max_size
    session = await reopen(store, sid)
    # Still sealed: its size is known without decrypting it.
    assert type(state_of(session).entries["v"][0]) is Sealed
    with pytest.raises(SessionTooLargeError):
        session["w"] = 1
    session["v"] = fits[:-2]
    session["w"] = 1
    assert await store.commit(session) is None
    with pytest.raises(SessionTooLargeError):
        (await reopen(store, sid))["v"] = fits + "y"


async def test_flash_messages_and_the_csrf_token_are_encrypted_too(
    driver: Any, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    store = SessionStore(driver, encryption_keys=[KEY1], clock=clock)
    session = await store.load([])
    session.flash(SECRET)
    token = session.csrf_token()
    change = await store.commit(session)
    assert change is not None
    assert change.session_id is not None
    raw = await raw_table(backend, driver, request)
    assert SECRET not in raw
    session = await reopen(store, change.session_id)
    assert session.check_csrf_token(token)
    assert [flash.message for flash in session.pop_flashes()] == [SECRET]


# -- keys ---------------------------------------------------------------------------------


def test_generated_keys_are_32_random_bytes_as_urlsafe_base64() -> None:
    keys = {generate_encryption_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(base64.urlsafe_b64decode(key)) == 32


async def test_a_bytes_key_is_the_same_key_as_its_base64_text(
    driver: Any, clock: FakeClock
) -> None:
    raw = base64.urlsafe_b64decode(KEY1)
    sid = await start(SessionStore(driver, encryption_keys=[raw], clock=clock), a=1)
    unpadded = KEY1.rstrip("=")
    store = SessionStore(driver, encryption_keys=[unpadded], clock=clock)
    assert dict(await reopen(store, sid)) == {"a": 1}


BAD_KEYS: list[tuple[Any, str]] = [
    ([], "encryption_keys is empty"),
    (KEY1, "must be a list of keys"),
    ([KEY1[:-8]], "encryption_keys[0] decodes to 27 bytes; a key must be 32 bytes"),
    ([KEY1, "!" + KEY2[1:]], "encryption_keys[1] is not urlsafe base64 text"),
    ([KEY1, "é" + KEY2[1:]], "encryption_keys[1] is not urlsafe base64 text"),
    ([b"\x01" * 16], "encryption_keys[0] is 16 bytes; a bytes key must be 32 raw bytes"),
    ([KEY1, 42], "encryption_keys[1] must be urlsafe base64 text (str) or 32 raw bytes"),
    ([KEY1, KEY2, KEY1], "encryption_keys[2] is the same key as encryption_keys[0]"),
    ([KEY1, base64.urlsafe_b64decode(KEY1)], "encryption_keys[1] is the same key as"),
]


@pytest.mark.parametrize(("keys", "message"), BAD_KEYS)
def test_bad_keys_are_refused_clearly_without_the_key(keys: Any, message: str) -> None:
    for build in (
        lambda: SessionStore(Recording(None), encryption_keys=keys),
        lambda: SessionMiddleware(_app, driver=Recording(None), encryption_keys=keys),
    ):
        with pytest.raises(ConfigError) as caught:
            build()
        text = str(caught.value)
        assert message in text
        assert "sqlsession keygen" in text or "list" in text or "None" in text
        for key in (KEY1, KEY2, KEY1[:-8], KEY1.rstrip("=")):
            assert key not in text


def test_without_cryptography_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # An import that fails as it does where the package is not installed.
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ConfigError, match=r"pip install 'sqlsession-store\[crypto\]'"):
        SessionStore(Recording(None), encryption_keys=[KEY1])
    SessionStore(Recording(None))  # not needed, not imported, without keys


def test_cryptography_is_imported_only_when_keys_are_given() -> None:
    code = (
        "import sys\n"
        "from sqlsession.drivers.memory import MemoryDriver\n"
        "from sqlsession.web import SessionMiddleware, SessionStore, generate_encryption_key\n"
        "SessionStore(MemoryDriver())\n"
        "assert 'cryptography' not in sys.modules\n"
        "SessionStore(MemoryDriver(), encryption_keys=[generate_encryption_key()])\n"
        "assert 'cryptography' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_key_material_in_reprs() -> None:
    cipher = Cipher([KEY1, KEY2])
    token = Sealed(cipher.seal('"x"', b"aad"))
    assert repr(cipher) == "<Cipher keys=2>"
    assert repr(token) == "<sealed value>"
    store = SessionStore(Recording(None), encryption_keys=[KEY1])
    for shown in (repr(store), repr(store._policy), repr(vars(store))):
        assert KEY1 not in shown
        assert base64.urlsafe_b64decode(KEY1).hex() not in shown


def test_keygen_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    key = capsys.readouterr().out.strip()
    assert len(base64.urlsafe_b64decode(key)) == 32
    Cipher([key])


def test_show_marks_encrypted_values_without_printing_them(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def make() -> str:
        async with SQLDriver(sqlite_url) as driver:
            return await start(SessionStore(driver, encryption_keys=[KEY1]), note=SECRET)

    sid = asyncio.run(make())
    assert main(["show", "--url", sqlite_url, "--values", "-q", sid]) == 0
    out = capsys.readouterr().out
    assert "note: (encrypted)" in out
    assert SECRET not in out
    assert main(["show", "--url", sqlite_url, "--values", "--json", "-q", sid]) == 0
    assert json.loads(capsys.readouterr().out)["keys"]["note"]["encrypted"] is True


# -- through the middleware ---------------------------------------------------------------


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


async def test_the_middleware_encrypts(
    driver: Any, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    async def save(req: Request) -> Response:
        req.session["card"] = SECRET
        return JSONResponse({})

    async def read(req: Request) -> Response:
        return JSONResponse(dict(req.session))

    app = Starlette(
        routes=[Route("/save", save), Route("/read", read)],
        middleware=[
            Middleware(
                SessionMiddleware,
                driver=driver,
                https_only=False,
                encryption_keys=[KEY1],
                clock=clock,
            )
        ],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.get("/save")
        assert (await client.get("/read")).json() == {"card": SECRET}
    assert SECRET not in await raw_table(backend, driver, request)
