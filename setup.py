"""Build: everything is in pyproject.toml except the optional compiled relay.

The sidecar's per-request modules and the watch fan-out's sends (see
``src/meshlet/native.py``) are compiled
with Cython, typed by their ``.pxd`` files, when Cython and a C compiler are there. If
either is missing, or ``MESHLET_PURE_PYTHON=1`` is set, the same modules run as pure
Python: the extensions are optional and the ``.py`` files stay the only source.
"""

import importlib.util
import os
from pathlib import Path
from types import ModuleType

from setuptools import setup

PACKAGE_DIR = Path("src/meshlet")


def load_native() -> ModuleType:
    """native.py, which names the modules and digests their sources (not installed yet)."""
    spec = importlib.util.spec_from_file_location("meshlet_native",
                                                  PACKAGE_DIR / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source(name: str) -> Path:
    """A module's ``.pyx`` where it has one (C the ``.py`` cannot say, which is then
    its pure Python twin), else the ``.py`` its ``.pxd`` types."""
    pyx = PACKAGE_DIR / f"{name}.pyx"
    return pyx if pyx.exists() else PACKAGE_DIR / f"{name}.py"


def extensions() -> list[object]:
    native = load_native()
    if native.forced_python(os.environ):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    digest = native.source_digest(PACKAGE_DIR)
    modules = cythonize([str(source(name)) for name in native.COMPILED_MODULES],
                        build_dir="build/cython", quiet=True, include_path=["src"],
                        compiler_directives={"language_level": 3,
                                             "annotation_typing": False})
    for module in modules:
        module.optional = True  # no compiler: install anyway, run pure Python
        module.extra_compile_args.append("-g0")  # no debug info: 2 MB in all instead of 13
    # Recorded once Cython succeeded; native.py also checks that every module compiled.
    (PACKAGE_DIR / native.DIGEST_FILE).write_text(digest + "\n")
    return list(modules)


setup(ext_modules=extensions())
