"""Several "hosts" on this machine, each a network namespace with its own meshlet
agent, joined by an underlay (a bridge in one more namespace, which also runs the
server), as separate machines on one LAN would be.

Processes enter a host's network namespace with nsenter (network only): `ip netns
exec` would also give them a mount namespace of their own, and the namespaces their
agent creates would then be invisible to everyone else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from meshlet.runtime import rootfs
from tests.conftest import agent_rule_args, management_token, wait_until

UNDERLAY = "10.250.0"
SERVER = f"{UNDERLAY}.254"
NS_PREFIX = "mlt-"   # not meshlet's own ``ml-``: cleanup checks must not count these


def sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def in_ns(namespace: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{namespace}", *argv]


class Hosts:
    """``count`` hosts ``host1``… at 10.250.0.1…; the server at 10.250.0.254:8500."""

    def __init__(self, count: int, port: int = 8500, node_ttl: str = "30s") -> None:
        self.count = count
        self.port = port
        self.node_ttl = node_ttl
        self.url = f"https://{SERVER}:{port}"  # beyond loopback: HTTPS, always
        self.tmp = Path(tempfile.mkdtemp(prefix="meshlet-hosts-"))
        self.under = NS_PREFIX + "under"
        self.names = [f"host{i}" for i in range(1, count + 1)]
        self.server: subprocess.Popen[bytes] | None = None
        self.token = ""  # the server's management token, once it has made it
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.left_mounts: list[str] = []

    def ns(self, host: str) -> str:
        return NS_PREFIX + host

    def address(self, host: str) -> str:
        return f"{UNDERLAY}.{self.names.index(host) + 1}"

    def __enter__(self) -> Hosts:
        try:
            self.wire()
            self.start_server()
            for host in self.names:
                self.start_agent(host)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def wire(self) -> None:
        sh("ip", "netns", "add", self.under)
        sh("ip", "-n", self.under, "link", "set", "lo", "up")
        sh("ip", "-n", self.under, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.under, "addr", "add", f"{SERVER}/24", "dev", "br0")
        sh("ip", "-n", self.under, "link", "set", "br0", "up")
        for i, host in enumerate(self.names, 1):
            ns = self.ns(host)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.under, "link", "add", f"u{i}", "type", "veth",
               "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.under, "link", "set", f"u{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def spawn(self, namespace: str, name: str, *args: str,
              token: str = "") -> subprocess.Popen[bytes]:
        env = {**os.environ, "MESHLET_HOME": str(self.tmp / name)}
        env.pop("MESHLET_ADDR", None)
        env.pop("MESHLET_TOKEN", None)
        env["MESHLET_CA_FILE"] = str(self.ca_file)  # the agents check the server's HTTPS
        if token:
            env["MESHLET_TOKEN"] = token
        with open(self.tmp / f"{name}.log", "wb") as log:
            return subprocess.Popen(in_ns(namespace, sys.executable, "-m", "meshlet", *args),
                                    stdout=log, stderr=subprocess.STDOUT, env=env)

    @property
    def ca_file(self) -> Path:
        """The cluster CA's certificate, which the server writes into its data."""
        return self.tmp / "server-data" / "ca.pem"

    def start_server(self) -> None:
        self.server = self.spawn(self.under, "server", "server", "--data-dir",
                                 str(self.tmp / "server-data"), "--http",
                                 f"{SERVER}:{self.port}", "--node-ttl", self.node_ttl)
        self.token = management_token(self.tmp / "server-data")
        wait_until(lambda: self.cli_ok("status"), 30, "the server to answer")
        self.cli("acl", "policy", "create", "agent", *agent_rule_args())

    def agent_token(self, host: str) -> str:
        """A token for ``host``'s agent: the agent policy, acting for that node."""
        import json
        return str(json.loads(self.cli("-o", "json", "acl", "token", "create", "--policy",
                                       "agent", "--node-identity", host))["secret"])

    def start_agent(self, host: str, file: Path | None = None) -> None:
        """Start ``host``'s agent (with ``file``'s services, if given)."""
        extra = ["--file", str(file)] if file is not None else []
        self.agents[host] = self.spawn(
            self.ns(host), host, "-v", "agent", "--server", self.url, "--node", host,
            "--data-dir", str(self.tmp / f"{host}-data"), *extra,
            token=self.agent_token(host))
        wait_until(lambda: host in self.nodes(), 30, f"{host} to register")

    def stop_agent(self, host: str, kill: bool = False) -> None:
        """Stop ``host``'s agent cleanly, or with ``kill`` as a crash would (kill -9:
        what it set up stays behind, and its node stays registered)."""
        proc = self.agents.pop(host)
        proc.kill() if kill else proc.terminate()
        proc.wait(30)

    def nodes(self) -> dict[str, str]:
        import json
        rows = json.loads(self.cli("-o", "json", "nodes"))
        return {r["name"]: r["address"] for r in rows}

    def cli(self, *args: str) -> str:
        """`meshlet ARGS` against the cluster (from the underlay); fails on error."""
        return sh(*in_ns(self.under, sys.executable, "-m", "meshlet", "--addr", self.url,
                         "--token", self.token, "--ca-file", str(self.ca_file), *args))

    def cli_ok(self, *args: str) -> bool:
        try:
            self.cli(*args)
        except AssertionError:
            return False
        return True

    def close(self) -> None:
        for host in list(self.agents):
            self.stop_agent(host)
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(30)
        for ns in [self.under, *(self.ns(h) for h in self.names)]:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        # What the agents left mounted is unmounted (so the next test starts clean) and
        # kept in ``left_mounts`` for the test to fail on.
        self.left_mounts = rootfs.unmount_all(self.tmp)
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)


