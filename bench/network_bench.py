"""Container networking: attach latency and throughput (needs root).

1. Time to attach a container to a bridge network, p50/p99 over --count runs, in
   the same run for: the reference CNI `bridge` + `host-local` plugins (ADD), the
   `meshlet-cni` plugin (ADD), and `meshlet run` through the API (create to running:
   namespace, veth, address, DNS socket and process, by the agent).
2. TCP throughput from one container to another across a bridge, and across the
   overlay between two "hosts" (network namespaces with an agent each, on a veth
   underlay), against the same Python sender and receiver over plain loopback on the
   host and host-to-host over the underlay without a tunnel.

Measures and reports; never fails. Usage: sudo python bench/network_bench.py [--count N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import async_management_token, wait_until
from tests.netns.hosts import Hosts, in_ns

from meshlet.agent.agent import Agent
from meshlet.api.client import Client
from meshlet.net import bridge, netns
from meshlet.server.main import Server

REFERENCE = Path("/usr/lib/cni")
PLUGIN = Path(sys.executable).parent / "meshlet-cni"
SINK = ("import socket,sys,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,"
        "socket.SO_REUSEADDR,1); s.bind((sys.argv[1],7001)); s.listen(); print('up',flush=True)"
        "\nc,_=s.accept(); n=0\nwhile (b:=c.recv(1<<20)): n+=len(b)\nprint(n)")
SOURCE = ("import socket,sys,time; c=socket.create_connection((sys.argv[1],7001)); "
          "buf=b'x'*(1<<20); end=time.monotonic()+float(sys.argv[2]); n=0\n"
          "while time.monotonic()<end: c.sendall(buf); n+=len(buf)\nc.close(); print(n)")


def quantiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def cni(plugin: Path, command: str, config: dict[str, object], ns: str, cid: str) -> None:
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_IFNAME": "eth0", "CNI_NETNS": f"/run/netns/{ns}",
           "CNI_PATH": str(REFERENCE)}
    out = subprocess.run([str(plugin)], input=json.dumps(config), capture_output=True,
                         text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{plugin.name} {command}: {out.stdout} {out.stderr}")


def time_cni(plugin: Path, config: dict[str, object], count: int) -> list[float]:
    samples = []
    for i in range(count):
        ns = f"ml-bench-{i}"
        netns.create(ns)
        started = time.perf_counter()
        cni(plugin, "ADD", config, ns, f"bench{i}")
        samples.append(time.perf_counter() - started)
        cni(plugin, "DEL", config, ns, f"bench{i}")
        netns.remove(ns)
    return samples


async def time_run(client: Client, count: int) -> list[float]:
    samples = []
    for i in range(count):
        name = f"b{i}"
        started = time.perf_counter()
        await client.container_create(name, ["sleep", "30"], "bench", networks=["benchnet"])
        await client.wait_container(name, ("created",))
        samples.append(time.perf_counter() - started)
        await client.container_delete(name)
        while any(n.endswith(f"-{name}") for n in netns.ours()):
            await asyncio.sleep(0.01)
    return samples


def throughput(sink_prefix: list[str], source_prefix: list[str], address: str,
               seconds: float) -> float:
    sink = subprocess.Popen([*sink_prefix, sys.executable, "-c", SINK, address],
                            stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None and sink.stdout.readline().strip() == "up"
    sent = subprocess.run([*source_prefix, sys.executable, "-c", SOURCE, address,
                           str(seconds)], capture_output=True, text=True, check=True)
    sink.wait(30)
    return int(sent.stdout) / seconds / 1e9


def overlay_throughput(seconds: float) -> tuple[float, float]:
    """(across the overlay, host to host over the underlay), GB/s."""
    with Hosts(2, port=8600) as hosts:
        hosts.cli("network", "create", "benchov", "--driver", "overlay", "--subnet",
                  "10.243.0.0/24")
        for name, host in (("ovsink", "host1"), ("ovsource", "host2")):
            hosts.cli("run", "-d", "--name", name, "--network", "benchov", "--node", host,
                      "--", "sleep", "600")
        rows = wait_until(lambda: running_namespaces(hosts), 30, "both containers up")
        across = throughput(["ip", "netns", "exec", rows["ovsink"]],
                            ["ip", "netns", "exec", rows["ovsource"]], "10.243.0.2",
                            seconds)
        underlay = throughput(in_ns(hosts.ns("host1")), in_ns(hosts.ns("host2")),
                              hosts.address("host1"), seconds)
    return across, underlay


def running_namespaces(hosts: Hosts) -> dict[str, str] | None:
    rows = json.loads(hosts.cli("-o", "json", "ps"))
    found = {r["name"]: r["namespace"] for r in rows if r["status"] == "running"}
    return found if len(found) == 2 else None


async def main(count: int, seconds: float) -> None:
    if os.geteuid() != 0:
        sys.exit("network_bench needs root")
    rows: list[tuple[str, float, float]] = []
    ref = {"cniVersion": "1.0.0", "name": "benchref", "type": "bridge",
           "bridge": "mlbenchref0", "isGateway": True,
           "ipam": {"type": "host-local", "subnet": "10.241.0.0/24"}}
    if (REFERENCE / "bridge").exists():
        rows.append(("reference bridge + host-local ADD",
                     *quantiles(await asyncio.to_thread(time_cni, REFERENCE / "bridge",
                                                        ref, count))))
        await asyncio.to_thread(bridge.delete_link, "mlbenchref0")
        shutil.rmtree("/var/lib/cni/networks/benchref", ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix="meshlet-netbench-"))
    server = await Server.start(tmp / "server", "127.0.0.1", 0)
    token = await async_management_token(tmp / "server")
    agent = Agent(server.url, tmp / "agent", "bench", token=token)
    agent.run_containers()
    try:
        async with Client(server.url, token=token) as client:
            await client.network_create("benchnet", subnet="10.242.0.0/24")
            ours = {"cniVersion": "1.0.0", "name": "benchnet", "type": "meshlet",
                    "server": server.url, "token": token}
            rows.append(("meshlet-cni ADD", *quantiles(await asyncio.to_thread(
                time_cni, PLUGIN, ours, count))))
            rows.append(("meshlet run (create to running)",
                         *quantiles(await time_run(client, count))))
            await client.container_create("sink", ["sleep", "600"], "bench",
                                          networks=["benchnet"])
            await client.container_create("source", ["sleep", "600"], "bench",
                                          networks=["benchnet"])
            for name in ("sink", "source"):
                await client.wait_container(name, ("created",))
            sink_ns = (await client.container("sink"))[0]["namespace"]
            source_ns = (await client.container("source"))[0]["namespace"]
            across = await asyncio.to_thread(
                throughput, ["ip", "netns", "exec", sink_ns],
                ["ip", "netns", "exec", source_ns], "10.242.0.2", seconds)
            loopback = await asyncio.to_thread(throughput, [], [], "127.0.0.1", seconds)
            for name in ("sink", "source"):
                await client.container_delete(name)
    finally:
        await agent.stop()
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    overlay, underlay = await asyncio.to_thread(overlay_throughput, seconds)
    base = rows[0][1] if rows and rows[0][0].startswith("reference") else None
    print(f"attach latency over {count} runs\n")
    print("| path | p50 ms | p99 ms | p50 / reference |\n|---|---|---|---|")
    for name, p50, p99 in rows:
        ratio = f"{p50 / base:.2f}" if base else "-"
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {ratio} |")
    print(f"\nTCP throughput, one Python stream for {seconds:.0f} s\n")
    print("| path | GB/s | / loopback |\n|---|---|---|")
    print(f"| container to container across a bridge | {across:.2f} | "
          f"{across / loopback:.2f} |")
    print(f"| container to container across the overlay (two hosts) | {overlay:.2f} | "
          f"{overlay / loopback:.2f} |")
    print(f"| host to host over the underlay, no tunnel | {underlay:.2f} | "
          f"{underlay / loopback:.2f} |")
    print(f"| loopback on the host | {loopback:.2f} | 1.00 |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.seconds))
