"""The embedded DNS's sockets in a namespace of the test's own (needs root): ``serve``,
cancelled at any of its awaits (a workload stopping while its sandbox opens), leaves
no socket bound behind."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from meshlet.net import dns_listener, netns
from meshlet.net.dns import Records
from tests.conftest import async_wait_until, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates a namespace")

NAMESPACE = "ml-t-dns"


@pytest.fixture
def namespace() -> Iterator[str]:
    netns.create(NAMESPACE)
    try:
        yield NAMESPACE
    finally:
        netns.remove(NAMESPACE)


def taken(namespace: str) -> tuple[bool, bool]:
    """Whether 127.0.0.11:53 is bound in ``namespace``, over UDP and over TCP: a plain
    socket (no SO_REUSEADDR) cannot bind where another is, listening or not. It asks
    from a thread of its own and blocks the caller, event loop included, meanwhile."""
    def probe() -> tuple[bool, bool]:
        found = []
        with netns.inside(namespace):
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as sock:
                    try:
                        sock.bind((dns_listener.ADDRESS, 53))
                        found.append(False)
                    except OSError as exc:
                        if exc.errno != errno.EADDRINUSE:
                            raise
                        found.append(True)
        return found[0], found[1]
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(probe).result()


def no_records(name: str) -> Records | None:
    return None


async def test_serve_cancelled_at_any_await_leaves_no_socket(
        namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled after ``turns`` turns of the loop, counted from the end of the thread
    that binds the sockets (the loop is held until then), for ever more turns until
    ``serve`` is done: it stopped at each of its awaits once, and each time both sockets
    were closed (before, a cancellation while the TCP server started left it serving)."""
    suspended_at = set()
    bound = threading.Event()  # set by the real bind_both once it has both sockets
    real_bind_both = dns_listener.bind_both

    def bind_both(name: str) -> tuple[socket.socket, socket.socket]:
        found = real_bind_both(name)
        bound.set()
        return found
    monkeypatch.setattr(dns_listener, "bind_both", bind_both)
    for turns in itertools.count(1):
        bound.clear()
        task = asyncio.create_task(dns_listener.serve(namespace, no_records))
        await asyncio.sleep(0)  # serve runs to its first await: the thread binding
        # Waited for here, holding the loop, without probing the port (a probe's own
        # bind could take it first).
        assert bound.wait(10), "the sockets were not bound within 10 s"
        wait_until(lambda: taken(namespace) == (True, True), 10, "both sockets bound")
        for _ in range(turns - 1):
            await asyncio.sleep(0)
        if task.done():
            task.result().close()
            break
        suspended_at.add(task.get_stack()[0].f_lineno)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async def closed() -> bool:
            return taken(namespace) == (False, False)
        await async_wait_until(closed, 10, f"both sockets closed (cancelled after {turns})")
    # The thread's, the UDP transport's, the TCP server's start: each of serve's awaits.
    assert len(suspended_at) == 3, suspended_at
