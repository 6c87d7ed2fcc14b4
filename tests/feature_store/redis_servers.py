"""Real Redis for the tests: a `redis-server` on a free port, or a local 3-master Redis Cluster.

Each server runs in its own folder (given by the caller, e.g. a pytest tmp dir), bound to
127.0.0.1, without persistence unless asked. Both are context managers that stop every process
they started. The binaries must be on PATH: a missing one fails the test with a clear message
(CI installs them, see .ci/run), it never skips it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest
import redis

#: A cluster node also listens on its port + 10000 (the cluster bus).
CLUSTER_BUS_OFFSET = 10_000
STARTUP_TIMEOUT_SECONDS = 20.0


def redis_binary(name: str) -> str:
    """The path of `redis-server` or `redis-cli`; fails the calling test if it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not on PATH: the Redis store tests run against a real server. "
            "Install the Debian packages redis-server and redis-tools (.ci/run does).",
            pytrace=False,
        )
    return path


def free_port(*, with_cluster_bus: bool = False) -> int:
    """A TCP port that nothing listens on now (and its cluster bus port, if asked)."""
    for _ in range(100):
        port = _bindable(0)
        if not with_cluster_bus:
            return port
        bus = port + CLUSTER_BUS_OFFSET
        if bus <= 65_535 and _bindable(bus):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(port: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return 0
        return int(sock.getsockname()[1])


class RedisServer:
    """One `redis-server` process in `directory`; restartable on the same port and folder.

    `persistent=True` turns on the append-only file, fsynced at every write, so what a client
    was told is written survives a SIGKILL.
    """

    def __init__(
        self, directory: Path, *, cluster_node: bool = False, persistent: bool = False
    ) -> None:
        self.directory = directory
        self.cluster_node = cluster_node
        self.persistent = persistent
        self.port = free_port(with_cluster_bus=cluster_node)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        arguments = [
            redis_binary("redis-server"),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
            "--logfile", "redis.log",
        ]  # fmt: skip
        if self.cluster_node:
            arguments += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
            ]  # fmt: skip
        self.process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL)
        self._wait_until_it_answers()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save, as when a machine dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def flushall(self) -> None:
        with contextlib.closing(self.client()) as client:
            client.flushall()

    def _wait_until_it_answers(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        with contextlib.closing(self.client()) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited on start:\n{self._log_tail()}")
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer:\n{self._log_tail()}")
                time.sleep(0.02)

    def _log_tail(self) -> str:
        log = self.directory / "redis.log"
        return "\n".join(log.read_text().splitlines()[-20:]) if log.exists() else "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalCluster:
    """`masters` cluster-enabled servers joined by `redis-cli --cluster create`, no replicas."""

    def __init__(self, directory: Path, masters: int = 3, *, persistent: bool = False) -> None:
        self.nodes = [
            RedisServer(directory / f"node-{index}", cluster_node=True, persistent=persistent)
            for index in range(masters)
        ]

    @property
    def url(self) -> str:
        """A store URL: any one node is enough to find the others."""
        return f"redis+cluster://{self.nodes[0].address}"

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            create = [
                redis_binary("redis-cli"),
                "--cluster", "create", *(node.address for node in self.nodes),
                "--cluster-replicas", "0",
                "--cluster-yes",
            ]  # fmt: skip
            subprocess.run(create, check=True, capture_output=True, timeout=60)
            self.wait_until_every_node_is_ok()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()

    def wait_until_every_node_is_ok(self) -> None:
        """Every node reports `cluster_state:ok` with all 16384 slots served."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        for node in self.nodes:
            with contextlib.closing(node.client()) as client:
                while True:
                    info = client.execute_command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" in info and "cluster_slots_ok:16384" in info:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the cluster is not ok on {node.address}:\n{info}")
                    time.sleep(0.05)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
