"""The static import graph that scripts/lambda_build.py prunes by, and that tests/test_deployment.py
checks the build with, reads a sourceless .pyc as well as a .py: the libraries ship as bytecode."""

import importlib.util
import py_compile
from pathlib import Path

import pytest

from scripts.lambda_build import imports_of, module_files
from tests.support.progress import ticking

# What the layer and the chat function import most of (SQLAlchemy: lazy and string imports;
# pydantic: import_module with computed names; anyio: relative imports at several levels).
PACKAGES = ["todo_backend", "fastapi", "pydantic", "sqlalchemy", "anyio", "cohere", "jwt"]


def _package_root(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, name
    return Path(spec.origin).parent


@pytest.mark.parametrize("package", PACKAGES)
def test_bytecode_names_every_import_the_source_names(package: str, tmp_path: Path):
    # Given every module of an installed package, and each compiled to a sourceless .pyc
    root = _package_root(package)
    sources = sorted(root.rglob("*.py"))
    assert len(sources) > 3
    known = set(module_files([root]))  # the package's own modules, named from its folder
    known = {f"{package}.{name}" if name else package for name in known}
    compared = 0
    for source in ticking(f"{package}: modules compared", sources):
        relative = source.relative_to(root.parent)
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        bytecode = tmp_path / relative.with_suffix(".pyc")
        bytecode.parent.mkdir(parents=True, exist_ok=True)
        py_compile.compile(str(source), cfile=str(bytecode), doraise=True)

        # When both are read
        from_source = imports_of(source, module)
        from_bytecode = imports_of(bytecode, module)

        # Then the bytecode names all the source names, and anything more names no module
        assert from_source <= from_bytecode, (module, from_source - from_bytecode)
        assert not (from_bytecode - from_source) & known, module
        compared += 1
    assert compared == len(sources)


def test_relative_star_and_string_imports_are_read_from_bytecode(tmp_path: Path):
    # Given a module of a package that imports in each form the graph follows
    package = tmp_path / "pkg" / "sub"
    package.mkdir(parents=True)
    source = package / "mod.py"
    source.write_text(
        "import json, os.path\n"
        "from . import sibling\n"
        "from ..top import name as alias\n"
        "from .deep.er import *\n"
        "def later():\n"
        "    import importlib\n"
        "    importlib.import_module('xml.dom')\n"
        "    importlib.import_module('.lazy', __package__)\n"
        "    __import__('csv')\n"
        "    return importlib.import_module('.rel')\n"
    )
    bytecode = tmp_path / "mod.pyc"
    py_compile.compile(str(source), cfile=str(bytecode), doraise=True)

    # When the bytecode is read
    found = imports_of(bytecode, "pkg.sub.mod")

    # Then it names what the source names
    assert found == imports_of(source, "pkg.sub.mod")
    assert {
        "json",
        "os.path",
        "pkg.sub",
        "pkg.sub.sibling",
        "pkg.top",
        "pkg.top.name",
        "pkg.sub.deep.er",
        "importlib",
        "xml.dom",
        "lazy",
        "csv",
        "pkg.sub.rel",
    } <= found
