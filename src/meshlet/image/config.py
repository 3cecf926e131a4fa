"""An image's config, and how a container's process follows from it, as Docker does.

``ImageConfig`` is the ``config`` object of an OCI image config (Entrypoint, Cmd, Env,
WorkingDir, ExposedPorts, User, Labels), read strictly: a wrong type is a ConfigError,
not a process started with the wrong argv later. Keys meshlet does not use
(Volumes, StopSignal, Healthcheck, ...) are ignored when read and kept in the stored
config blob, whose digest is the image id.

``apply_changes`` takes the Dockerfile instructions ``docker import -c`` does (CMD,
ENTRYPOINT, ENV, WORKDIR, EXPOSE, USER, LABEL); others are refused. Differences from
Docker, on purpose: a JSON-looking CMD/ENTRYPOINT (``[...]``) that is not a JSON array
of strings is refused rather than run as a shell command, and ``$VAR`` is not expanded.

The runtime's rules: ``command_for`` (the argv), ``env_for`` (the environment) and
``resolve_user`` (uid, gid and supplementary groups from the image's /etc/passwd and
/etc/group, as runc's ``GetExecUser``). Pure: no I/O.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from meshlet.errors import ConfigError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROTOCOLS = ("tcp", "udp", "sctp")
MAX_ID = 2**31 - 1
MAX_PORT_RANGE = 1024
_ENV_NAME = re.compile(r"[^=\s]+\Z")


@dataclass(frozen=True)
class ImageConfig:
    """What an image asks of the process a container runs. ``None`` for entrypoint
    or cmd means the image sets none (Docker's ``null``)."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    exposed_ports: tuple[str, ...] = ()
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_oci(cls, data: Any) -> ImageConfig:
        """From an OCI image config's ``config`` object (``None`` is an empty one).
        Raises ConfigError naming the key for a value of the wrong type."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError("image config: 'config' must be an object", "config")
        env = _strings(data.get("Env"), "Env") or ()
        for entry in env:
            _env_entry(entry, "Env")
        working_dir = _string(data.get("WorkingDir"), "WorkingDir")
        if working_dir and not working_dir.startswith("/"):
            raise ConfigError(f"image config: WorkingDir {working_dir!r} is not an "
                              "absolute path", "WorkingDir")
        ports = data.get("ExposedPorts")
        if ports is not None and not isinstance(ports, dict):
            raise ConfigError("image config: ExposedPorts must be an object of "
                              "\"PORT/PROTOCOL\": {}", "ExposedPorts")
        labels = data.get("Labels")
        if labels is not None and not (isinstance(labels, dict) and all(
                isinstance(v, str) for v in labels.values())):
            raise ConfigError("image config: Labels must be an object of strings", "Labels")
        return cls(entrypoint=_strings(data.get("Entrypoint"), "Entrypoint"),
                   cmd=_strings(data.get("Cmd"), "Cmd"), env=env, working_dir=working_dir,
                   exposed_ports=_dedupe(normalize_port(p, "ExposedPorts")
                                         for p in (ports or {})),
                   user=_string(data.get("User"), "User"), labels=dict(labels or {}))

    def to_oci(self) -> dict[str, Any]:
        """The OCI ``config`` object (keys with no value left out)."""
        out: dict[str, Any] = {}
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.env:
            out["Env"] = list(self.env)
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.user:
            out["User"] = self.user
        if self.labels:
            out["Labels"] = dict(self.labels)
        return out


def _string(value: Any, key: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"image config: {key} must be a string", key)
    return value


def _strings(value: Any, key: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ConfigError(f"image config: {key} must be an array of strings", key)
    return tuple(value)


def _env_entry(entry: str, key: str) -> tuple[str, str]:
    name, sep, value = entry.partition("=")
    if not sep or not _ENV_NAME.match(name):
        raise ConfigError(f"{key} {entry!r}: expected NAME=VALUE", key)
    return name, value


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def normalize_port(text: str, key: str = "EXPOSE") -> str:
    """``8080`` -> ``8080/tcp``; ``53/udp`` stays. Raises ConfigError otherwise."""
    port, _, proto = text.partition("/")
    proto = (proto or "tcp").lower()
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535 \
            or proto not in PROTOCOLS:
        raise ConfigError(f"{key} {text!r}: expected PORT[/tcp|udp|sctp] with a port "
                          "from 1 to 65535", key)
    return f"{int(port)}/{proto}"


def _expose(word: str) -> list[str]:
    """One EXPOSE word: a port or a range ``8000-8010``, with an optional protocol."""
    ports, slash, proto = word.partition("/")
    low, dash, high = ports.partition("-")
    if not dash:
        return [normalize_port(word)]
    first, last = (normalize_port(p + slash + proto) for p in (low, high))
    lo, hi = int(first.split("/")[0]), int(last.split("/")[0])
    if hi < lo or hi - lo >= MAX_PORT_RANGE:
        raise ConfigError(f"EXPOSE {word!r}: a range goes low-high, at most "
                          f"{MAX_PORT_RANGE} ports", "EXPOSE")
    suffix = first.split("/")[1]
    return [f"{p}/{suffix}" for p in range(lo, hi + 1)]


# -- --change ----------------------------------------------------------------------

ACCEPTED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "WORKDIR")


def _command(keyword: str, text: str) -> tuple[str, ...]:
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{keyword} {text}: not a JSON array of strings (write "
                              f"{keyword} [\"prog\", \"arg\"], or {keyword} prog arg for "
                              "/bin/sh -c)", keyword)
        return tuple(value)
    return ("/bin/sh", "-c", text)


def _pairs(keyword: str, text: str) -> list[tuple[str, str]]:
    """``K=V K2="v 2"`` (shell quoting), or the legacy ``K some value``."""
    try:
        words = shlex.split(text, posix=True)
    except ValueError as exc:
        raise ConfigError(f"{keyword} {text}: {exc}", keyword) from None
    if not words:
        raise ConfigError(f"{keyword} needs NAME=VALUE", keyword)
    if "=" not in words[0]:
        name, _, value = text.strip().partition(" ")
        value = value.strip()
        if not value:
            raise ConfigError(f"{keyword} {text}: expected NAME=VALUE or NAME VALUE",
                              keyword)
        value = " ".join(shlex.split(value)) if value[:1] in "'\"" else value
        return [(name, value)]
    pairs = []
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name or (keyword == "ENV" and not _ENV_NAME.match(name)):
            raise ConfigError(f"{keyword} {word!r}: expected NAME=VALUE", keyword)
        pairs.append((name, value))
    return pairs


def set_env(env: Iterable[str], name: str, value: str) -> tuple[str, ...]:
    """``env`` with ``name`` set: replaced where it is, else appended."""
    out, done = [], False
    for entry in env:
        if entry.partition("=")[0] == name:
            if not done:
                out.append(f"{name}={value}")
                done = True
            continue
        out.append(entry)
    if not done:
        out.append(f"{name}={value}")
    return tuple(out)


def apply_changes(config: ImageConfig, changes: Iterable[str]) -> ImageConfig:
    """``config`` with ``--change`` instructions applied in order, as ``docker import
    -c`` does (an ENTRYPOINT clears the Cmd unless a CMD came before it). Raises
    ConfigError for an instruction not in ``ACCEPTED`` or a malformed one."""
    cmd_set = False
    for change in changes:
        keyword, _, text = change.strip().partition(" ")
        keyword, text = keyword.upper(), text.strip()
        if keyword not in ACCEPTED:
            raise ConfigError(
                f"--change {change.strip()[:60]!r}: {keyword or 'an empty instruction'} "
                f"is not accepted by image import (only {', '.join(ACCEPTED)})", "change")
        if not text:
            raise ConfigError(f"--change {keyword}: needs a value", "change")
        if keyword == "CMD":
            config, cmd_set = replace(config, cmd=_command(keyword, text)), True
        elif keyword == "ENTRYPOINT":
            config = replace(config, entrypoint=_command(keyword, text),
                             cmd=config.cmd if cmd_set else None)
        elif keyword == "ENV":
            env = config.env
            for name, value in _pairs(keyword, text):
                env = set_env(env, name, value)
            config = replace(config, env=env)
        elif keyword == "LABEL":
            config = replace(config, labels={**config.labels, **dict(_pairs(keyword, text))})
        elif keyword == "WORKDIR":
            base = config.working_dir or "/"
            config = replace(config, working_dir=posixpath.normpath(
                posixpath.join(base, text)).replace("//", "/"))
        elif keyword == "EXPOSE":
            ports = [p for word in text.split() for p in _expose(word)]
            config = replace(config, exposed_ports=_dedupe([*config.exposed_ports, *ports]))
        elif keyword == "USER":
            if len(text.split()) != 1:
                raise ConfigError(f"USER {text!r}: expected one USER[:GROUP]", "USER")
            config = replace(config, user=text)
    return config


# -- the runtime's rules --------------------------------------------------------------


def command_for(config: ImageConfig, entrypoint_override: list[str] | None,
                args: list[str]) -> list[str]:
    """The argv of a container, as ``docker run`` builds it: the entrypoint (the
    override if given, else the image's) followed by ``args`` if any, else by the
    image's Cmd — which an ``--entrypoint`` override clears. Raises ConfigError when
    that leaves nothing to run."""
    if entrypoint_override is not None:
        entrypoint, default_cmd = list(entrypoint_override), []
    else:
        entrypoint, default_cmd = list(config.entrypoint or ()), list(config.cmd or ())
    argv = entrypoint + (list(args) if args else default_cmd)
    if not argv:
        raise ConfigError("no command to run: the image sets no Entrypoint or Cmd; "
                          "give a command", "command")
    return argv


def env_for(config: ImageConfig, user_env: Mapping[str, str], hostname: str) -> list[str]:
    """A container's environment, as Docker makes it: PATH (the default unless the
    image sets one) and HOSTNAME first, then the image's Env, then ``user_env``; a
    later value replaces an earlier one in its place."""
    env: tuple[str, ...] = (f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}")
    for entry in config.env:
        name, value = _env_entry(entry, "Env")
        env = set_env(env, name, value)
    for name, value in user_env.items():
        env = set_env(env, name, value)
    return list(env)


def _table(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < fields:
            parts += [""] * (fields - len(parts))
        rows.append(parts)
    return rows


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None  # not "²"


def _in_range(value: int, what: str, user: str) -> int:
    if not 0 <= value <= MAX_ID:
        raise ConfigError(f"user {user!r}: {what} {value} is out of range (0 to {MAX_ID})",
                          "user")
    return value


def resolve_user(user: str, passwd_text: str, group_text: str) -> tuple[int, int,
                                                                          tuple[int, ...]]:
    """``(uid, gid, supplementary gids)`` for an image's (or ``--user``'s) ``user``:
    ``""`` (root), ``uid``, ``name``, ``uid:gid``, ``name:group``, looked up in the
    image's /etc/passwd and /etc/group text as runc does. A name is looked up, a number
    need not be (its gid is then 0, or the passwd entry's). Supplementary groups are
    those that list the user as a member, and only when no group is given. Raises
    ConfigError for a name or group the files do not hold."""
    if any(c.isspace() for c in user):
        raise ConfigError(f"user {user!r}: must not hold white space", "user")
    user_arg, _, group_arg = user.partition(":")
    uid_num, gid_num = _number(user_arg), _number(group_arg)
    uid, gid, name = 0, 0, ""
    for row in _table(passwd_text, 7):
        row_uid, row_gid = _number(row[2]), _number(row[3])
        if row_uid is None or row_gid is None:
            continue
        if (user_arg == "" and row_uid == 0) or \
                (uid_num is not None and row_uid == uid_num) or \
                (uid_num is None and user_arg and row[0] == user_arg):
            uid, gid, name = row_uid, row_gid, row[0]
            break
    else:
        if user_arg and uid_num is None:
            raise ConfigError(f"user {user_arg!r} is not in the image's /etc/passwd", "user")
        if uid_num is not None:
            uid = uid_num
    _in_range(uid, "uid", user)
    groups = [(row[0], _number(row[2]), [m for m in row[3].split(",") if m])
              for row in _table(group_text, 4)]
    groups = [(n, g, members) for n, g, members in groups if g is not None]
    if group_arg:
        for group_name, group_gid, _ in groups:
            if (gid_num is not None and group_gid == gid_num) or \
                    (gid_num is None and group_name == group_arg):
                assert group_gid is not None
                return uid, _in_range(group_gid, "gid", user), ()
        if gid_num is None:
            raise ConfigError(f"group {group_arg!r} is not in the image's /etc/group", "user")
        return uid, _in_range(gid_num, "gid", user), ()
    extra = tuple(dict.fromkeys(g for _, g, members in groups
                                if name and name in members and g is not None))
    return uid, _in_range(gid, "gid", user), extra
