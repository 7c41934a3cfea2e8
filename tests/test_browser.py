"""The example app in a real headless Chromium, with the browser's own cookie jar.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
NUL-terminated JSON on file descriptors 3 and 4), so no Python package beyond the
standard library is needed. The test skips when Debian's ``chromium`` is not installed;
``.ci/run`` installs it and turns skips into failures.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_e2e import World, example_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
    ),
]


class Chromium:
    """A headless Chromium and a minimal DevTools-protocol client over its pipe."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child must find the pipe ends at exactly fds 3 and 4. Move them out of the
        # way first, so the dup2 calls cannot overwrite each other.
        child_read, child_write = os.dup(to_browser_r) + 100, os.dup(from_browser_w) + 100
        os.dup2(to_browser_r, child_read)
        os.dup2(from_browser_w, child_write)

        def place_fds() -> None:
            os.dup2(child_read, 3)
            os.dup2(child_write, 4)

        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=place_fds,  # only dup2 calls run between fork and exec
            pass_fds=(3, 4),
        )
        for fd in (to_browser_r, from_browser_w, child_read, child_write):
            os.close(fd)
        self._next_id = 0
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._session = ""

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                data = json.loads(message)
                if "id" in data:
                    self._replies.put(data)

    def call(self, method: str, *, browser: bool = False, **params: Any) -> Any:
        """Send one command (to the page unless `browser`) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if not browser:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._replies.get(timeout=30)
            if reply["id"] == self._next_id:
                break
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def open_page(self) -> None:
        target = self.call("Target.createTarget", browser=True, url="about:blank")
        attached = self.call(
            "Target.attachToTarget", browser=True, targetId=target["targetId"], flatten=True
        )
        self._session = attached["sessionId"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, check: Callable[[Any], bool], timeout: float = 15) -> Any:
        """Evaluate `expression` until `check` accepts its value (pages navigate meanwhile)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
                if check(last):
                    return last
            except RuntimeError:
                pass  # the execution context went away with a navigation
            time.sleep(0.05)
        raise AssertionError(f"{expression} stayed {last!r}")

    def cookies(self, url: str) -> list[dict[str, Any]]:
        cookies: list[dict[str, Any]] = self.call("Network.getCookies", urls=[url])["cookies"]
        return cookies

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError, queue.Empty):
            self.call("Browser.close", browser=True)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        os.close(self._to_browser)
        self._reader.join(5)
        os.close(self._from_browser)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    assert CHROMIUM is not None
    browser = Chromium(CHROMIUM, tmp_path / "profile")
    try:
        browser.open_page()
        yield browser
    finally:
        browser.close()


def submit(browser: Chromium, form: str, **fields: str) -> None:
    script = "".join(
        f"document.querySelector('#{form} [name={name}]').value = {json.dumps(value)};"
        for name, value in fields.items()
    )
    browser.evaluate(script + f"document.querySelector('#{form}').requestSubmit();")


def settled(expected: dict[str, Any]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return (
            isinstance(value, dict)
            and value.get("ready") == "complete"
            and all(value.get(k) == v for k, v in expected.items())
        )

    return check


STATE = (
    "({ready: document.readyState, user: document.querySelector('#user b')?.textContent ?? null,"
    " count: document.querySelector('#count')?.textContent,"
    " cart: [...document.querySelectorAll('#cart li')].map(li => li.textContent)})"
)


def test_the_example_app_in_chromium(chromium: Chromium, sqlite_url: str, tmp_path: Path) -> None:
    (tmp_path / "barriers").mkdir()
    (tmp_path / "clock-offset").write_text("0")
    with example_server(World(url=sqlite_url, directory=tmp_path)) as base:
        chromium.call("Page.navigate", url=base + "/")
        chromium.wait_for(STATE, settled({"user": None, "count": "0", "cart": []}))
        assert chromium.cookies(base) == []  # a visit stores nothing

        submit(chromium, "add", item="apple")
        chromium.wait_for(STATE, settled({"cart": ["apple"]}))
        [anonymous] = chromium.cookies(base)

        submit(chromium, "signin", name="ada")
        chromium.wait_for(STATE, settled({"user": "ada", "cart": ["apple"]}))
        [cookie] = chromium.cookies(base)
        assert cookie["value"] != anonymous["value"]  # a new id at sign-in
        assert cookie["name"] == "session"
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Lax"
        assert cookie["path"] == "/"
        assert cookie["secure"] is False  # the example serves plain http on 127.0.0.1
        assert 0 < cookie["expires"] - time.time() <= 30 * 60 + 5  # the idle timeout
        assert chromium.evaluate("document.cookie") == ""  # invisible to scripts
        # "Your devices": this browser, by its User-Agent and its network (127.0.0.0/24).
        devices = chromium.evaluate(
            "[...document.querySelectorAll('#devices li')].map(li => li.textContent)"
        )
        assert len(devices) == 1
        assert "Chrome" in devices[0]
        assert "127.0.0.0/24" in devices[0]
        assert "this device" in devices[0]

        for n in (1, 2):
            submit(chromium, "counter")
            chromium.wait_for(STATE, settled({"count": str(n)}))
        submit(chromium, "add", item="pear")
        chromium.wait_for(STATE, settled({"cart": ["apple", "pear"]}))
        chromium.call("Page.reload")
        chromium.wait_for(STATE, settled({"user": "ada", "count": "2", "cart": ["apple", "pear"]}))

        submit(chromium, "signout")
        chromium.wait_for(STATE, settled({"user": None, "count": "0", "cart": []}))
        assert chromium.cookies(base) == []

        # The old cookie, put back by hand, is worth nothing now.
        chromium.call(
            "Network.setCookie",
            name="session",
            value=cookie["value"],
            url=base + "/",
            httpOnly=True,
        )
        chromium.call("Page.reload")
        chromium.wait_for(STATE, settled({"user": None, "count": "0", "cart": []}))
        assert chromium.cookies(base) == []  # and the server told the browser to drop it
