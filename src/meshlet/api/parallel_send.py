"""The watch fan-out's sends, split over the machine's cores.

On loopback, and on a host's NIC alike, a send is mostly kernel work (the TCP of both
ends, on loopback), so one batch of sends to distinct sockets scales with the cores
that make them. With the compiled ``send_many`` each share runs with the GIL
released; in pure Python a second thread would only take turns holding the GIL,
so there the batch stays on the calling thread.
"""

from __future__ import annotations

import logging
import os
from array import array
from concurrent.futures import Future, ThreadPoolExecutor

import meshlet.compiled  # noqa: F401  (picks the build of send_many, before its import)
from meshlet.api import send_many

log = logging.getLogger(__name__)
MOST_WAYS = 4  # beyond this the threads would mostly wait on each other's locks
# Below this many sockets waking a thread costs more than the sends it takes over.
PARALLEL_FROM = 256


def ways_here() -> int:
    """How many threads share a batch: the cores this process may run on."""
    if not send_many.COMPILED:
        return 1
    return max(1, min(MOST_WAYS, len(os.sched_getaffinity(0))))


class Senders:
    """Writes one answer to many sockets, the caller's thread taking the first share
    and pooled threads the others; the call returns once every share is done."""

    def __init__(self, ways: int | None = None) -> None:
        self.ways = ways_here() if ways is None else max(1, ways)
        self.pool: ThreadPoolExecutor | None = None

    def send(self, fds: array[int], data: bytes) -> array[int]:
        """Per fd, the bytes the kernel took, or minus the errno (``send_each``). It
        never raises, and returns only once no thread is sending: a share that could
        not be sent leaves zeros (nothing sent), for the caller to send another way."""
        count = len(fds)
        sent = array("q", bytes(8 * count))
        ways = self.ways if count >= PARALLEL_FROM else 1
        bounds = [count * share // ways for share in range(ways + 1)]
        mine = [(bounds[0], bounds[1])]
        pooled: list[Future[None]] = []
        for share in range(1, ways):
            try:
                if self.pool is None:
                    self.pool = ThreadPoolExecutor(ways - 1, thread_name_prefix="watch-send")
                pooled.append(self.pool.submit(send_many.send_each, fds, data, sent,
                                               bounds[share], bounds[share + 1]))
            except Exception:  # no thread to be had (a pids limit): this one sends it
                log.exception("starting a watch sender thread")
                mine.append((bounds[share], bounds[share + 1]))
        try:
            for start, stop in mine:
                send_many.send_each(fds, data, sent, start, stop)
        except Exception:
            log.exception("sending watch answers")
        finally:
            for future in pooled:
                try:
                    future.result()
                except Exception:
                    log.exception("sending watch answers")
        return sent

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)
            self.pool = None
