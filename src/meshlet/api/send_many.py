"""One answer written to many sockets: the watch fan-out's sends.

A registration answers every watch of its service with the same bytes, and at
10,000 watchers the sends are the whole cost: each is a syscall that, on loopback,
also runs the receiving side's TCP. The compiled build (``send_many.pyx``, the
same function in C) makes them with the GIL released, so that the fan-out can
split one batch over the machine's cores (``parallel_send.Senders``). This file is
the pure Python build of it: the same result, one ``os.write`` at a time.
"""

from __future__ import annotations

import errno
import os
from array import array

COMPILED = not __file__.endswith(".py")


def send_each(fds: array[int], data: bytes, sent: array[int], start: int,
              stop: int) -> None:
    """Write ``data`` once to each of ``fds[start:stop]`` without blocking; into
    ``sent[i]`` go the bytes the kernel took (maybe fewer than all), or minus the
    errno (``EAGAIN``: none fit). A range outside the arrays raises ``IndexError``
    before anything is sent; empty ``data`` sends nothing and changes nothing."""
    if not data or start >= stop:
        return
    if start < 0 or stop > len(fds) or stop > len(sent):
        raise IndexError("send_each: range outside fds or sent")
    write = os.write
    for i in range(start, stop):
        try:
            sent[i] = write(fds[i], data)
        except OSError as exc:
            sent[i] = -(exc.errno or errno.EIO)
