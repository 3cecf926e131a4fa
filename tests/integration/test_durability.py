"""Acknowledged writes survive kill -9 of a real server process."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from meshlet.api.client import Client
from meshlet.errors import MeshletError
from meshlet.raft.storage import decode_snapshot
from meshlet.raft.wal import SnapshotStore
from tests.conftest import management_token, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshlet", "server", "--data-dir", str(data_dir),
         "--http", f"127.0.0.1:{port}", "--snapshot-every", "150",
         "--snapshot-interval", "0s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: reachable(port), 15, message="the server to listen")
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def writer(client: Client, worker: int, acked: dict[str, bytes],
                 stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        key, value = f"w{worker}/k{i}", f"value-{worker}-{i}".encode()
        try:
            await client.kv_put(key, value)
        except MeshletError:
            if stop.is_set():
                return  # the server died under us: this write was never acknowledged
            await asyncio.sleep(0.05)  # not leading yet, or busy: try again
            continue
        acked[key] = value
        i += 1


async def write_until_killed(port: int, proc: subprocess.Popen[bytes],
                             acked: dict[str, bytes], writes: int, token: str) -> None:
    stop = asyncio.Event()
    async with Client(f"127.0.0.1:{port}", timeout=5, token=token) as client:
        tasks = [asyncio.create_task(writer(client, w, acked, stop)) for w in range(8)]
        while len(acked) < writes:
            await asyncio.sleep(0.005)
        stop.set()
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: some writes are in flight
        await asyncio.gather(*tasks)


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    port = free_port()
    acked: dict[str, bytes] = {}
    for round_ in range(3):  # kill it three times, through snapshots and log segments
        proc = start_server(tmp_path, port)
        try:
            asyncio.run(write_until_killed(port, proc, acked, 400 * (round_ + 1),
                                           management_token(tmp_path)))
        finally:  # killed by the writers, or, if they failed, here
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
    proc = start_server(tmp_path, port)
    try:
        async def read_all() -> dict[str, bytes]:
            async with Client(f"127.0.0.1:{port}", token=management_token(tmp_path)) as c:
                entries = await c.kv_list("")
                return {e["key"]: base64.b64decode(e["value"]) for e in entries}
        stored = asyncio.run(read_all())
        missing = [k for k in acked if stored.get(k) != acked[k]]
        assert len(acked) >= 1200
        snapshot = SnapshotStore(tmp_path / "raft").load()
        assert snapshot is not None and decode_snapshot(snapshot).index > 0  # recovery used one
        assert missing == []
    finally:
        proc.terminate()
        proc.wait(10)
