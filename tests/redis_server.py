"""Redis servers owned by one test, so an outage can be staged without touching the shared
Redis on 6379: a real `redis-server` on a free port that the test stops, freezes and
restarts, and a socket that accepts connections and never answers (a hung Redis)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from types import TracebackType

import pytest
import redis

STARTUP_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found is None:
        pytest.skip("redis-server is not installed: outage tests need a Redis of their own")
    return found


class RedisServer:
    """A throwaway `redis-server` (no persistence) on a fixed port across restarts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.binary = redis_server_binary()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url(db), socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> RedisServer:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        probe = self.client()
        try:
            while True:
                try:
                    if probe.ping():
                        return self
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            probe.close()

    def stop(self) -> None:
        """Kill the server (its data is gone, as after a crash without persistence)."""
        if self.process is None:
            return
        self.resume()
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers; data is kept."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


class HangingServer:
    """Accepts TCP connections and never replies, like a Redis stuck mid-failover."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hanging-redis", daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        """Connections accepted so far: one per Redis attempt the client made."""
        return len(self.connections)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)

    def wait_for_accepted(self, count: int, timeout: float = 2.0) -> int:
        """The accept thread lags the client's connect by a moment; wait for it."""
        deadline = time.monotonic() + timeout
        while self.accepted < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.accepted

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        for connection in self.connections:
            connection.close()
        self._thread.join(timeout=2)


class FakeMonotonic:
    """A monotonic clock the test moves, for the circuit breaker (no sleeping in tests)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RedisAttempts:
    """Counts what a redis-py client sends: every command and every pipeline takes one
    connection from the pool, so the count is the number of Redis attempts, known on the
    client's side the moment each call returns (no waiting for a server to notice)."""

    def __init__(self, client: redis.Redis) -> None:
        self.count = 0
        self._lock = threading.Lock()
        pool = client.connection_pool
        take = pool.get_connection

        def counted(*args: object, **kwargs: object) -> object:
            with self._lock:
                self.count += 1
            return take(*args, **kwargs)

        pool.get_connection = counted  # type: ignore[method-assign]


def suite_redis_url() -> str:
    """A Redis server of the test session's own (a free port, no persistence), stopped when
    the session ends: two suites on one machine would otherwise share keys, and as the user
    ids of their separate databases overlap, one suite's cached day is the other's miss.
    TEST_REDIS_URL names another; without redis-server, the shared Redis's database 13."""
    if os.environ.get("TEST_REDIS_URL"):
        return os.environ["TEST_REDIS_URL"]
    if shutil.which("redis-server") is None and not os.path.exists("/usr/bin/redis-server"):
        return "redis://127.0.0.1:6379/13"
    server = RedisServer().start()
    atexit.register(server.stop)
    return server.url()
