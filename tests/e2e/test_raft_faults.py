"""Three Raft servers under faults, checked for linearizability: concurrent clients do
KV put, get (consistent, and default: served under the leader's lease) and
check-and-set through random servers while a nemesis kills servers with -9 and
restarts them, and cuts links between them through a relay."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import env_for, free_ports, stop_processes, token_header, wait_for
from tests.linearizability import Op, check

pytestmark = pytest.mark.e2e
IDS = ["s1", "s2", "s3"]
KEYS = [f"k{i}" for i in range(8)]  # many keys keep each key's history short to check


class Relay:
    """TCP relays for every directed link between servers; links can be cut."""

    def __init__(self, targets: dict[str, int], ports: list[int]) -> None:
        self.targets = targets
        links = [(a, b) for a in IDS for b in IDS if a != b]
        self.ports = dict(zip(links, ports, strict=True))
        self.cut: set[frozenset[str]] = set()
        self.conns: dict[tuple[str, str], set[asyncio.StreamWriter]] = {
            link: set() for link in self.ports}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers: list[asyncio.Server] = []

    def __enter__(self) -> Relay:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def start(self) -> None:
        for link, port in self.ports.items():
            self.servers.append(await asyncio.start_server(
                lambda r, w, link=link: self.pipe(link, r, w), "127.0.0.1", port))

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for writers in self.conns.values():
            for w in writers:
                w.close()

    async def pipe(self, link: tuple[str, str], reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        if frozenset(link) in self.cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1",
                                                                 self.targets[link[1]])
        except OSError:
            writer.close()
            return
        self.conns[link] |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.close()
        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self.conns[link] -= {writer, up_writer}

    def set_cut(self, a: str, b: str, cut: bool) -> None:
        def apply() -> None:
            pair = frozenset((a, b))
            if cut:
                self.cut.add(pair)
                for link in ((a, b), (b, a)):
                    for w in list(self.conns[link]):
                        w.close()
            else:
                self.cut.discard(pair)
        self.loop.call_soon_threadsafe(apply)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        ports = free_ports(12)  # 3 raft + 3 http + 6 relay links, all distinct
        self.raft = dict(zip(IDS, ports[:3], strict=True))
        self.http = dict(zip(IDS, ports[3:6], strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.relay = Relay(self.raft, ports[6:])

    def start(self, node: str) -> None:
        peers = [f"--peer={p}=127.0.0.1:{self.relay.ports[(node, p)]},127.0.0.1:{self.http[p]}"
                 for p in IDS if p != node]
        with open(self.root / f"{node}.log", "ab") as log:  # kept for a failing run
            self.procs[node] = subprocess.Popen(
                [sys.executable, "-m", "meshlet", "--verbose", "server", "--id", node,
                 "--data-dir", str(self.root / node), "--http",
                 f"127.0.0.1:{self.http[node]}", "--raft", f"127.0.0.1:{self.raft[node]}",
                 *peers], env=env_for(self.root), stdout=log, stderr=log)

    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.http[node]}"


class NotApplied(Exception):
    """The request certainly changed nothing (refused, or rejected before proposing)."""


AUTH: dict[str, str] = {}  # the cluster's management token header, once it has one


def request(method: str, url: str, body: bytes | None = None) -> tuple[int, dict | None]:  # type: ignore[type-arg]
    req = urllib.request.Request(url, data=body, method=method, headers=AUTH)
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())["error"]
        except (ValueError, KeyError):
            return exc.code, None
        if error["code"] == "not_leader" and "may still commit" not in error["message"]:
            raise NotApplied(error["message"]) from None
        return exc.code, None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            raise NotApplied("connection refused") from None
        raise


class Client(threading.Thread):
    def __init__(self, number: int, cluster: Cluster, history: list[Op], stop: threading.Event,
                 seed: int) -> None:
        super().__init__(daemon=True)
        self.number = number
        self.cluster = cluster
        self.history = history
        self.stop_event = stop
        self.rng = random.Random(seed)
        self.seen: dict[str, int] = {}

    def run(self) -> None:
        counter = 0
        while not self.stop_event.is_set():
            key = self.rng.choice(KEYS)
            node = self.rng.choice(IDS)
            base = f"{self.cluster.url(node)}/v1/kv/{key}"
            roll = self.rng.random()
            call = time.monotonic()
            try:
                if roll < 0.4:
                    counter += 1
                    value = f"c{self.number}-{counter}"
                    status, body = request("PUT", base, value.encode())
                    ret = time.monotonic()
                    if status == 200 and body:
                        self.seen[key] = body["modify_index"]
                        op = Op(self.number, "put", key, value, None, call, ret, True, None,
                                body["modify_index"])
                    else:
                        op = Op(self.number, "put", key, value, None, call, None, False, None,
                                None)
                elif roll < 0.9:
                    mode = self.rng.choice(["consistent", "default"])  # lease reads too
                    status, body = request("GET", f"{base}?consistency={mode}")
                    ret = time.monotonic()
                    if status == 200 and body:
                        import base64
                        value = base64.b64decode(body["value"]).decode()
                        self.seen[key] = body["modify_index"]
                        op = Op(self.number, "get", key, None, None, call, ret, True, value,
                                body["modify_index"])
                    elif status == 404:
                        op = Op(self.number, "get", key, None, None, call, ret, False, None,
                                None)
                    else:
                        continue  # an unanswered read constrains nothing
                else:
                    counter += 1
                    value = f"c{self.number}-{counter}"
                    expect = self.seen.get(key, 0)
                    status, body = request("PUT", f"{base}?cas={expect}", value.encode())
                    ret = time.monotonic()
                    if status == 200 and body:
                        self.seen[key] = body["modify_index"]
                        op = Op(self.number, "cas", key, value, expect, call, ret, True, None,
                                body["modify_index"])
                    elif status == 409:
                        op = Op(self.number, "cas", key, value, expect, call, ret, False, None,
                                None)
                    else:
                        op = Op(self.number, "cas", key, value, expect, call, None, False, None,
                                None)
            except NotApplied:
                continue
            except (OSError, ValueError, http.client.HTTPException):
                # No answer, or half of one (a server killed mid-response): unknown.
                kind = "put" if roll < 0.4 else "get" if roll < 0.9 else "cas"
                if kind == "get":
                    continue
                op = Op(self.number, kind, key, f"c{self.number}-{counter}",
                        self.seen.get(key, 0) if kind == "cas" else None, call, None, False,
                        None, None)
            self.history.append(op)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    with c.relay:
        for node in IDS:
            c.start(node)
        try:
            yield c
        finally:
            stop_processes(c.procs, kill=True)


def test_linearizable_under_kills_and_cuts(cluster: Cluster) -> None:
    def has_leader() -> bool:
        AUTH.update(token_header(cluster.root))
        if not AUTH:  # the first leader has not made the management token yet
            return False
        for node in IDS:
            try:
                status, body = request("GET", cluster.url(node) + "/v1/status")
            except (OSError, NotApplied):
                continue
            if status == 200 and body and body["leader"]:
                return True
        return False
    wait_for(has_leader, 30, "a leader")
    history: list[Op] = []
    stop = threading.Event()
    clients = [Client(i, cluster, history, stop, seed=i) for i in range(4)]
    for c in clients:
        c.start()
    rng = random.Random(42)
    deadline = time.monotonic() + 10
    faults = 0
    while time.monotonic() < deadline:
        time.sleep(1.0)  # the nemesis's pace; nothing waits on it
        victim = rng.choice(IDS)
        if rng.random() < 0.5:
            os.kill(cluster.procs[victim].pid, signal.SIGKILL)
            cluster.procs[victim].wait(10)
            time.sleep(0.7)
            cluster.start(victim)
        else:
            other = rng.choice([i for i in IDS if i != victim])
            cluster.relay.set_cut(victim, other, True)
            time.sleep(0.7)
            cluster.relay.set_cut(victim, other, False)
        faults += 1
    stop.set()
    for c in clients:
        c.join(30)
    # A client still waiting would leave its operation out of the history.
    assert not any(c.is_alive() for c in clients), "a client is stuck in a request"
    acknowledged = [op for op in history if op.ret is not None and op.kind != "get" and op.ok]
    assert len(acknowledged) > 20 and faults >= 5
    # The cluster makes progress again once everyone can talk.
    wait_for(has_leader, 30, "a leader after the faults")

    def final_write() -> bool:
        for node in IDS:
            try:
                status, _ = request("PUT", cluster.url(node) + "/v1/kv/final", b"done")
            except (OSError, NotApplied):
                continue
            if status == 200:
                return True
        return False
    try:
        wait_for(final_write, 30, "a write after healing")
    except AssertionError:
        statuses = {}
        for node in IDS:
            try:
                statuses[node] = request("GET", cluster.url(node) + "/v1/status")[1]
            except (OSError, NotApplied) as exc:
                statuses[node] = str(exc)
        raise AssertionError(f"no write after healing; the servers say {statuses}") from None
    result = check(history)
    if not result["ok"]:  # keep the history for replay with tests.linearizability
        import pickle
        dump = cluster.root / "history.pickle"
        dump.write_bytes(pickle.dumps(history))
        result["history"] = str(dump)
    assert result["ok"], result
