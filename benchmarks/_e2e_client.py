"""One contender's server under e2e.py: start it, sign visitors in, read them, load it with wrk."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
SERVE = HERE / "_e2e_serve.py"
WRK_SCRIPT = HERE / "_e2e_wrk.lua"
READY_TIMEOUT = 60.0  # seconds for uvicorn to start (sqlsession checks its table at startup)


class HarnessError(RuntimeError):
    """The harness cannot go on (a server that does not start, wrk missing)."""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]  # wrk's counts: connect, read, write, status (non-2xx/3xx), timeout
    p50_ms: float
    p99_ms: float


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise HarnessError("wrk is not installed: apt-get install -y wrk (Debian's package)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """The uvicorn process of one contender (`_e2e_serve.py`), stopped with SIGINT.

    Args:
        contender: the contender's name.
        options: more command-line options for `_e2e_serve.py` (database, Redis).
    """

    def __init__(self, contender: str, options: list[str]) -> None:
        self.contender = contender
        self.port = free_port()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        command = [sys.executable, str(SERVE), contender, "--port", str(self.port), *options]
        self.process = subprocess.Popen(
            command, cwd=HERE, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.ps = psutil.Process(self.process.pid)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(f"{self.contender}'s server exited:\n{self.log()}")
            try:
                status, _, _ = self.request("GET", "/plain")
            except OSError:
                time.sleep(0.1)
                continue
            if status == 200:
                return
            raise HarnessError(f"{self.contender}: /plain answered {status}:\n{self.log()}")
        raise HarnessError(f"{self.contender}'s server did not start:\n{self.log()}")

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn shuts the lifespan down
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def request(
        self, method: str, path: str, cookie: str | None = None
    ) -> tuple[int, str, list[str]]:
        """One request: its status, body and Set-Cookie headers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Cookie": cookie} if cookie else {}
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            body = response.read().decode()
            return response.status, body, response.headers.get_all("set-cookie") or []
        finally:
            conn.close()

    def sign_in(self, user: int) -> str:
        """Sign user `user` in with a new visitor; returns the Cookie header it sends."""
        status, body, set_cookies = self.request("POST", f"/signin/{user}")
        if status != 200 or not set_cookies:
            raise HarnessError(f"{self.contender}: sign-in answered {status} {body!r}")
        return "; ".join(header.split(";", 1)[0].strip() for header in set_cookies)

    def read(self, cookie: str) -> tuple[str, int, int]:
        """What /read sees of the session behind `cookie`: user, cart length, counter."""
        status, body, _ = self.request("GET", "/read", cookie)
        if status != 200:
            raise HarnessError(f"{self.contender}: /read answered {status} {body!r}")
        user, cart, counter = body.split()
        return user, int(cart), int(counter)

    def wrk(
        self, method: str, path: str, cookies: list[str], seconds: int, connections: int
    ) -> WrkResult:
        """Load `path` for `seconds` with wrk's one thread and `connections` connections."""
        command = [
            wrk_path(),
            "--threads",
            "1",
            "--connections",
            str(connections),
            "--duration",
            f"{seconds}s",
            "--timeout",
            "10s",
            "--latency",
            "--script",
            str(WRK_SCRIPT),
            f"http://127.0.0.1:{self.port}{path}",
            "--",
            method,
            *cookies,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        for line in done.stdout.splitlines():
            if line.startswith("E2E-RESULT "):
                data = json.loads(line.removeprefix("E2E-RESULT "))
                break
        else:
            raise HarnessError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        errors = {
            name: int(data[name]) for name in ("connect", "read", "write", "status", "timeout")
        }
        return WrkResult(
            requests=int(data["requests"]),
            seconds=data["duration_us"] / 1e6,
            errors=errors,
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
        )
