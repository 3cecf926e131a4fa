"""Which build of the compiled modules runs: compiled or pure Python.

They are the sidecar's per-request path and the watch fan-out's sends. ``setup.py``
compiles the modules of ``COMPILED_MODULES`` with Cython, typed by their ``.pxd``
files (or from a ``.pyx``, beside its pure Python twin), when Cython and a C compiler
are there. The extension modules sit next
to their sources and Python's import system prefers them, so a source edited after the
build would silently run old code. The build therefore records a digest of the sources,
and on import a mismatch, or ``MESHLET_PURE_PYTHON=1``, loads the ``.py`` files instead
(``meshlet.compiled`` decides, once, before anything imports them). Standard library
only: ``setup.py`` loads this file before meshlet is installed.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import sys

# Paths under the meshlet package, in import order: a module after those it imports at
# run time, as the Python build loads them in this order (cimports may go both ways).
COMPILED_MODULES = ("observe/hot_metrics", "proxy/lb/base", "proxy/lb/peak_ewma",
                    "proxy/request_view", "proxy/routing", "proxy/resilience/retry_budget",
                    "proxy/pool", "proxy/cluster", "proxy/headers", "proxy/plain_head",
                    "proxy/upstream", "proxy/connector", "proxy/listener", "proxy/exchange",
                    "proxy/http", "api/send_many")
DIGEST_FILE = "proxy/compiled.sha256"
# The meshlet package. Paths are strings here: pathlib is one module a sidecar need not
# load (with it, 0.3 MiB more resident).
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)


def module_name(path: str) -> str:
    return "meshlet." + path.replace("/", ".")


def source_digest(package_dir: PathLike) -> str:
    """SHA-256 over every compiled module's ``.py``, ``.pxd`` and ``.pyx``."""
    digest = hashlib.sha256()
    for name in COMPILED_MODULES:
        for suffix in (".py", ".pxd", ".pyx"):
            path = os.path.join(package_dir, f"{name}{suffix}")
            digest.update(f"{name}{suffix}".encode() + b"\0")
            if os.path.exists(path):
                with open(path, "rb") as source:
                    digest.update(source.read())
    return digest.hexdigest()


def compiled(package_dir: PathLike) -> list[bool]:
    """Per module of COMPILED_MODULES: whether an extension module sits beside it."""
    return [any(os.path.exists(os.path.join(package_dir, f"{name}{suffix}"))
                for suffix in importlib.machinery.EXTENSION_SUFFIXES)
            for name in COMPILED_MODULES]


Environ = dict[str, str] | os._Environ[str]


def forced_python(environ: Environ) -> bool:
    return environ.get("MESHLET_PURE_PYTHON", "") not in ("", "0")


def choose(package_dir: PathLike, environ: Environ) -> tuple[str, str]:
    """("compiled" or "python", why)."""
    if forced_python(environ):
        return "python", "MESHLET_PURE_PYTHON is set"
    built = compiled(package_dir)
    if not any(built):
        return "python", "not compiled (no Cython or no C compiler at install)"
    if not all(built):  # compiled modules import each other's types: all or none
        return "python", "only some modules were compiled; reinstall to compile them all"
    if recorded_digest(package_dir) != source_digest(package_dir):
        return "python", "the compiled modules are older than their sources; rebuild with " \
                         "`make setup` (or pip install again)"
    return "compiled", "compiled with Cython"


def recorded_digest(package_dir: PathLike) -> str | None:
    try:
        with open(os.path.join(package_dir, DIGEST_FILE)) as recorded:
            return recorded.read().strip()
    except FileNotFoundError:
        return None


class PureSources:
    """An import finder, first on ``sys.meta_path``, that finds each compiled module's
    ``.py`` instead of its extension, when and if the module is imported: a process
    loads only the modules it uses (a sidecar none of the API's)."""

    def __init__(self, package_dir: PathLike) -> None:
        self.sources = {module_name(name): os.path.join(package_dir, f"{name}.py")
                        for name in COMPILED_MODULES}

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def load_pure(package_dir: PathLike) -> None:
    """From now on, the modules import from their ``.py`` sources (call it before any
    of them is imported)."""
    sys.meta_path.insert(0, PureSources(package_dir))


def select() -> tuple[str, str]:
    build, why = choose(PACKAGE_DIR, os.environ)
    if build == "python" and any(compiled(PACKAGE_DIR)):
        if not forced_python(os.environ):
            log.warning("compiled modules: %s; running pure Python", why)
        load_pure(PACKAGE_DIR)
    return build, why
