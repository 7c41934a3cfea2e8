"""The example app's "Your devices" panel and "shared computer" sign-in, through TestClient.

The middleware loads its own driver from a config (in TestClient's event loop), on
memory, SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from sqlsession import SessionDriverConfig, session_drivers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from app import create_app

LABEL = re.compile(r'data-label="([A-Za-z0-9_-]{16})"')


@pytest.fixture
def config(backend: str, request: pytest.FixtureRequest) -> SessionDriverConfig:
    if backend == "memory":
        return session_drivers.memory()
    return session_drivers.sql(request.getfixturevalue(f"{backend}_url"))


class Browser:
    """One visitor: its own cookie jar and User-Agent, over the one TestClient (one event
    loop, which the PostgreSQL and MariaDB drivers' connections belong to)."""

    def __init__(self, client: TestClient, agent: str) -> None:
        self.client = client
        self.agent = agent
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, **options: Any) -> Any:
        jar = self.client.cookies
        jar.clear()
        for name, value in self.cookies.items():
            jar.set(name, value)
        options.setdefault("follow_redirects", False)
        response = self.client.request(method, path, headers={"user-agent": self.agent}, **options)
        self.cookies = dict(jar.items())
        return response

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, **options: Any) -> Any:
        return self.request("POST", path, **options)


@pytest.fixture
def clients(config: SessionDriverConfig) -> Iterator[list[Browser]]:
    """Three browsers on one app, each with its own cookies and User-Agent."""
    with TestClient(create_app(config)) as client:
        yield [Browser(client, f"Browser {n}") for n in range(3)]


def sign_in(client: Browser, name: str, **extra: str) -> None:
    response = client.post("/signin", data={"name": name, **extra})
    assert response.status_code == 303


def panel(client: Browser) -> tuple[str, list[str]]:
    page = client.get("/").text
    return page, LABEL.findall(page)


def test_your_devices_lists_signs_out_one_and_the_others(clients: list[Browser]) -> None:
    laptop, phone, tablet = clients
    for client in clients:
        sign_in(client, "ada")
    page, labels = panel(phone)
    assert len(labels) == 3
    assert "Browser 0" in page
    assert "Browser 2" in page
    assert "testclient" not in page  # TestClient's client "address" is no IP: not kept
    assert page.count("<b>this device</b>") == 1
    # The panel as the laptop sees it names its own row "this device".
    _, laptop_labels = panel(laptop)
    assert sorted(laptop_labels) == sorted(labels)
    laptop_page = laptop.get("/").text
    own = re.search(r'data-label="([^"]+)">Browser 0[^<]*<b>this device</b>', laptop_page)
    assert own is not None
    # Sign the laptop out from the phone.
    response = phone.post("/devices/end", data={"label": own.group(1)})
    assert response.status_code == 303
    assert laptop.get("/state").json() == {}
    assert len(panel(phone)[1]) == 2
    # A label is not a cookie, and a bad one is a 400, not a 500.
    assert phone.post("/devices/end", data={"label": "x"}).status_code == 400
    # Sign out the others: the tablet goes, the phone stays.
    phone.post("/devices/signout-others")
    assert tablet.get("/state").json() == {}
    assert phone.get("/state").json() == {"user": "ada"}
    assert len(panel(phone)[1]) == 1


def test_a_shared_computer_gets_a_cookie_the_browser_drops_on_close(
    clients: list[Browser],
) -> None:
    first, second = clients[:2]
    response = first.post("/signin", data={"name": "ada", "shared": "1"})
    assert "Max-Age" not in response.headers["set-cookie"]
    response = second.post("/signin", data={"name": "bob"})
    assert "Max-Age=1800" in response.headers["set-cookie"]  # the idle timeout
    # The next idle refresh keeps it a browser-session cookie: nothing to check without a
    # clock here; tests/test_session_max_age.py moves one.
    assert first.get("/state").json() == {"user": "ada"}
