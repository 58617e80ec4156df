"""``python -m config.serve``: workers each on their own SO_REUSEPORT socket, supervised.

Run against a tiny app that answers with its worker's pid, so the tests see which worker
took each connection."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy.conftest import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
APP = "tests.serve.pid_app:app"


class Server:
    def __init__(self, *args: str, workers: int = 2) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(  # noqa: S603 - our own command line
            [
                sys.executable,
                "-m",
                "config.serve",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                *args,
            ],  # fmt: skip
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def get_pid(self, conn: http.client.HTTPConnection | None = None) -> int:
        """The pid of the worker answering on ``conn`` (or on a new connection of its own)."""
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            return int(response.read())
        finally:
            if own:
                conn.close()

    def wait_serving(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                self.get_pid()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the server never answered")

    def wait_every_worker_serving(self, count: int = 2) -> None:
        """A worker is a child from its fork, but takes connections only once it has bound
        its socket: until every worker has answered, the kernel spreads over fewer."""
        wait_for(lambda: len(self.workers()) == count, timeout=15)
        wait_for(lambda: {self.get_pid() for _ in range(16)} == self.workers(), timeout=15)

    def workers(self) -> set[int]:
        """The supervisor's live children."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    def output(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stdout is not None
        return self.process.stdout.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server(APP)
    running.wait_serving()
    yield running
    running.stop()


def test_keep_alive_connections_are_spread_over_the_workers(server: Server) -> None:
    """40 clients connect at once and stay connected: a shared listening socket would let
    the first worker awake take them all; with a socket each, both workers get a share."""
    server.wait_every_worker_serving()
    connections = [
        http.client.HTTPConnection("127.0.0.1", server.port, timeout=5) for _ in range(40)
    ]
    for conn in connections:
        conn.connect()
    taken = Counter(server.get_pid(conn) for conn in connections)
    # Each connection keeps its worker: a second request on it answers from the same pid.
    assert all(server.get_pid(conn) == server.get_pid(conn) for conn in connections[:5])
    for conn in connections:
        conn.close()
    assert set(taken) == server.workers()
    # A fair coin puts fewer than 8 of 40 on one side about once in 100,000 runs.
    assert min(taken.values()) >= 8, taken


def test_a_worker_that_dies_is_replaced(server: Server) -> None:
    wait_for(lambda: len(server.workers()) == 2, timeout=15)
    before = server.workers()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    wait_for(lambda: len(server.workers()) == 2 and victim not in server.workers(), timeout=15)
    assert server.process.poll() is None
    new_worker = (server.workers() - before).pop()
    # The new worker serves: every live worker answers within a few connections.
    wait_for(lambda: new_worker in {server.get_pid() for _ in range(20)}, timeout=15)


def test_sighup_replaces_every_worker(server: Server) -> None:
    """Each successor starts before its predecessor stops, so the server keeps answering.
    (A connection that lands in a retiring worker's accept queue just as it closes may be
    reset: the kernel moves them only with net.ipv4.tcp_migrate_req=1.)"""
    wait_for(lambda: len(server.workers()) == 2, timeout=15)
    before = server.workers()
    server.process.send_signal(signal.SIGHUP)

    wait_for(lambda: len(server.workers()) == 2 and not (server.workers() & before), timeout=15)
    assert server.process.poll() is None
    after = server.workers()
    wait_for(lambda: {server.get_pid() for _ in range(20)} == after, timeout=15)


def test_sigterm_stops_the_supervisor_and_every_worker(server: Server) -> None:
    wait_for(lambda: len(server.workers()) == 2, timeout=15)
    workers = server.workers()
    server.process.send_signal(signal.SIGTERM)

    assert server.process.wait(15) == 0
    wait_for(lambda: all(_exited(pid) for pid in workers), timeout=15)


def _exited(pid: int) -> bool:
    """Gone, or a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def test_workers_failing_at_start_up_stop_the_server() -> None:
    """An app that cannot be imported is a configuration error, not a crash to retry forever."""
    broken = Server("tests.serve.no_such_module:app")
    try:
        assert broken.process.wait(60) == 1
        assert "No module named 'tests.serve.no_such_module'" in broken.output()
    finally:
        broken.stop()


def test_one_worker_serves_without_a_supervisor() -> None:
    single = Server(APP, workers=1)
    try:
        single.wait_serving()
        assert single.get_pid() == single.process.pid
    finally:
        single.stop()
