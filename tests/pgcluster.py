"""PostgreSQL clusters and pgbouncer of the tests' own, for restarts, poolers and failover.

Each server lives in a temporary directory, listens on 127.0.0.1 only, on a port from
its own range (clusters 55432-55439, pgbouncer 56432-56439), and is stopped and removed
by the fixture that made it. Both refuse to run as root, so as root they run as the
``postgres`` user (``runuser``), which owns their directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CLUSTER_PORTS = range(55432, 55440)
PGBOUNCER_PORTS = range(56432, 56440)
SUPERUSER = "postgres"
# A role that must give a password, for the authentication test.
PASSWORD_ROLE, PASSWORD = "needs_password", "right-password"


def free_port(ports: range) -> int:
    """The first port of `ports` nobody listens on at 127.0.0.1."""
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"No free port in {ports.start}-{ports.stop - 1}.")


def pg_bin(name: str) -> str:
    """The path of a PostgreSQL server program (not always on PATH on Debian)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise RuntimeError(f"{name} is not installed (Debian: apt-get install postgresql).")


def _as_owner(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SUPERUSER, "--", *args]
    return args


def run(args: list[str], timeout: float = 60) -> str:
    """Run a server program as the directory's owner; its output, or an error with it."""
    done = subprocess.run(
        _as_owner(args), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return done.stdout


def owned_tempdir(prefix: str) -> Path:
    """A new temporary directory the server user owns."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(path, SUPERUSER, SUPERUSER)
    path.chmod(0o700)
    return path


class Cluster:
    """One PostgreSQL cluster (a data directory and its server) on a port of its own."""

    def __init__(self, root: Path, name: str, port: int) -> None:
        self.root = root
        self.data = root / name
        self.port = port
        self.log = root / f"{name}.log"

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str, user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def init(self, **settings: str) -> None:
        """initdb, trust on 127.0.0.1 (a password for PASSWORD_ROLE), then `settings`."""
        run([pg_bin("initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "--no-sync"])
        (self.data / "pg_hba.conf").write_text(
            f"local all all trust\n"
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
            "host replication all 127.0.0.1/32 trust\n"
        )
        self.configure(
            listen_addresses="'127.0.0.1'",
            max_connections="60",
            fsync="off",  # a process crash keeps the OS cache: only power loss needs it
            full_page_writes="off",
            shared_buffers="'16MB'",
            wal_level="replica",
            max_wal_senders="4",
            **settings,
        )

    def configure(self, **settings: str) -> None:
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            for name, value in settings.items():
                conf.write(f"{name} = {value}\n")

    def start(self, *, wait: bool = True) -> None:
        """Start the server; with `wait`, until it takes connections (a standby that is
        not hot never does: see `wait_streaming`)."""
        waiting = ["-w", "-t", "60"] if wait else ["-W"]
        run(
            [
                pg_bin("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                f"-p {self.port} -k {self.root}",
                *waiting,
                "start",
            ],
            timeout=90,
        )

    def wait_streaming(self, standbys: int = 1, timeout: float = 60) -> None:
        """Wait until `standbys` standbys stream from this primary."""
        deadline = time.monotonic() + timeout
        sql = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        while int(self.psql(sql)) < standbys:
            if time.monotonic() > deadline:
                raise RuntimeError(f"No standby streams from port {self.port}.")
            time.sleep(0.1)

    def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        waiting = ["-w", "-t", "60"] if wait else ["-W"]
        run([pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, *waiting, "stop"], timeout=90)

    def promote(self) -> None:
        run([pg_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "promote"], timeout=90)

    def running(self) -> bool:
        done = subprocess.run(
            _as_owner([pg_bin("pg_ctl"), "-D", str(self.data), "status"]),
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` through the server's Unix socket; its unaligned output."""
        return run(
            [
                pg_bin("psql"),
                "-h",
                str(self.root),
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-XAtqc",
                sql,
            ]
        ).strip()

    def standby(self, name: str, port: int, **settings: str) -> Cluster:
        """A streaming hot standby of this cluster (pg_basebackup -R), not yet started."""
        replica = Cluster(self.root, name, port)
        run(
            [
                pg_bin("pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-D",
                str(replica.data),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
            timeout=120,
        )
        replica.configure(cluster_name=f"'{name}'", **settings)
        return replica

    def kill(self) -> None:
        """Stop the server whatever its state, for teardown."""
        if self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            with contextlib.suppress(ValueError, ProcessLookupError, OSError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)


@contextlib.contextmanager
def cluster(name: str = "primary", **settings: str) -> Iterator[Cluster]:
    """A started cluster of our own, stopped and removed after."""
    root = owned_tempdir("sqlsession-pg-")
    made = Cluster(root, name, free_port(CLUSTER_PORTS))
    try:
        made.init(**settings)
        made.start()
        yield made
    finally:
        made.kill()
        shutil.rmtree(root, ignore_errors=True)


class PgBouncer:
    """pgbouncer in transaction mode in front of one PostgreSQL server."""

    def __init__(self, root: Path, port: int, server_port: int, users: list[str]) -> None:
        self.root = root
        self.port = port
        self.pidfile = root / "pgbouncer.pid"
        self.ini = root / "pgbouncer.ini"
        (root / "users.txt").write_text("".join(f'"{user}" ""\n' for user in users))
        self.ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {root / 'users.txt'}\n"
            "pool_mode = transaction\n"
            # Few server connections for many clients, so statements of one client do
            # land on server connections another client prepared on.
            "default_pool_size = 3\n"
            "max_client_conn = 200\n"
            f"pidfile = {self.pidfile}\n"
            f"logfile = {root / 'pgbouncer.log'}\n"
        )

    def start(self) -> None:
        run(["pgbouncer", "-d", str(self.ini)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}: see {self.root}")

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def pgbouncer(server_port: int, users: list[str]) -> Iterator[PgBouncer]:
    """pgbouncer (pool_mode = transaction) on a port of its own, stopped after."""
    if shutil.which("pgbouncer") is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer).")
    root = owned_tempdir("sqlsession-pgbouncer-")
    bouncer = PgBouncer(root, free_port(PGBOUNCER_PORTS), server_port, users)
    if os.geteuid() == 0:
        for path in root.iterdir():
            shutil.chown(path, SUPERUSER, SUPERUSER)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(root, ignore_errors=True)
