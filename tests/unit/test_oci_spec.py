"""A container's runtime config: the namespaces Docker gives, the network namespace
joined by path, Docker's capabilities (none in effect for a user other than root), cgroup
limits, the DNS files bound read-only, and never an rlimit (they cannot be raised here)."""

from __future__ import annotations

from meshlet.runtime.oci_spec import (
    DEFAULT_CAPABILITIES,
    BindFile,
    ContainerConfig,
    ProcessSpec,
    runtime_config,
)


def config(**changes: object) -> ContainerConfig:
    fields: dict[str, object] = {
        "rootfs": "/data/containers/web/rootfs", "hostname": "web",
        "process": ProcessSpec(("httpd", "-f"), ("PATH=/bin",), "/www"),
        "cgroup": "/meshlet/ml-abc-web", "netns": "/run/netns/ml-abc-web",
        "files": (BindFile("/etc/netns/ml-abc-web/resolv.conf", "/etc/resolv.conf"),)}
    fields.update(changes)
    return ContainerConfig(**fields)  # type: ignore[arg-type]


def test_own_namespaces_and_the_network_namespace_by_path() -> None:
    doc = runtime_config(config())
    spaces = {n["type"]: n.get("path") for n in doc["linux"]["namespaces"]}
    assert spaces == {"pid": None, "ipc": None, "uts": None, "mount": None,
                      "network": "/run/netns/ml-abc-web"}
    assert doc["hostname"] == "web" and doc["root"]["path"].endswith("/rootfs")
    assert doc["process"]["args"] == ["httpd", "-f"] and doc["process"]["cwd"] == "/www"
    assert doc["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"] == "0"
    assert "rlimits" not in doc["process"]


def test_the_hosts_network_has_no_network_namespace_and_no_sysctls() -> None:
    doc = runtime_config(config(netns=None))
    assert "network" not in {n["type"] for n in doc["linux"]["namespaces"]}
    assert "sysctl" not in doc["linux"]


def test_dns_files_are_bound_read_only() -> None:
    mounts = {m["destination"]: m for m in runtime_config(config())["mounts"]}
    resolv = mounts["/etc/resolv.conf"]
    assert resolv["type"] == "bind" and "ro" in resolv["options"]
    assert resolv["source"] == "/etc/netns/ml-abc-web/resolv.conf"
    assert {"/proc", "/dev", "/dev/pts", "/sys"} <= set(mounts)
    assert "ro" in mounts["/sys"]["options"]


def test_limits_become_cgroup_resources() -> None:
    resources = runtime_config(config(memory=64 << 20, cpus=0.5))["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20}
    assert resources["cpu"] == {"quota": 50_000, "period": 100_000}
    unlimited = runtime_config(config())["linux"]["resources"]
    assert "memory" not in unlimited and "cpu" not in unlimited
    assert unlimited["pids"] == {"limit": 2048}  # a fork bomb stays in its container


def test_capabilities_are_dockers_and_none_in_effect_for_other_users() -> None:
    root = runtime_config(config())["process"]["capabilities"]
    assert root["effective"] == list(DEFAULT_CAPABILITIES) == root["bounding"]
    assert "CAP_SYS_ADMIN" not in root["bounding"]
    user = runtime_config(config(process=ProcessSpec(("id",), (), "/", 1000, 1000, (50,))))
    assert user["process"]["capabilities"]["effective"] == []
    assert user["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [50]}


def test_seccomp_denies_new_namespaces_mounts_and_kernel_control() -> None:
    rules = runtime_config(config())["linux"]["seccomp"]
    assert rules["defaultAction"] == "SCMP_ACT_ALLOW"
    denied = {n for r in rules["syscalls"] if "args" not in r
              and r["action"] == "SCMP_ACT_ERRNO" for n in r["names"]}
    assert {"unshare", "setns", "mount", "bpf", "keyctl", "kexec_load", "init_module",
            "clone3", "userfaultfd", "open_by_handle_at"} <= denied
    clone_flags = {r["args"][0]["value"] for r in rules["syscalls"]
                   if r["names"] == ["clone"]}
    assert 0x10000000 in clone_flags and 0x20000000 in clone_flags  # NEWUSER, NEWPID
    assert all(r["args"][0]["value"] == r["args"][0]["valueTwo"]
               for r in rules["syscalls"] if "args" in r)  # the flag set, not any clone


def test_no_raw_sockets_on_the_hosts_network() -> None:
    own = runtime_config(config())["process"]["capabilities"]["bounding"]
    host = runtime_config(config(netns=None))["process"]["capabilities"]["bounding"]
    assert "CAP_NET_RAW" in own and "CAP_NET_RAW" not in host


def test_every_container_has_a_pids_limit() -> None:
    assert runtime_config(config())["linux"]["resources"]["pids"]["limit"] > 0
