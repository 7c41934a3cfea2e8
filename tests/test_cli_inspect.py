"""``sqlsession show``, ``delete``, ``list`` and ``stats`` on sessions the web layer wrote.

Sessions are made through `SessionStore`, as the middleware makes them, so the commands
are tested against the real row format; on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sqlsession.cli import main
from sqlsession.drivers.sql import SQLDriver
from sqlsession.web import SessionStore, end_user_sessions, list_user_sessions
from sqlsession.web._ids import log_label, storage_key, user_key
from tests.conftest import admin, mysql_base_url, postgres_base_url

MAX_AGE = 3600


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class Sessions:
    """Cookie values of the sessions made by `sessions`, and where they are."""

    args: list[str]
    cart: str  # cart and counter, a flash key with its own ttl, no user
    alice: str  # bound to alice
    alice2: str  # bound to alice too
    bob: str  # bound to bob, then ended by end_user_sessions
    made_at: float
    alice_labels: set[str]  # the device labels of alice's sessions


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SQLSESSION_URL", raising=False)
    monkeypatch.chdir(tmp_path)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    code = main(list(args))
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


async def make_sessions(url: str, table: str) -> dict[str, str]:
    async with SQLDriver(url, table=table) as driver:
        store = SessionStore(driver, max_age=MAX_AGE)
        made: dict[str, str] = {}
        for name, user in [("cart", None), ("alice", "alice"), ("alice2", "alice"), ("bob", "bob")]:
            session = await store.load([])
            if user is not None:
                session.bind_user(user)
            if name == "cart":
                session["cart"] = ["apple", "Zoë"]
                session["counter"] = 3
                session.set("flash", "hi", ttl=60)
            else:
                session["who"] = name
            change = await store.commit(session)
            assert change is not None
            assert change.session_id is not None
            made[name] = change.session_id
        await end_user_sessions(driver, "bob")
        await driver.set_item("plain-key", 1)  # an item stored through the driver directly
        made["alice_labels"] = " ".join(d.label for d in await list_user_sessions(driver, "alice"))
        return made


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "mysql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sessions]:
    table = "t_" + uuid.uuid4().hex[:12]
    if request.param == "sqlite":
        url, server = f"sqlite:///{tmp_path / 'sessions.db'}", False
    else:
        url = postgres_base_url() if request.param == "postgresql" else mysql_base_url()
        server = True
    args = ["--url", url, "--table", table]
    try:
        assert main(["migrate", "-q", *args]) == 0
        made_at = time.time()
        made = asyncio.run(make_sessions(url, table))
        yield Sessions(
            args,
            made["cart"],
            made["alice"],
            made["alice2"],
            made["bob"],
            made_at,
            set(made["alice_labels"].split()),
        )
    finally:
        if server:
            admin(
                url,
                f"DROP TABLE IF EXISTS {table}",
                f"DROP TABLE IF EXISTS {table}_alembic_version",
            )


def no_secrets(run: Run, *cookies: str) -> None:
    """Neither a cookie value nor a full storage hash nor a user id in the output."""
    text = run.out + run.err
    for cookie in cookies:
        assert cookie not in text
        assert storage_key(cookie)[2:] not in text
    for user in ("alice", "bob"):
        assert user_key(user)[2:] not in text


def test_show_prints_times_user_and_keys_without_values(
    capsys: pytest.CaptureFixture[str], sessions: Sessions
) -> None:
    result = cli(capsys, "show", sessions.cart, *sessions.args)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"session    {log_label(sessions.cart)}"
    created = datetime.strptime(lines[1], "created    %Y-%m-%d %H:%M:%S UTC").replace(
        tzinfo=timezone.utc
    )
    assert abs(created.timestamp() - sessions.made_at) < 60
    assert lines[2].startswith("last seen  ")
    expires = datetime.strptime(lines[3], "expires    %Y-%m-%d %H:%M:%S UTC").replace(
        tzinfo=timezone.utc
    )
    assert abs(expires.timestamp() - (created.timestamp() + MAX_AGE)) < 2
    assert lines[4] == "user       none"
    assert lines[5].startswith("keys       cart, counter, flash (until ")
    assert len(lines) == 6
    assert "apple" not in result.out  # values only with --values
    no_secrets(result, sessions.cart)


def test_show_values_and_json(capsys: pytest.CaptureFixture[str], sessions: Sessions) -> None:
    result = cli(capsys, "show", sessions.cart, "--values", *sessions.args)
    assert result.code == 0, result.err
    assert '  cart: ["apple", "Zo\\u00eb"]' in result.out.splitlines()
    assert "  counter: 3" in result.out.splitlines()

    result = cli(capsys, "show", sessions.cart, "--json", "--values", *sessions.args)
    shown = json.loads(result.out)
    assert shown["session"] == log_label(sessions.cart)
    assert shown["user"] is None
    assert shown["keys"]["cart"] == {"expires": None, "value": ["apple", "Zoë"]}
    assert shown["keys"]["flash"]["value"] == "hi"
    assert shown["keys"]["flash"]["expires"].endswith("Z")
    assert set(shown) == {"session", "created", "last_seen", "expires", "user", "keys"}

    result = cli(capsys, "show", sessions.cart, "--json", *sessions.args)
    assert json.loads(result.out)["keys"]["counter"] == {"expires": None}
    no_secrets(result, sessions.cart)


def test_show_a_bound_and_a_signed_out_session(
    capsys: pytest.CaptureFixture[str], sessions: Sessions
) -> None:
    alice = json.loads(cli(capsys, "show", sessions.alice, "--json", *sessions.args).out)
    alice2 = json.loads(cli(capsys, "show", sessions.alice2, "--json", *sessions.args).out)
    bob = json.loads(cli(capsys, "show", sessions.bob, "--json", *sessions.args).out)
    assert alice["user"] == {"label": user_key("alice")[2:14], "signed_in": True}
    assert alice2["user"] == alice["user"]  # one user, one label
    assert bob["user"] == {"label": user_key("bob")[2:14], "signed_in": False}
    result = cli(capsys, "show", sessions.bob, *sessions.args)
    assert f"user       {user_key('bob')[2:14]} (signed out everywhere)" in result.out
    no_secrets(result, sessions.bob)


@pytest.mark.parametrize("command", ["show", "delete"])
def test_an_unknown_cookie_exits_1(
    capsys: pytest.CaptureFixture[str], sessions: Sessions, command: str
) -> None:
    unknown = "A" * 43
    result = cli(capsys, command, unknown, *sessions.args)
    assert (result.code, result.out) == (1, "")
    assert result.err.startswith(f"sqlsession {command}: no live session for that cookie in ")
    no_secrets(result, unknown)


def test_delete_removes_the_session(capsys: pytest.CaptureFixture[str], sessions: Sessions) -> None:
    result = cli(capsys, "delete", sessions.alice, *sessions.args)
    assert result.code == 0, result.err
    assert result.out.startswith(f"Deleted session {log_label(sessions.alice)} from ")
    no_secrets(result, sessions.alice)
    assert cli(capsys, "show", sessions.alice, *sessions.args).code == 1
    assert cli(capsys, "show", sessions.alice2, *sessions.args).code == 0  # the other one stays
    assert cli(capsys, "delete", sessions.alice, *sessions.args).code == 1


def test_a_cookie_may_be_given_as_name_value(
    capsys: pytest.CaptureFixture[str], sessions: Sessions
) -> None:
    result = cli(capsys, "show", f"session={sessions.cart}", *sessions.args)
    assert result.code == 0, result.err
    assert result.out.startswith(f"session    {log_label(sessions.cart)}\n")


@pytest.mark.parametrize("command", ["show", "delete"])
def test_a_cookie_that_starts_with_a_dash_is_not_an_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    # One session id in 64 starts with "-", which argparse would take for an option.
    cookie = "-" + "Ab_9" * 10 + "xZ"
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    assert main(["migrate", "-q", "--url", url]) == 0

    async def store() -> None:
        async with SQLDriver(url) as driver:
            await driver.set_item(storage_key(cookie), {"created": 1, "seen": 2}, ttl=60)

    asyncio.run(store())
    result = cli(capsys, command, cookie, "--url", url)
    assert result.code == 0, result.err
    assert log_label(cookie) in result.out
    no_secrets(result, cookie)


def test_list_prints_one_line_per_session_newest_first(
    capsys: pytest.CaptureFixture[str], sessions: Sessions
) -> None:
    result = cli(capsys, "list", *sessions.args)
    assert (result.code, result.err) == (0, "")
    header, *lines = result.out.splitlines()
    assert header.split() == [
        "SESSION",
        "CREATED",
        "(UTC)",
        "LAST",
        "SEEN",
        "(UTC)",
        "EXPIRES",
        "(UTC)",
        "USER",
    ]
    labels = {line.split()[0] for line in lines}
    made = [sessions.cart, sessions.alice, sessions.alice2, sessions.bob]
    assert labels == {log_label(cookie) for cookie in made}
    by_label = {line.split()[0]: line for line in lines}
    assert by_label[log_label(sessions.cart)].endswith("  -")
    assert by_label[log_label(sessions.alice)].endswith(f"  {user_key('alice')[2:14]}")
    assert by_label[log_label(sessions.bob)].endswith(" (signed out everywhere)")
    seen = [line.split()[3] + line.split()[4] for line in lines]
    assert seen == sorted(seen, reverse=True)
    no_secrets(result, *made)


def test_list_of_one_user_with_a_limit_and_as_json(
    capsys: pytest.CaptureFixture[str], sessions: Sessions
) -> None:
    # --user lists the user's device index (no table scan), labelled as the device API
    # labels them: two sessions of alice, neither id nor hash in sight.
    result = cli(capsys, "list", "--user", "alice", "--json", *sessions.args)
    assert result.code == 0, result.err
    listed = json.loads(result.out)
    assert {item["label"] for item in listed} == sessions.alice_labels
    assert all(
        set(item) == {"label", "created", "last_seen", "client_address", "user_agent"}
        for item in listed
    )
    no_secrets(result, sessions.alice, sessions.alice2)

    result = cli(capsys, "list", "--limit", "1", *sessions.args)
    assert result.code == 0
    assert len(result.out.splitlines()) == 2
    assert result.err == "sqlsession list: stopped at --limit 1; the table holds 4 live sessions.\n"

    result = cli(capsys, "list", "--user", "nobody", *sessions.args)
    assert (result.code, result.out) == (0, "")
    assert "no live sessions of that user in " in result.err
    assert "nobody" not in result.err


def test_stats_counts_sessions_and_users_apart(
    capsys: pytest.CaptureFixture[str], sessions: Sessions
) -> None:
    result = cli(capsys, "stats", "--json", *sessions.args)
    assert result.code == 0, result.err
    # Four sessions; one user row, bob's, written when his sessions were ended (bind_user
    # writes none); live counts every row, the driver's own "plain-key" too, and alice's
    # device index (bob's went with his sessions).
    assert json.loads(result.out) == {"sessions": 4, "users": 1, "live": 7, "expired": 0}
    result = cli(capsys, "stats", *sessions.args)
    assert result.out == "sessions: 4\nusers: 1\nlive: 7\nexpired: 0\n"


@pytest.mark.parametrize(
    "args",
    [
        ["show", "too-short"],
        ["show", "A" * 44],
        ["delete", "not a cookie" + "x" * 31],
        ["show"],
        ["list", "--limit", "0"],
        ["list", "--user", ""],
    ],
)
def test_usage_errors_exit_2_without_echoing_the_value(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    result = cli(capsys, *args)
    assert result.code == 2
    assert "usage: sqlsession" in result.err
    if len(args) > 1 and args[0] in ("show", "delete"):
        assert args[1] not in result.err
        assert "43 characters" in result.err


def test_inspection_on_a_table_without_sessions(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["--url", f"sqlite:///{tmp_path / 'empty.db'}"]
    assert cli(capsys, "migrate", *args).code == 0
    result = cli(capsys, "list", *args)
    assert (result.code, result.out) == (0, "")
    assert "no live sessions in 'sqlsession' in " in result.err
    result = cli(capsys, "stats", "--json", *args)
    assert json.loads(result.out) == {"sessions": 0, "users": 0, "live": 0, "expired": 0}


def test_list_user_needs_the_apps_secret_key_from_the_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'keyed.db'}"
    args = ["--url", url]
    assert main(["migrate", "-q", *args]) == 0

    async def sign_in() -> str:
        async with SQLDriver(url) as driver:
            store = SessionStore(driver, secret_key="app-secret", record_client=True)
            session = await store.load(
                [], request={"headers": [(b"user-agent", b"Firefox")], "client": ("::1", 1)}
            )
            session.bind_user("alice")
            change = await store.commit(session)
            assert change is not None
            assert change.session_id is not None
            return change.session_id

    cookie = asyncio.run(sign_in())
    monkeypatch.delenv("SQLSESSION_SECRET_KEY", raising=False)
    result = cli(capsys, "list", "--user", "alice", *args)
    assert (result.code, result.out) == (0, "")
    assert "$SQLSESSION_SECRET_KEY is not set" in result.err
    monkeypatch.setenv("APP_SECRET", "app-secret")
    result = cli(capsys, "list", "--user", "alice", "--secret-key-env", "APP_SECRET", *args)
    assert result.code == 0, result.err
    header, row = result.out.splitlines()
    assert header.split() == [
        "LABEL",
        "CREATED",
        "(UTC)",
        "LAST",
        "SEEN",
        "(UTC)",
        "ADDRESS",
        "USER",
        "AGENT",
    ]
    assert row.split()[-2:] == ["::/48", "Firefox"]
    no_secrets(result, cookie)
    assert "alice" not in result.out + result.err
    assert "app-secret" not in result.out + result.err
