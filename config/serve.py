"""Tollgate's server: ``python -m config.serve [--host H] [--port P] [--workers N]``.

Serves ``config.asgi:application`` with uvicorn (uvloop + httptools) in N worker processes,
each listening on *its own* ``SO_REUSEPORT`` socket bound to the same address, under a small
supervisor that restarts a worker that dies, stops them all on SIGTERM / SIGINT and
replaces them all on SIGHUP.

Why uvicorn, and why a socket per worker (measured with ``make bench`` on a 2-core VM,
2 workers, PostgreSQL + Redis, same run):

* uvicorn parses HTTP and runs the application in the worker's one event-loop thread. Granian
  (the previous server) parses in Rust threads and hands every ``receive`` / ``send`` to the
  Python loop across threads: about 80 system calls per proxied request at concurrency 1,
  a dozen of them futex wake-ups. Through uvicorn the proxy used 0.3–0.5 ms less server CPU
  per request at concurrency 1, about 20 % less under load (0.62–0.70 against 0.74–0.82 ms
  non-streaming, 0.77–0.85 against 0.96 ms per 20-chunk stream) and answered about 20 % more
  requests per second at concurrency 50. Granian is often cheaper for paced streams (each
  chunk its own write, done by its Rust threads beside Python).
* ``uvicorn --workers N`` shares one listening socket, and the worker that wakes first
  accepts a whole burst of connections (a load generator's 50 keep-alive connections all
  landed on one of two workers in most runs). With a socket per worker the kernel spreads
  new connections over the workers by a hash of their addresses (25/25, 24/26, 27/23 ... in
  the same test), so every worker takes its share of keep-alive clients.

The supervisor imports neither Django nor the application: each worker imports it after the
fork, so no connection or event loop is ever shared between processes.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence

APP = "config.asgi:application"
# A worker that exits sooner than this after starting is failing to start, not crashing:
# after a few such exits in a row the supervisor gives up instead of restarting forever.
QUICK_EXIT_SECONDS = 5.0
QUICK_EXITS_MAX = 5


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m config.serve", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1")))
    parser.add_argument("--backlog", type=int, default=4096, help="listen backlog per worker")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off: the proxy writes traces)"
    )
    parser.add_argument(
        "--keep-alive", type=int, default=75, help="idle keep-alive timeout, seconds"
    )
    parser.add_argument(
        "--graceful-timeout",
        type=int,
        default=30,
        help="on SIGTERM, seconds to let requests in flight finish before closing them",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        help="proxies whose X-Forwarded-* headers are trusted (uvicorn's option)",
    )
    parser.add_argument("app", nargs="?", default=APP)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket of this worker's own, sharing the address with its siblings."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def run_worker(args: argparse.Namespace) -> None:
    import uvicorn

    sock = bind(args.host, args.port, args.backlog)
    config = uvicorn.Config(
        args.app,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_keep_alive=args.keep_alive,
        timeout_graceful_shutdown=args.graceful_timeout,
        backlog=args.backlog,
        forwarded_allow_ips=args.forwarded_allow_ips,
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


class Supervisor:
    """Forks the workers, restarts one that dies, stops them all on SIGTERM / SIGINT, and
    replaces them all on SIGHUP (new code or settings): each successor starts before its
    predecessor is asked to stop, and the predecessor finishes the requests it has.

    A worker's listening socket is its own: connections still waiting in its accept queue
    when it closes it (a worker replaced or killed) are reset by the kernel, unless it moves
    them to a sibling's socket (Linux 5.14 and later, with ``net.ipv4.tcp_migrate_req=1``).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workers: dict[int, float] = {}  # pid -> when it started
        self.retiring: set[int] = set()  # asked to stop by SIGHUP, to be replaced
        self.stopping = False
        self.quick_exits = 0

    def spawn(self) -> None:
        pid = os.fork()
        if pid == 0:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            code = 0
            try:
                run_worker(self.args)
            except BaseException:  # noqa: BLE001 - reported, then the worker's exit code says it
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.workers[pid] = time.monotonic()

    def reload(self, signum: int, _frame: object) -> None:
        if self.stopping:
            return
        for pid in list(self.workers):
            if pid not in self.retiring:
                self.retiring.add(pid)
                self.spawn()  # the successor first, so the address never goes unserved
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self.workers.pop(pid, None)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, self.reload)
        for _ in range(self.args.workers):
            self.spawn()
        status = 0
        while self.workers:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries os.wait
                continue
            started = self.workers.pop(pid, None)
            if pid in self.retiring:
                self.retiring.discard(pid)  # replaced already
                continue
            if started is None or self.stopping:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            print(
                f"serve: worker {pid} exited ({code}); starting another",
                file=sys.stderr,
                flush=True,
            )
            if time.monotonic() - started < QUICK_EXIT_SECONDS:
                self.quick_exits += 1
                if self.quick_exits >= QUICK_EXITS_MAX:
                    print(
                        "serve: workers keep failing at start-up; stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    status = 1
                    self.stop(signal.SIGTERM, None)
                    continue
                time.sleep(0.5)
            else:
                self.quick_exits = 0
            self.spawn()
        return status


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    sys.path.insert(0, os.getcwd())
    if args.workers == 1:
        run_worker(args)
        return 0
    return Supervisor(args).run()


if __name__ == "__main__":
    sys.exit(main())
