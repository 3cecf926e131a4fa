"""Which build of the sidecar's per-request path runs: compiled or pure Python.

``setup.py`` compiles ``headers``, ``exchange`` and ``http`` with Cython, typed by their
``.pxd`` files, when Cython and a C compiler are there. The extension modules sit next
to their sources and Python's import system prefers them, so a source edited after the
build would silently run old code. The build therefore records a digest of the sources,
and on import a mismatch, or ``MESHLET_PURE_PYTHON=1``, loads the ``.py`` files instead.
Standard library only: ``setup.py`` loads this file before meshlet is installed.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
from pathlib import Path

COMPILED_MODULES = ("headers", "exchange", "http")  # in import order
DIGEST_FILE = "compiled.sha256"
PACKAGE = "meshlet.proxy"
HERE = Path(__file__).parent

log = logging.getLogger(__name__)


def source_digest(directory: Path) -> str:
    """SHA-256 over every compiled module's ``.py`` and ``.pxd``."""
    digest = hashlib.sha256()
    for name in COMPILED_MODULES:
        for suffix in (".py", ".pxd"):
            path = directory / f"{name}{suffix}"
            digest.update(path.name.encode() + b"\0")
            digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def compiled_present(directory: Path) -> bool:
    return any((directory / f"{name}{suffix}").exists() for name in COMPILED_MODULES
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def choose(directory: Path, environ: dict[str, str] | os._Environ[str]) -> tuple[str, str]:
    """("compiled" or "python", why)."""
    if environ.get("MESHLET_PURE_PYTHON", "") not in ("", "0"):
        return "python", "MESHLET_PURE_PYTHON is set"
    if not compiled_present(directory):
        return "python", "not compiled (no Cython or no C compiler at install)"
    recorded = directory / DIGEST_FILE
    if not recorded.exists() or recorded.read_text().strip() != source_digest(directory):
        return "python", "the compiled modules are older than their sources; rebuild with " \
                         "`make setup` (or pip install again)"
    return "compiled", "compiled with Cython"


def load_pure(directory: Path) -> None:
    """Import the ``.py`` sources under the modules' own names, ahead of any import."""
    for name in COMPILED_MODULES:
        spec = importlib.util.spec_from_file_location(f"{PACKAGE}.{name}",
                                                      directory / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)


def select() -> tuple[str, str]:
    build, why = choose(HERE, os.environ)
    if build == "python" and compiled_present(HERE):
        if "MESHLET_PURE_PYTHON" not in why:
            log.warning("sidecar relay: %s; running pure Python", why)
        load_pure(HERE)
    return build, why
