"""What the root tests share: what meshlet left on the machine, a local daemon that
must leave nothing behind, and a client that reports which replica served it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from meshlet.net import bridge, netns
from tests.e2e.helpers import downed, free_port, meshlet, wait_for

# Run as `python -c GET URL N`: N requests, printing each answer's `served_by`.
GET_SERVED_BY = ("import json, sys, urllib.request\n"
                 "for _ in range(int(sys.argv[2])):\n"
                 "    print(json.load(urllib.request.urlopen(sys.argv[1], timeout=5))"
                 "['served_by'])")


def leftovers() -> list[str]:
    """meshlet's links in this namespace and meshlet's namespaces."""
    return bridge.ours() + netns.ours()


@contextlib.contextmanager
def clean_daemon(home: Path, *up_args: str) -> Iterator[Path]:
    """`meshlet up --detach` on a clean machine; `down` must leave it clean again."""
    assert leftovers() == [], "the machine is not clean before the test"
    with downed(home):
        meshlet("up", "--detach", "--http", f"127.0.0.1:{free_port()}", *up_args,
                home=home)
        yield home
    wait_for(lambda: leftovers() == [], 20, "down to remove every link and namespace")
