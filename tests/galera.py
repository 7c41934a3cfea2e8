"""A 3-node MariaDB Galera cluster on loopback, for the cluster tests and the benchmark.

Node N (1..3) listens for SQL on 331N, for group communication on 456N, for IST on 457N
and for SST on 458N, all on 127.0.0.1, with its data in a temporary directory. Node 1
bootstraps the cluster (``--wsrep-new-cluster``); the others join it. Each node is
started with ``--defaults-file`` first, so nothing under /etc/mysql is read. Run as root,
the nodes run as ``mysql`` (which owns the directory): rsync's SST daemon, started as
root, would switch to ``nobody`` and could not write the joiner's data directory.

`GaleraCluster` owns its processes: `stop` kills every node it started (also after a
failed start), and nothing else.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["NODES", "GaleraCluster"]

NODES = (1, 2, 3)
_PROVIDER = "/usr/lib/galera/libgalera_smm.so"
_GCOMM = "gcomm://127.0.0.1:4567,127.0.0.1:4568,127.0.0.1:4569"
_START_TIMEOUT_S = 90.0


def sql_port(node: int) -> int:
    return 3310 + node


def _config(node: int, data: Path) -> str:
    run = data.parent / f"run{node}"
    return f"""[mariadbd]
datadir={data}
socket={run}/mariadbd.sock
pid-file={run}/mariadbd.pid
log-error={run}/error.log
bind-address=127.0.0.1
port={sql_port(node)}
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
innodb_flush_log_at_trx_commit=2
performance_schema=OFF
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
wsrep_on=ON
wsrep_provider={_PROVIDER}
wsrep_cluster_name=sqlsession_test
wsrep_cluster_address={_GCOMM}
wsrep_node_name=node{node}
wsrep_node_address=127.0.0.1:{4566 + node}
wsrep_provider_options="{_provider_options(node)}"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:{4586 + node}
wsrep_slave_threads=2
"""


def _provider_options(node: int) -> str:
    # IST's default port (base_port + 1) would be the next node's group port.
    return ";".join(
        (
            f"base_port={4566 + node}",
            f"gmcast.listen_addr=tcp://127.0.0.1:{4566 + node}",
            f"ist.recv_addr=127.0.0.1:{4576 + node}",
            "gcache.size=32M",
        )
    )


class GaleraCluster:
    """Three Galera nodes under `root` (a new temporary directory by default)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="sqlsession-galera-"))
        self._owns_root = root is None
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def url(self, node: int, database: str = "test") -> str:
        return f"mysql://root@127.0.0.1:{sql_port(node)}/{database}"

    def multi_host_url(self, database: str = "test", nodes: tuple[int, ...] = NODES) -> str:
        hosts = ",".join(f"127.0.0.1:{sql_port(n)}" for n in nodes)
        return f"mysql://root@{hosts}/{database}"

    def defaults_file(self, node: int) -> Path:
        return self.root / f"node{node}.cnf"

    def start(self, size: int = 3) -> None:
        """Initialise the nodes and start the first `size`; return when they are synced."""
        atexit.register(self.stop)  # also when the test run is interrupted
        try:
            for node in NODES:
                self._install(node)
            self.start_node(1, new_cluster=True)
            self.wait_ready(1)
            for node in NODES[1:size]:
                self.start_node(node)
            for node in NODES[1:size]:
                self.wait_ready(node)
            self.wait_size(size)
        except BaseException:
            self.stop()
            raise

    def join(self, node: int) -> None:
        """Start node `node` and wait until it has caught up with the cluster."""
        self.start_node(node)
        self.wait_ready(node)

    def _install(self, node: int) -> None:
        data = self.root / f"data{node}"
        run = self.root / f"run{node}"
        run.mkdir(parents=True, exist_ok=True)
        self.defaults_file(node).write_text(_config(node, data))
        if os.geteuid() == 0:
            for path in (self.root, run):
                shutil.chown(path, "mysql", "mysql")
        subprocess.run(
            [
                "mariadb-install-db",
                f"--defaults-file={self.defaults_file(node)}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def _user(self) -> list[str]:
        return ["--user=mysql"] if os.geteuid() == 0 else []

    def start_node(self, node: int, *, new_cluster: bool = False) -> None:
        """Start node `node` (it joins the running nodes, or bootstraps with `new_cluster`)."""
        args = ["mariadbd", f"--defaults-file={self.defaults_file(node)}", *self._user()]
        if new_cluster:
            args.append("--wsrep-new-cluster")
        self.processes[node] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def wait_ready(self, node: int, timeout: float = _START_TIMEOUT_S) -> None:
        """Wait until node `node` accepts SQL and is synced with the cluster."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes.get(node)
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"Galera node {node} exited: {self.log_tail(node)}")
            if self.query(node, "SHOW STATUS LIKE 'wsrep_local_state_comment'") == "Synced":
                return
            time.sleep(0.2)
        raise TimeoutError(
            f"Galera node {node} not synced after {timeout} s: {self.log_tail(node)}"
        )

    def wait_size(self, size: int, node: int = 1, timeout: float = _START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query(node, "SHOW STATUS LIKE 'wsrep_cluster_size'") == str(size):
                return
            time.sleep(0.2)
        raise TimeoutError(f"Galera cluster not of size {size} after {timeout} s")

    def query(self, node: int, sql: str) -> str | None:
        """The last column of the first row `sql` returns on `node` (None: no answer)."""
        if not _port_open(sql_port(node)):
            return None
        result = subprocess.run(
            [
                "mariadb",
                "--protocol=tcp",
                "-h127.0.0.1",
                f"-P{sql_port(node)}",
                "-uroot",
                "-N",
                "-B",
                "-e",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0 or not result.stdout.strip():
            return None
        return result.stdout.splitlines()[0].split("\t")[-1]

    def execute(self, node: int, sql: str) -> None:
        subprocess.run(
            [
                "mariadb",
                "--protocol=tcp",
                "-h127.0.0.1",
                f"-P{sql_port(node)}",
                "-uroot",
                "-e",
                sql,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def kill(self, node: int) -> None:
        """SIGKILL node `node`, as a crash would."""
        process = self.processes.pop(node)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def log_tail(self, node: int, lines: int = 15) -> str:
        log = self.root / f"run{node}" / "error.log"
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Kill every node this object started, then remove its directory."""
        for node, process in list(self.processes.items()):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
            del self.processes[node]
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
