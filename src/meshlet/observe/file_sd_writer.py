"""Keep a Prometheus file_sd file current: the I/O behind ``meshlet prometheus-sd``.

``discover`` reads the mesh from the API (the Raft members, the nodes, every service's
instances) and returns the target groups (``file_sd.target_groups``) with the indexes
they were read at. ``keep_current`` writes them, then holds two blocking queries, on the
nodes and on the catalog; when either index moves (or ``wait`` passes: membership
changes have no index to wait on, so they are picked up then) it reads the mesh again.

``write_if_changed`` writes atomically — a temporary file in the same directory, fsync'd,
renamed over the old one, then the directory fsync'd — and only when the bytes differ
from the file's, so Prometheus, which watches the file, never reads half of one and
reloads only on a change. The file is 0644: Prometheus usually runs as another user.

While it keeps the file current, a failure to reach the server is logged and retried
with a back-off (the file keeps the last targets, which Prometheus keeps scraping);
errors retrying cannot cure (a bad token, no right to read) end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from meshlet.backoff import Backoff
from meshlet.errors import NetworkError, NotFound, NotLeader, StorageError, Unavailable
from meshlet.observe.file_sd import Group, render, target_groups

log = logging.getLogger(__name__)
WATCH_WAIT = 30.0
MODE = 0o644
# What waiting may cure: the server down or between leaders. Anything else (a bad
# token, no right to read, a file that cannot be written) ends it.
TRANSIENT = (Unavailable, NotLeader, NetworkError)
RETRY_FIRST, RETRY_CAP = 0.2, 10.0  # seconds, doubled after each failure in a row


class MeshReader(Protocol):
    """The API calls discovery makes (``api.client.Client``'s); each raises MeshletError.
    The blocking ones answer once the index moved past ``index`` (None: at once)."""

    async def status(self) -> dict[str, Any]: ...

    async def nodes(self, index: int | None = None, wait: float = 30.0
                    ) -> tuple[list[dict[str, Any]], int]: ...

    async def services_after(self, index: int | None, wait: float = 30.0
                             ) -> tuple[list[dict[str, Any]], int]: ...

    async def instances(self, service: str, passing: bool = False,
                        index: int | None = None, wait: float = 30.0
                        ) -> tuple[list[dict[str, Any]], int]: ...


def write_if_changed(path: Path, content: bytes) -> bool:
    """Replace ``path`` with ``content`` unless it holds it already; True if written.
    Raises StorageError naming the file."""
    try:
        if path.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
    directory = path.absolute().parent
    temp = None
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fchmod(out.fileno(), MODE)
            os.fsync(out.fileno())
        os.replace(temp, path)
        temp = None
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    return True


async def discover(client: MeshReader) -> tuple[list[Group], int, int]:
    """The target groups, with the nodes' and the catalog's indexes they reflect."""
    status = await client.status()
    nodes, nodes_index = await client.nodes()
    services, catalog_index = await client.services_after(None)
    instances: list[dict[str, Any]] = []
    for service in sorted(str(s["name"]) for s in services):
        try:
            found, _ = await client.instances(service)
        except NotFound:  # gone since it was listed: the catalog's index moved, too
            continue
        instances += found
    return target_groups(status.get("members", []), nodes, instances), nodes_index, \
        catalog_index


async def _changed(client: MeshReader, nodes_index: int, catalog_index: int,
                   stop: asyncio.Event, wait: float) -> None:
    """Return once the nodes or the catalog moved past the indexes, ``wait`` passed, or
    ``stop`` is set; raises MeshletError as the queries do."""
    tasks = [asyncio.ensure_future(client.nodes(nodes_index, wait)),
             asyncio.ensure_future(client.services_after(catalog_index, wait)),
             asyncio.ensure_future(stop.wait())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # raises what the query raised
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def keep_current(client: MeshReader, path: Path, stop: asyncio.Event, once: bool = False,
                       wait: float = WATCH_WAIT,
                       wrote: Callable[[int], None] = lambda count: None) -> None:
    """Write the targets to ``path`` and, unless ``once``, keep them current until
    ``stop`` is set. ``wrote(count)`` is told each write. Raises MeshletError (with
    ``once``: any; else only what retrying cannot cure)."""
    backoff = Backoff(RETRY_FIRST, RETRY_CAP)
    while not stop.is_set():
        try:
            groups, nodes_index, catalog_index = await discover(client)
            if write_if_changed(path, render(groups)):
                wrote(len(groups))
            if once:
                return
            await _changed(client, nodes_index, catalog_index, stop, wait)
            backoff.reset()
        except TRANSIENT as exc:
            if once:
                raise
            delay = backoff.next_delay()
            log.warning("prometheus-sd: %s; keeping %s as it is, retrying in %.1fs",
                        exc, path, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
