"""The API client used by the CLI, the agent and tests.

Every method raises MeshletError: the server's error body rebuilt, or Unavailable when
the server cannot be reached, so callers never see aiohttp exceptions. A pooled client
keeps its connections in an aiohttp session; the CLI's sends each request through
``one_shot`` instead, and imports no aiohttp.
"""

from __future__ import annotations

import functools
import json
import os
import ssl
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from meshlet import errors, json_limits
from meshlet.addresses import to_url
from meshlet.api import one_shot

if TYPE_CHECKING:
    import aiohttp

INDEX_HEADER = "X-Meshlet-Index"
TOKEN_HEADER = "X-Meshlet-Token"
JOIN_TOKEN_HEADER = "X-Meshlet-Join-Token"


def client_tls(ca_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """How clients check a server's HTTPS: against the cluster's trust bundle in
    ``ca_file`` (default: ``MESHLET_CA_FILE``; a server writes it as ``ca.pem`` in its
    data directory, and again when the CA's roots change: the context is made again
    then), or, with neither, the system's trusted roots."""
    path = str(ca_file or os.environ.get("MESHLET_CA_FILE") or "")
    try:
        changed = os.stat(path).st_mtime_ns if path else 0
    except OSError:
        changed = 0  # _context says what is wrong with it
    return _context(path, changed)


@functools.lru_cache(maxsize=8)
def _context(ca_file: str, changed: int = 0) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise errors.ConfigError(f"--ca-file {ca_file}: cannot read the cluster's CA "
                                 f"certificate: {exc}", "ca_file") from None


def session_without_retries(tls: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """A session that sends each request once. aiohttp resends a PUT or DELETE whose
    connection dropped before the answer; against meshlet that can apply a write twice,
    or report a check-and-set that succeeded as a conflict. aiohttp has no public
    switch for it; its own test client turns it off the same way. ``tls`` checks
    HTTPS servers (default: aiohttp's, the system's roots)."""
    import aiohttp
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=tls) if tls is not None else None)
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session


# An answer wraps what requests stored (at most json_limits.MAX_DEPTH deep): deeper is
# not a meshlet server's, and would end json.loads in a RecursionError.
ANSWER_MAX_DEPTH = 2 * json_limits.MAX_DEPTH


def _decode(raw: bytes) -> Any:
    """An answer's JSON; raises ConfigError for what is not JSON (an empty answer is
    not: meshlet's JSON routes always answer a value), or is too deep. Unlike a
    request's, its numbers are the server's: not checked."""
    if not raw.strip():
        raise errors.ConfigError("the answer is empty", "body")
    if json_limits.too_deep(raw, ANSWER_MAX_DEPTH):
        raise errors.ConfigError(f"the answer nests more than {ANSWER_MAX_DEPTH} deep",
                                 "body")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise errors.ConfigError(f"the answer is not JSON: {exc}", "body") from None


def _index_of(status: int, headers: one_shot.Headers, method: str, url: str) -> int:
    """The answer's X-Meshlet-Index. Every success a meshlet server sends carries one:
    a success without it came from something else at that address (a web server, a
    sidecar's port), whose JSON the commands must not read as meshlet's."""
    raw = headers.get(INDEX_HEADER, "")
    if not raw:
        if 200 <= status < 300:
            raise errors.MeshletError(
                f"{method} {url}: HTTP {status} without {INDEX_HEADER}: not a meshlet "
                "server's answer: is it a server's API address (--http)?")
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 20:
        raise errors.MeshletError(f"{method} {url}: HTTP {status} with "
                                  f"{INDEX_HEADER} {raw[:32]!r}: not meshlet's answer")
    return int(raw)


class Client:
    """``token`` is an ACL token's secret, sent with every request; ``join_token`` the
    cluster's join token, which servers send each other to found or join a cluster."""

    def __init__(self, addr: str, timeout: float = 10.0, token: str | None = None,
                 join_token: str | None = None,
                 ca_file: str | os.PathLike[str] | None = None, pooled: bool = True) -> None:
        """``ca_file``: the cluster's root, to check the server's HTTPS (default:
        ``MESHLET_CA_FILE``). ``pooled``: keep connections open for the next request
        (a process that makes many); False sends each on one of its own (a command)."""
        self.base = to_url(addr)
        self.timeout = timeout
        self.ca_file = ca_file
        self.pooled = pooled
        self.headers: dict[str, str] = {}
        for secret, what in ((token, "an ACL token"), (join_token, "a join token")):
            if secret and not secret.isprintable():  # a line break would end the header
                raise errors.ConfigError(f"{what} holds a line break or another control "
                                         "character", "token")
        if token:
            self.headers[TOKEN_HEADER] = token
        if join_token:
            self.headers[JOIN_TOKEN_HEADER] = join_token
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<Client {self.base}>"

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = session_without_retries(
                client_tls(self.ca_file) if self.base.startswith("https:") else None)
        return self._session

    async def request(self, method: str, path: str, *, json: Any = None,
                      data: bytes | None = None, params: dict[str, str] | None = None,
                      timeout: float | None = None, raw: bool = False
                      ) -> tuple[Any, int]:
        """Return (decoded body, X-Meshlet-Index); raise MeshletError."""
        url = self.base + path
        try:
            if self.pooled:
                status, headers, body = await self.pooled_exchange(
                    method, url, json, data, params, timeout or self.timeout)
            else:
                status, headers, body = await one_shot.request(
                    method, url, headers=self.headers, json_body=json, data=data,
                    params=params, timeout=timeout or self.timeout,
                    tls=client_tls(self.ca_file) if url.startswith("https:") else None)
        except one_shot.TooLarge:
            raise errors.MeshletError(f"{method} {url}: an answer over "
                                      f"{one_shot.MAX_ANSWER_BYTES} bytes: not meshlet's"
                                      ) from None
        except one_shot.Disconnected:
            raise errors.Unavailable(
                f"{self.base} closed the connection without an HTTP answer: is it a "
                "server's API address (--http), not its Raft port? (or the server is "
                "stopping)") from None
        except (TimeoutError, OSError) as exc:
            raise errors.Unavailable(f"cannot reach meshlet at {self.base}: "
                                     f"{str(exc) or type(exc).__name__}") from None
        index = _index_of(status, headers, method, url)
        if not 200 <= status < 300:  # a redirect, too: meshlet servers make none
            try:
                error = _decode(body)["error"]
            except (errors.ConfigError, KeyError, TypeError):
                error = None
            if not isinstance(error, dict):
                raise errors.MeshletError(f"{method} {url}: HTTP {status}")
            raise errors.from_dict(error)
        if raw:
            return body, index
        try:
            return _decode(body), index
        except errors.ConfigError as exc:
            raise errors.MeshletError(f"{method} {url}: HTTP {status} with an answer that "
                                      f"is not meshlet's: {exc.message}") from None

    async def pooled_exchange(self, method: str, url: str, json: Any, data: bytes | None,
                              params: dict[str, str] | None, timeout: float
                              ) -> one_shot.Answer:
        """The exchange on the session's connections, with aiohttp's errors as
        one_shot's (Disconnected, TooLarge) and OSError."""
        import aiohttp
        import yarl
        try:
            # As sent: yarl would resolve a name's ``..`` (a KV key ``a/../../status``
            # would reach another route), and a redirect would carry the token away.
            async with self.session().request(
                    method, yarl.URL(url, encoded=True), json=json, data=data,
                    params=params, headers=self.headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                body = bytearray()
                async for piece in resp.content.iter_any():
                    body += piece
                    if len(body) > one_shot.MAX_ANSWER_BYTES:
                        raise one_shot.TooLarge()
                return resp.status, resp.headers, bytes(body)
        except aiohttp.ServerDisconnectedError:
            raise one_shot.Disconnected() from None
        except aiohttp.ClientError as exc:
            raise OSError(str(exc) or type(exc).__name__) from None

    # -- catalog ----------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return (await self.request("GET", "/v1/status"))[0]

    async def register(self, **instance: Any) -> dict[str, Any]:
        return (await self.request("PUT", "/v1/catalog/register", json=instance))[0]

    async def deregister(self, instance_id: str) -> None:
        await self.request("PUT", f"/v1/catalog/deregister/{quote(instance_id, safe='')}")

    async def set_health(self, instance_id: str, status: str, output: str = "",
                         restarts: int | None = None, pid: int | None = None) -> None:
        body: dict[str, Any] = {"status": status, "output": output}
        if restarts is not None:
            body["restarts"] = restarts
        if pid is not None:
            body["pid"] = pid
        await self.request("PUT", f"/v1/health/{quote(instance_id, safe='')}", json=body)

    async def transfer_leader(self, to: str | None = None) -> str:
        params = {"to": to} if to else None
        body, _ = await self.request("POST", "/v1/raft/transfer-leader", params=params)
        return str(body["leader"])

    async def add_peer(self, node_id: str, raft: str, http: str) -> dict[str, Any]:
        """Add a server to the cluster; returns the members (id -> addresses)."""
        body, _ = await self.request("POST", "/v1/raft/peers",
                                     json={"id": node_id, "raft": raft, "http": http})
        return dict(body["members"])

    async def remove_peer(self, node_id: str) -> dict[str, Any]:
        body, _ = await self.request("DELETE", f"/v1/raft/peers/{quote(node_id, safe='')}")
        return dict(body["members"])

    async def raft_self(self) -> dict[str, Any]:
        """Who this server is and whether it has a cluster yet (for bootstrapping)."""
        return (await self.request("GET", "/v1/raft/self"))[0]

    async def network_create(self, name: str, driver: str = "bridge",
                             subnet: str | None = None, gateway: str | None = None,
                             internal: bool = False) -> dict[str, Any]:
        body = {"name": name, "driver": driver, "subnet": subnet, "gateway": gateway,
                "internal": internal}
        return (await self.request("POST", "/v1/networks", json=body))[0]

    async def networks(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/networks"))[0]

    async def networks_after(self, index: int | None, wait: float = 30.0
                             ) -> tuple[list[dict[str, Any]], int]:
        """Every network, once changed after ``index`` (None: now), with the index."""
        params = {"index": str(index), "wait": f"{wait}s"} if index is not None else None
        return await self.request("GET", "/v1/networks", params=params,
                                  timeout=self.timeout + wait)

    async def network(self, name: str) -> dict[str, Any]:
        return (await self.request("GET", f"/v1/networks/{quote(name, safe='')}"))[0]

    async def network_delete(self, name: str) -> None:
        await self.request("DELETE", f"/v1/networks/{quote(name, safe='')}")

    async def address_assign(self, network: str, owner: str,
                             address: str | None = None) -> dict[str, Any]:
        path = f"/v1/networks/{quote(network, safe='')}/addresses/{quote(owner, safe='')}"
        return (await self.request("PUT", path, json={"address": address}))[0]

    async def address_release(self, network: str, owner: str) -> bool:
        path = f"/v1/networks/{quote(network, safe='')}/addresses/{quote(owner, safe='')}"
        return bool((await self.request("DELETE", path))[0]["released"])

    async def container_create(self, name: str, command: list[str], node: str,
                               env: dict[str, str] | None = None,
                               networks: list[str] | None = None,
                               ports: list[str] | None = None, **image: Any
                               ) -> dict[str, Any]:
        """``image`` holds the image fields of ContainerBody (image, image_id,
        entrypoint, user, workdir, restart, memory, cpus, stop_timeout)."""
        body = {"name": name, "node": node, "command": command, "env": env or {},
                "networks": networks or [], "ports": ports or [], **image}
        return (await self.request("POST", "/v1/containers", json=body))[0]

    async def containers(self, node: str | None = None, index: int | None = None,
                         wait: float = 30.0) -> tuple[list[dict[str, Any]], int]:
        params: dict[str, str] = {"node": node} if node else {}
        if index is not None:
            params.update(index=str(index), wait=f"{wait}s")
        return await self.request("GET", "/v1/containers", params=params or None,
                                  timeout=self.timeout + wait)

    async def container(self, name: str, index: int | None = None,
                        wait: float = 30.0) -> tuple[dict[str, Any], int]:
        params = {"index": str(index), "wait": f"{wait}s"} if index is not None else None
        return await self.request("GET", f"/v1/containers/{quote(name, safe='')}",
                                  params=params, timeout=self.timeout + wait)

    async def wait_container(self, name: str, leave: tuple[str, ...],
                             timeout: float = 30.0) -> dict[str, Any]:
        """Wait (blocking queries) until the container's status is not in ``leave``;
        raises Unavailable after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        body, index = await self.container(name)
        while body["status"] in leave:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.Unavailable(
                    f"container {name!r} is still {body['status']} after {timeout:.0f}s; "
                    f"is an agent running on node {body['node']!r}?")
            body, index = await self.container(name, index, wait=min(remaining, 10.0))
        return body

    async def container_delete(self, name: str) -> None:
        await self.request("DELETE", f"/v1/containers/{quote(name, safe='')}")

    async def container_desire(self, name: str, desired: str, stop_timeout: int = -1
                               ) -> dict[str, Any]:
        return (await self.request("PUT", f"/v1/containers/{quote(name, safe='')}/desired",
                                   json={"desired": desired,
                                         "stop_timeout": stop_timeout}))[0]

    async def container_report(self, name: str, **status: Any) -> dict[str, Any]:
        return (await self.request("PUT", f"/v1/containers/{quote(name, safe='')}/status",
                                   json=status))[0]

    async def container_connect(self, name: str, network: str, connect: bool = True
                                ) -> dict[str, Any]:
        path = f"/v1/containers/{quote(name, safe='')}/networks/{quote(network, safe='')}"
        return (await self.request("PUT" if connect else "DELETE", path))[0]

    async def nodes(self, index: int | None = None, wait: float = 30.0
                    ) -> tuple[list[dict[str, Any]], int]:
        params = {"index": str(index), "wait": f"{wait}s"} if index is not None else None
        return await self.request("GET", "/v1/nodes", params=params,
                                  timeout=self.timeout + wait)

    async def node_register(self, name: str, address: str, zone: str = "",
                            cpus: float = 0.0, memory: int = 0,
                            metrics: str = "") -> dict[str, Any]:
        """``metrics``: HOST:PORT of the agent's /metrics (sent only when it has one,
        so an agent without it still registers with a server that predates it)."""
        body: dict[str, Any] = {"address": address, "zone": zone, "cpus": cpus,
                                "memory": memory}
        if metrics:
            body["metrics"] = metrics
        return (await self.request("PUT", f"/v1/nodes/{quote(name, safe='')}",
                                   json=body))[0]

    async def node_deregister(self, name: str) -> None:
        await self.request("DELETE", f"/v1/nodes/{quote(name, safe='')}")

    async def vips(self, index: int | None = None, wait: float = 30.0
                   ) -> tuple[dict[str, Any], int]:
        """``{cidr, vips: [{service, vip, ports}]}``, blocking from ``index``."""
        params = {"index": str(index), "wait": f"{wait}s"} if index is not None else None
        return await self.request("GET", "/v1/vips", params=params,
                                  timeout=self.timeout + wait)

    async def service_cidr_set(self, cidr: str) -> dict[str, Any]:
        return (await self.request("PUT", "/v1/vips/cidr", json={"cidr": cidr}))[0]

    async def services(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/services"))[0]

    async def services_after(self, index: int | None, wait: float = 30.0
                             ) -> tuple[list[dict[str, Any]], int]:
        """Every service, once the catalog changed after ``index`` (None: now)."""
        params = {"index": str(index), "wait": f"{wait}s"} if index is not None else None
        return await self.request("GET", "/v1/services", params=params,
                                  timeout=self.timeout + wait)

    async def signals(self) -> dict[str, Any]:
        """Golden signals per service and edge (``GET /v1/signals``)."""
        return (await self.request("GET", "/v1/signals"))[0]

    async def instances(self, service: str, passing: bool = False, index: int | None = None,
                        wait: float = 30.0) -> tuple[list[dict[str, Any]], int]:
        params = {"passing": "1"} if passing else {}
        if index is not None:
            params.update(index=str(index), wait=f"{wait}s")
        return await self.request("GET", f"/v1/services/{quote(service, safe='')}/instances",
                                  params=params, timeout=wait + 10)

    # -- kubernetes objects and pods -----------------------------------------------------

    @staticmethod
    def object_path(kind: str, namespace: str, name: str) -> str:
        """``/v1/objects/KIND/NAMESPACE/NAME`` (``-`` for a Namespace's namespace)."""
        return (f"/v1/objects/{quote(kind, safe='')}/{quote(namespace or '-', safe='')}/"
                f"{quote(name, safe='')}")

    @staticmethod
    def blocking(index: int | None, wait: float, **query: str | None) -> dict[str, str]:
        params = {k: v for k, v in query.items() if v}
        if index is not None:
            params.update(index=str(index), wait=f"{wait}s")
        return params

    async def object_apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """``{kind, namespace, name, result: created|configured|unchanged, generation}``."""
        return (await self.request("POST", "/v1/objects", json={"manifest": manifest}))[0]

    async def objects(self, kind: str | None = None, namespace: str | None = None,
                      index: int | None = None, wait: float = 30.0
                      ) -> tuple[list[dict[str, Any]], int]:
        """Stored objects (records with ``manifest``, ``status``, ``events``, ...)."""
        return await self.request("GET", "/v1/objects", params=self.blocking(
            index, wait, kind=kind, namespace=namespace), timeout=self.timeout + wait)

    async def object(self, kind: str, namespace: str, name: str, index: int | None = None,
                     wait: float = 30.0) -> tuple[dict[str, Any], int]:
        return await self.request("GET", self.object_path(kind, namespace, name),
                                  params=self.blocking(index, wait),
                                  timeout=self.timeout + wait)

    async def object_delete(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """``{deleted: [{kind, namespace, name}]}`` (a Namespace: with its contents)."""
        return (await self.request("DELETE", self.object_path(kind, namespace, name)))[0]

    async def object_scale(self, namespace: str, name: str, replicas: int
                           ) -> dict[str, Any]:
        path = self.object_path("Deployment", namespace, name) + "/scale"
        return (await self.request("POST", path, json={"replicas": replicas}))[0]

    async def object_status(self, kind: str, namespace: str, name: str,
                            status: dict[str, Any],
                            events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        path = self.object_path(kind, namespace, name) + "/status"
        return (await self.request("PUT", path, json={"status": status,
                                                      "events": events or []}))[0]

    async def pods(self, node: str | None = None, namespace: str | None = None,
                   deployment: str | None = None, index: int | None = None,
                   wait: float = 30.0) -> tuple[list[dict[str, Any]], int]:
        return await self.request("GET", "/v1/pods", params=self.blocking(
            index, wait, node=node, namespace=namespace, deployment=deployment),
            timeout=self.timeout + wait)

    async def pod(self, name: str) -> dict[str, Any]:
        return (await self.request("GET", f"/v1/pods/{quote(name, safe='')}"))[0]

    async def pod_create(self, **pod: Any) -> dict[str, Any]:
        """``pod``: name, namespace, deployment, revision, template_hash, node,
        container, service."""
        return (await self.request("POST", "/v1/pods", json=pod))[0]

    async def pod_delete(self, name: str) -> None:
        await self.request("DELETE", f"/v1/pods/{quote(name, safe='')}")

    async def pod_terminate(self, name: str) -> dict[str, Any]:
        return (await self.request("PUT", f"/v1/pods/{quote(name, safe='')}/terminate"))[0]

    async def pod_report(self, name: str, phase: str, ready: bool = False,
                         restarts: int = 0, detail: str = "", address: str = "",
                         pid: int | None = None,
                         metrics: dict[str, float | None] | None = None) -> dict[str, Any]:
        body = {"phase": phase, "ready": ready, "restarts": restarts, "detail": detail,
                "address": address, "pid": pid, "metrics": metrics or {}}
        return (await self.request("PUT", f"/v1/pods/{quote(name, safe='')}/report",
                                   json=body))[0]

    # -- ca -----------------------------------------------------------------------------

    async def ca_roots(self, index: int | None = None, wait: float = 30.0
                       ) -> tuple[dict[str, Any], int]:
        """``{trust_domain, active_generation, roots: [...], bundle}``, blocking from
        ``index``."""
        params = {"index": str(index), "wait": f"{wait}s"} if index is not None else None
        return await self.request("GET", "/v1/ca/roots", params=params,
                                  timeout=self.timeout + wait)

    async def ca_sign(self, csr: str, service: str, namespace: str = "default"
                      ) -> dict[str, Any]:
        """A leaf for the CSR's key: ``{spiffe_id, generation, cert, chain, not_after,
        roots}``."""
        body = {"csr": csr, "service": service, "namespace": namespace}
        return (await self.request("POST", "/v1/ca/sign", json=body))[0]

    async def ca_rotate(self) -> dict[str, Any]:
        return (await self.request("POST", "/v1/ca/rotate"))[0]

    # -- acl ----------------------------------------------------------------------------

    async def token_create(self, policies: list[str], description: str = "",
                           management: bool = False,
                           node_identities: list[str] | None = None) -> dict[str, Any]:
        """A new token; the answer holds its ``secret``, shown this once."""
        body = {"policies": policies, "description": description, "management": management,
                "node_identities": node_identities or []}
        return (await self.request("POST", "/v1/acl/tokens", json=body))[0]

    async def tokens(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/acl/tokens"))[0]

    async def token_delete(self, accessor: str) -> None:
        await self.request("DELETE", f"/v1/acl/tokens/{quote(accessor, safe='')}")

    async def token_self(self) -> dict[str, Any]:
        return (await self.request("GET", "/v1/acl/token/self"))[0]

    async def intentions(self, index: int | None = None, wait: float = 30.0
                         ) -> tuple[dict[str, Any], int]:
        """The default policy and every intention this token may read (a blocking
        query past ``index``; None: now)."""
        params = {"index": str(index), "wait": f"{wait}s"} if index is not None else None
        return await self.request("GET", "/v1/intentions", params=params,
                                  timeout=self.timeout + wait)

    async def intention_set(self, intention: dict[str, Any]) -> dict[str, Any]:
        return (await self.request("PUT", "/v1/intentions", json=intention))[0]

    async def intention_delete(self, source: str, destination: str) -> None:
        await self.request("DELETE", f"/v1/intentions/{quote(source, safe='')}/"
                                     f"{quote(destination, safe='')}")

    async def intention_check(self, source: str, destination: str, method: str = "",
                              path: str = "") -> dict[str, Any]:
        params = {"source": source, "destination": destination}
        params.update({k: v for k, v in (("method", method), ("path", path)) if v})
        return (await self.request("GET", "/v1/intentions/check", params=params))[0]

    async def policy_create(self, name: str, rules: list[dict[str, str]],
                            description: str = "") -> dict[str, Any]:
        body = {"name": name, "rules": rules, "description": description}
        return (await self.request("POST", "/v1/acl/policies", json=body))[0]

    async def policies(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/acl/policies"))[0]

    async def policy_delete(self, name: str) -> None:
        await self.request("DELETE", f"/v1/acl/policies/{quote(name, safe='')}")

    # -- kv -----------------------------------------------------------------------------

    async def kv_get(self, key: str, consistency: str = "default") -> dict[str, Any]:
        return (await self.request("GET", f"/v1/kv/{quote(key)}",
                                   params={"consistency": consistency}))[0]

    async def kv_get_raw(self, key: str, consistency: str = "default") -> bytes:
        return (await self.request("GET", f"/v1/kv/{quote(key)}",
                                   params={"raw": "1", "consistency": consistency},
                                   raw=True))[0]

    async def kv_put(self, key: str, value: bytes, cas: int | None = None) -> dict[str, Any]:
        params = {"cas": str(cas)} if cas is not None else None
        return (await self.request("PUT", f"/v1/kv/{quote(key)}", data=value,
                                   params=params))[0]

    async def kv_delete(self, key: str, cas: int | None = None) -> bool:
        params = {"cas": str(cas)} if cas is not None else None
        body, _ = await self.request("DELETE", f"/v1/kv/{quote(key)}", params=params)
        return bool(body["deleted"])

    async def kv_list(self, prefix: str = "", consistency: str = "default"
                      ) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/kv",
                                   params={"prefix": prefix, "consistency": consistency}))[0]

    # -- config ---------------------------------------------------------------------------

    async def config_get(self, service: str, index: int | None = None,
                         wait: float = 30.0) -> tuple[dict[str, Any], int]:
        params = {"index": str(index), "wait": f"{wait}s"} if index is not None else None
        return await self.request("GET", f"/v1/config/{quote(service, safe='')}",
                                  params=params, timeout=wait + 10)

    async def config_set(self, service: str, settings: dict[str, Any],
                         replace: bool = False) -> dict[str, Any]:
        params = {"replace": "1"} if replace else None
        return (await self.request("PUT", f"/v1/config/{quote(service, safe='')}",
                                   json=settings, params=params))[0]

    async def config_list(self, index: int | None = None,
                          wait: float = 30.0) -> tuple[list[dict[str, Any]], int]:
        params = {"index": str(index), "wait": f"{wait}s"} if index is not None else None
        return await self.request("GET", "/v1/config", params=params, timeout=wait + 10)
