"""Passwords, session ids and values stay out of CLI output, error messages and reprs."""

from __future__ import annotations

import datetime
import decimal
from pathlib import Path

import pytest

from sqlsession import ValueNotSerializableError, session_drivers
from sqlsession._url import redact_url
from sqlsession.config import SessionDriverConfig
from sqlsession.drivers.memory import MemoryDriver
from sqlsession.drivers.sql import SQLDriver
from sqlsession.web import CookieChange
from tests.conftest import run_script

SECRET = "hunter2pw"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://app:hunter2pw@db/app", "postgresql://app:***@db/app"),
        ("postgresql://app@db/app?password=hunter2pw", "postgresql://app@db/app?password=***"),
        ("mysql://app@db/app?passwd=hunter2pw&x=1", "mysql://app@db/app?passwd=***&x=1"),
        (
            "postgresql://app@db/app?sslpassword=hunter2pw",
            "postgresql://app@db/app?sslpassword=***",
        ),
        # Typed with one slash, none, no "//" or no scheme: not URLs we parse, still hidden.
        ("postgresql:/app:hunter2pw@db/app", "postgresql:/app:***@db/app"),
        ("postgresql:app:hunter2pw@db/app", "postgresql:app:***@db/app"),
        ("postgres//app:hunter2pw@db/app", "postgres//app:***@db/app"),
        ("app:hunter2pw@db/app", "app:***@db/app"),
        (
            "postgresql:/app:hunter2pw@db/app?next=http://x",
            "postgresql:/app:***@db/app?next=http://x",
        ),
        ("postgresql:/app@db/app?password=hunter2pw", "postgresql:/app@db/app?password=***"),
        # A password holding / ? or @ unescaped.
        ("postgresql://app:hun/te?r@2pw@db/app", "postgresql://app:***@db/app"),
        ("sqlite:///sessions.db", "sqlite:///sessions.db"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


# A URL typed with one slash: refused as unparseable, and the refusal hides the password.
ONE_SLASH = "postgresql:/app:hunter2pw@127.0.0.1:1/app"


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["stats", "--url", ONE_SLASH], {}),
        (["alembic", "--url", ONE_SLASH, "current"], {}),
        (["migrate"], {"SQLSESSION_URL": ONE_SLASH}),  # also the "using ..." line
    ],
)
def test_cli_errors_hide_the_password(args: list[str], env: dict[str, str], tmp_path: Path) -> None:
    result = run_script("sqlsession", *args, env=env, cwd=tmp_path)
    assert result.returncode == 3, result
    assert "postgresql:/app:***@127.0.0.1:1/app" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_reprs_hide_passwords_and_ids() -> None:
    url = "postgresql://app:hunter2pw@db/app?password=hunter2pw"
    cfg = session_drivers.sql(url=url)
    third_party = SessionDriverConfig(
        "myapp.store",
        {
            "dsn": "redis://:hunter2pw@cache/0",
            "api_token": SECRET,
            "nested": [{"password": SECRET}],
        },
    )
    driver = SQLDriver(url)
    session_id = "A" * 43
    for text in (repr(cfg), repr(third_party), repr(driver), repr(driver.options)):
        assert SECRET not in text, text
        assert "***" in text
    assert "db/app" in repr(cfg)
    assert "sqlsession.drivers.sql" in repr(cfg)
    assert "redis://:***@cache/0" in repr(third_party)
    assert "'sqlsession'" in repr(driver)
    assert session_id not in repr(CookieChange(session_id, 60.0))
    assert "hunter2pw" not in repr(MemoryDriver())


@pytest.mark.parametrize(
    "value",
    [
        {"card": decimal.Decimal("4111111111111111")},
        {"when": datetime.date(4111, 11, 11)},
        {"by_user": {4111111111111111: "x"}},
    ],
)
async def test_a_refused_value_is_named_by_type_not_shown(value: object) -> None:
    async with MemoryDriver() as driver:
        with pytest.raises(ValueNotSerializableError) as raised:
            await driver.set_item("k", value)
    message = str(raised.value)
    assert "4111" not in message
    assert "is not JSON" in message
