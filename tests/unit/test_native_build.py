"""Which build of the compiled modules runs (meshlet/native.py): a compiled module is
used only while it matches its sources, and MESHLET_PURE_PYTHON forces the .py."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import meshlet.compiled
from meshlet import native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def copy_sources(tmp_path: Path) -> Path:
    """The compiled modules' sources, laid out as in the meshlet package."""
    for name in native.COMPILED_MODULES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".py", ".pxd", ".pyx"):
            source = Path(native.PACKAGE_DIR) / f"{name}{suffix}"
            if source.exists():
                shutil.copy(source, tmp_path / f"{name}{suffix}")
    return tmp_path


def fake_build(directory: Path) -> None:
    """What setup.py leaves: extension files and the digest of the sources."""
    for name in native.COMPILED_MODULES:
        (directory / f"{name}{SUFFIX}").write_bytes(b"")
    (directory / native.DIGEST_FILE).write_text(native.source_digest(directory) + "\n")


def test_without_compiled_modules_runs_python(tmp_path: Path) -> None:
    build, why = native.choose(copy_sources(tmp_path), {})
    assert (build, why.startswith("not compiled")) == ("python", True)


def test_a_fresh_build_is_used(tmp_path: Path) -> None:
    directory = copy_sources(tmp_path)
    fake_build(directory)
    assert native.choose(directory, {})[0] == "compiled"


@pytest.mark.parametrize("edited", ["proxy/exchange.py", "proxy/lb/base.pxd",
                                    "api/send_many.pyx"])
def test_an_edited_source_makes_the_build_stale(tmp_path: Path, edited: str) -> None:
    directory = copy_sources(tmp_path)
    fake_build(directory)
    with (directory / edited).open("a") as source:
        source.write("# edited after the build\n")
    build, why = native.choose(directory, {})
    assert build == "python" and "older than their sources" in why


def test_a_build_without_its_digest_is_not_trusted(tmp_path: Path) -> None:
    directory = copy_sources(tmp_path)
    fake_build(directory)
    (directory / native.DIGEST_FILE).unlink()
    assert native.choose(directory, {})[0] == "python"


def test_the_environment_forces_python(tmp_path: Path) -> None:
    directory = copy_sources(tmp_path)
    fake_build(directory)
    assert native.choose(directory, {"MESHLET_PURE_PYTHON": "1"})[0] == "python"
    assert native.choose(directory, {"MESHLET_PURE_PYTHON": "0"})[0] == "compiled"


def loaded_files(environ: dict[str, str]) -> list[str]:
    """The build a fresh process reports, then the file of every compiled module."""
    names = [native.module_name(name) for name in native.COMPILED_MODULES]
    code = ("import importlib, meshlet.proxy.sidecar, meshlet.compiled as c; "
            f"print(c.BUILD, *[importlib.import_module(n).__file__ for n in {names!r}])")
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                          text=True, check=True).stdout.split()


def test_the_forced_python_build_imports_the_sources() -> None:
    build, *files = loaded_files({**os.environ, "MESHLET_PURE_PYTHON": "1"})
    assert build == "python"
    assert all(f.endswith(".py") for f in files), files


def test_the_running_build_is_the_one_reported() -> None:
    """CI installs a compiler and sets MESHLET_EXPECT_COMPILED, so there the compiled
    build must be the one in use; anywhere, the report must match the modules."""
    environ = {k: v for k, v in os.environ.items() if k != "MESHLET_PURE_PYTHON"}
    build, *files = loaded_files(environ)
    compiled = [not f.endswith(".py") for f in files]
    assert compiled == [build == "compiled"] * len(native.COMPILED_MODULES), (build, files)
    if os.environ.get("MESHLET_EXPECT_COMPILED"):
        assert build == "compiled", meshlet.compiled.BUILD_REASON


def test_a_partial_build_runs_python(tmp_path: Path) -> None:
    """Compiled modules import each other's types, so one missing means none is used."""
    directory = copy_sources(tmp_path)
    fake_build(directory)
    (directory / f"proxy/cluster{SUFFIX}").unlink()
    build, why = native.choose(directory, {})
    assert build == "python" and "only some" in why


def test_every_pxd_or_pyx_names_a_compiled_module() -> None:
    """setup.py compiles COMPILED_MODULES; a .pxd or .pyx outside it would compile
    nothing, and a module in it with neither would compile untyped. A .pyx has its pure
    Python twin beside it, for the Python build."""
    package = Path(native.PACKAGE_DIR)
    typed = {str(p.relative_to(package).with_suffix(""))
             for p in [*package.rglob("*.pxd"), *package.rglob("*.pyx")]}
    assert typed == set(native.COMPILED_MODULES)
    assert all((package / f"{name}.py").exists() for name in native.COMPILED_MODULES)
