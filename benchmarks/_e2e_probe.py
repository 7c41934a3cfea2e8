"""CPU time of the app and of its database, read with psutil around each cell of e2e.py.

The app is the uvicorn process (all its threads: aiosqlite's too). The database is:
PostgreSQL, the backends serving the app's own connections (found by the client port in
their process titles); MariaDB and Redis, the whole server process, since one process
serves every client (on a shared machine, other clients' work counts too). SQLite and
the memory stores run inside the app, so their cost is in the app's figure.
"""

from __future__ import annotations

import re

import psutil

Snapshot = dict[int, float]  # pid -> CPU seconds (user + system)

_CLIENT_PORT = re.compile(r"\((\d+)\)")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _processes_named(names: tuple[str, ...]) -> Snapshot:
    found: Snapshot = {}
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in names:
            try:
                found[process.pid] = cpu_seconds(process)
            except psutil.NoSuchProcess:
                continue
    return found


def _postgres_backends(app: psutil.Process, port: int) -> Snapshot:
    # A backend's title reads "postgres: user db 127.0.0.1(51234) idle": the client port
    # in it matches one of the app's connections to the server.
    ours = {
        conn.laddr.port
        for conn in app.net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port
    }
    found: Snapshot = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] != "postgres":
            continue
        match = _CLIENT_PORT.search(" ".join(process.info["cmdline"] or ()))
        if match and int(match.group(1)) in ours:
            try:
                found[process.pid] = cpu_seconds(process)
            except psutil.NoSuchProcess:
                continue
    return found


class DatabaseProbe:
    """Reads the CPU time of one kind of database server: "postgres", "mariadb", "redis".

    Args:
        kind: the server, or None for a contender with no server (nothing to read).
        port: the server's port (PostgreSQL: to tell the app's backends from others).
    """

    def __init__(self, kind: str | None, port: int = 5432) -> None:
        self.kind = kind
        self.port = port

    def snapshot(self, app: psutil.Process) -> Snapshot:
        if self.kind == "postgres":
            return _postgres_backends(app, self.port)
        if self.kind == "mariadb":
            return _processes_named(("mariadbd", "mysqld"))
        if self.kind == "redis":
            return _processes_named(("redis-server",))
        return {}


def delta(before: Snapshot, after: Snapshot) -> float:
    """CPU seconds spent between two snapshots (a process that appeared counts in full)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
