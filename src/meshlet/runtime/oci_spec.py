"""The OCI runtime configuration (``config.json``) of one container, as Docker would
give it: its own mount, PID, UTS and IPC namespaces, the meshlet network namespace
joined by path (or the host's network), Docker's default capabilities and masked
paths, cgroup limits for memory and CPU, and the files that point the container at
the embedded DNS. Pure: the runtime driver writes what this returns.

No rlimits are set: on hosts without CAP_SYS_RESOURCE runc cannot raise them, and the
container inherits the agent's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OCI_VERSION = "1.0.2-dev"
CPU_PERIOD = 100_000  # microseconds, as Docker's --cpus uses
# Every container's pids cgroup limit, as podman's default: without one, a fork bomb
# in any container (whose root ignores RLIMIT_NPROC) exhausts the host's pids.
PIDS_LIMIT = 2048

# Docker's default capability set (moby's oci/caps/defaults.go).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


@dataclass(frozen=True)
class BindFile:
    """A host file shown read-only at ``target`` inside the container."""

    source: str
    target: str


@dataclass(frozen=True)
class ProcessSpec:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ContainerConfig:
    """What one container's ``config.json`` says."""

    rootfs: str
    hostname: str
    process: ProcessSpec
    cgroup: str                     # cgroupsPath, relative to each hierarchy's root
    netns: str | None = None        # a namespace's path; None: the host's network
    files: tuple[BindFile, ...] = ()
    memory: int = 0                 # bytes; 0 is no limit
    cpus: float = 0.0               # 0 is no limit
    labels: dict[str, str] = field(default_factory=dict)


# What Docker's default seccomp profile denies a container that holds no CAP_SYS_ADMIN
# and the like, as a denylist: new namespaces (user namespaces need no capability),
# mounts, keyrings, kernel modules and kexec, BPF, perf, userfaultfd, handles that
# bypass paths, and clock and swap control. Refused with EPERM; clone3 with ENOSYS, so
# that libc falls back to clone, whose namespace flags can be checked.
DENIED_SYSCALLS = (
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "quotactl", "swapon", "swapoff", "reboot", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "stime", "acct", "iopl", "ioperm", "vm86", "vm86old",
    "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl", "fsopen", "fsmount",
    "fspick", "move_mount", "open_tree", "mount_setattr", "process_vm_readv",
    "process_vm_writev", "kcmp", "get_kernel_syms", "query_module")
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                    0x20000000, 0x40000000)
EPERM, ENOSYS = 1, 38


def seccomp() -> dict[str, Any]:
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO",
             "errnoRet": EPERM},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            # One rule a flag: (flags & FLAG) == FLAG; the rules of a syscall are ORed.
            *({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
               "args": [{"index": 0, "value": flag, "valueTwo": flag,
                         "op": "SCMP_CMP_MASKED_EQ"}]} for flag in CLONE_NAMESPACES),
        ],
    }


def _mount(destination: str, kind: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": options}


def base_mounts() -> list[dict[str, Any]]:
    return [
        _mount("/proc", "proc", "proc", []),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755",
                                          "size=65536k"]),
        _mount("/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance",
                                                "ptmxmode=0666", "mode=0620", "gid=5"]),
        _mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777",
                                            "size=65536k"]),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        _mount("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev",
                                                      "relatime", "ro"]),
    ]


def resources(config: ContainerConfig) -> dict[str, Any]:
    found: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}],
                             "pids": {"limit": PIDS_LIMIT}}
    if config.memory:
        found["memory"] = {"limit": config.memory}
    if config.cpus:
        found["cpu"] = {"quota": max(1000, round(config.cpus * CPU_PERIOD)),
                        "period": CPU_PERIOD}
    return found


def runtime_config(config: ContainerConfig) -> dict[str, Any]:
    """The ``config.json`` document."""
    proc = config.process
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "ipc", "uts",
                                                               "mount")]
    sysctl: dict[str, str] = {}
    if config.netns is not None:
        namespaces.append({"type": "network", "path": config.netns})
        # As Docker does in a container's own network namespace: any user may bind a
        # low port and ping there; neither reaches beyond the namespace.
        sysctl = {"net.ipv4.ip_unprivileged_port_start": "0",
                  "net.ipv4.ping_group_range": "0 2147483647"}
    # On the host's network a raw socket would see and forge the host's traffic.
    caps = [c for c in DEFAULT_CAPABILITIES
            if config.netns is not None or c != "CAP_NET_RAW"]
    mounts = base_mounts() + [
        _mount(f.target, "bind", f.source, ["rbind", "rprivate", "ro", "nosuid", "nodev"])
        for f in config.files]
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "cgroupsPath": config.cgroup,
        "resources": resources(config),
        "seccomp": seccomp(),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if sysctl:
        linux["sysctl"] = sysctl
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": proc.uid, "gid": proc.gid,
                     **({"additionalGids": list(proc.additional_gids)}
                        if proc.additional_gids else {})},
            "args": list(proc.args),
            "env": list(proc.env),
            "cwd": proc.cwd or "/",
            # A user other than root starts with none in effect, as with Docker; the
            # bounding set still allows them after a setuid exec.
            "capabilities": {"bounding": caps, "effective": caps if proc.uid == 0 else [],
                             "permitted": caps if proc.uid == 0 else []},
            "noNewPrivileges": False,
        },
        "root": {"path": config.rootfs, "readonly": False},
        "hostname": config.hostname,
        "mounts": mounts,
        "annotations": dict(config.labels),
        "linux": linux,
    }
