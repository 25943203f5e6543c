"""Builds one Lambda artefact from its lock: what the Makefiles run under `sam build`.

    python3.12 scripts/lambda_build.py {layer|chat|mcp|reminders} ARTIFACTS_DIR [--architecture A]

1. installs the set's requirements.lock for the Lambda platform (arm64 or x86_64, manylinux
   wheels), with `pip --require-hashes --no-deps`: exactly the locked files, nothing resolved;
2. leaves out what is provably never imported (PRUNED below, and Powertools subpackages that no
   module of the build nor of any function imports, even inside a function: a static import
   graph), console scripts, stale bytecode;
   data files that only unused features read (DATA_PRUNED), type stubs and pip's RECORD;
3. strips debug symbols from native libraries (`strip`, or llvm-strip / <arch>-linux-gnu-strip
   to strip another architecture's);
4. copies the code (the layer's package, or the function's app.py) and byte-compiles everything
   (`/opt` and `/var/task` are read-only: Python could not cache bytecode there). Libraries ship
   as bytecode alone (`module.pyc` where `module.py` was, which Python imports without the
   source): a third of their size. Our own code keeps its source, for readable tracebacks, and so
   do the few modules that read their own source (KEEP_SOURCE).

Python 3.12 must run it (the runtime's minor version: the bytecode is version-specific).
tests/test_deployment.py checks the result against the locks, and that no module a function can
reach imports what was left out (the static import graph, read from source or bytecode).
"""

import argparse
import ast
import dis
import marshal
import os
import platform
import py_compile
import shutil
import subprocess
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (lock, directory inside ARTIFACTS_DIR for the packages, what to copy there from the repo)
SETS: dict[str, tuple[str, str, list[str]]] = {
    "layer": ("layers/shared/requirements.lock", "python", ["layers/shared/python/todo_backend"]),
    "chat": ("functions/chat/requirements.lock", "", ["functions/chat/app.py"]),
    "mcp": ("functions/mcp/requirements.lock", "", ["functions/mcp/app.py"]),
    "reminders": ("functions/reminders/requirements.lock", "", ["functions/reminders/app.py"]),
}

# Never imported by our code nor by any shipped module (tests/test_deployment.py checks the
# static import graph of the build): SQLAlchemy's other dialects (a URL names postgresql+pg8000;
# dialects load by that name) and its test suite support, with PostgreSQL's test provisioning;
# pydantic's v1 API, which FastAPI tries to import inside try/except ImportError only to reject
# v1 models (we have none; NEVER_RUN_IMPORTS there gives the reason).
PRUNED: dict[str, list[str]] = {
    "layer": [
        "pydantic/v1",
        "sqlalchemy/dialects/mssql",
        "sqlalchemy/dialects/mysql",
        "sqlalchemy/dialects/oracle",
        "sqlalchemy/dialects/sqlite",
        "sqlalchemy/testing",
        "sqlalchemy/dialects/postgresql/provision.py",
    ],
}
# Data files read only by features we do not use.
DATA_PRUNED: dict[str, str] = {
    "aws_lambda_powertools/event_handler/openapi/swagger_ui/swagger-ui-bundle.min.js": "served "
    "only by Powertools' own API resolver's enable_swagger() (FastAPI serves our /docs)",
    "aws_lambda_powertools/event_handler/openapi/swagger_ui/swagger-ui.min.css": "the same",
    "dateutil/zoneinfo/dateutil-zoneinfo.tar.gz": "read only by dateutil.tz.gettz() for a zone "
    "the system lacks; we never call it (zones come from zoneinfo and the tzdata package)",
}
# Modules that read their own source at run time keep it (paths inside the artefact).
KEEP_SOURCE: dict[str, str] = {
    "anyio/__init__.py": "builds its lazy attribute table from its source (inspect.getsource); "
    "without it, anyio imports all of itself eagerly",
    "anyio/abc/__init__.py": "the same",
}
# Powertools is a toolbox of which we import a few tools: its subpackages under these folders that
# the static import graph does not reach are left out.
PRUNABLE_PACKAGES = ["aws_lambda_powertools", "aws_lambda_powertools/utilities"]
# Modules every function's code imports are what the layer must keep: the functions' app.py.
FUNCTION_ENTRY_GLOB = "functions/*/app.py"

PYTHON_TAGS = ["--implementation", "cp", "--python-version", "3.12", "--abi", "cp312"]


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# The static import graph


def module_files(roots: Iterable[Path]) -> dict[str, Path]:
    """Module name -> file, for .py files, sourceless .pyc files and extension modules under the
    roots (first wins; an extension module before a .pyc of the same name, as Python imports)."""
    modules: dict[str, Path] = {}
    for root in roots:
        for path in sorted(
            root.rglob("*"), key=lambda path: (path.parent, path.suffix == ".pyc", path.name)
        ):
            if path.suffix not in {".py", ".pyc", ".so"} or "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            parts[-1] = parts[-1].split(".", 1)[0]  # _x.cpython-312-x86_64-linux-gnu -> _x
            if parts[-1] == "__init__":
                parts.pop()
            if parts and all(part.isidentifier() for part in parts):
                modules.setdefault(".".join(parts), path)
    return modules


def package_of(path: Path, module: str) -> str:
    """The package a module's relative imports start from (itself, for an __init__)."""
    return module if path.stem == "__init__" else module.rpartition(".")[0]


def absolute_name(package: str, level: int, name: str | None) -> str:
    """The module a `from <level dots><name> import` inside `package` names."""
    if not level:
        return name or ""
    base_parts = package.split(".") if package else []
    base_parts = base_parts[: len(base_parts) - (level - 1)]
    return ".".join([*base_parts, *([name] if name else [])])


def imports_of(path: Path, module: str) -> set[str]:
    """Every module an import statement anywhere in the file (also inside functions and
    try/except) names, and string literals given to importlib.import_module / __import__.
    Reads source, or the bytecode of a sourceless .pyc."""
    if path.suffix == ".pyc":
        return bytecode_imports(path, module)
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return set()
    package = package_of(path, module)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = absolute_name(package, node.level, node.module)
            if base:
                found.add(base)
            found.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (
                    isinstance(node.func, ast.Name)
                    and node.func.id in {"import_module", "__import__"}
                )
            )
        ):
            name = node.args[0].value
            if name.startswith(".") and len(node.args) == 1:
                name = f"{package}{name}"  # relative to the caller's package (its usual form)
            found.add(name.lstrip("."))
    return found


IMPORT_CALLS = {"import_module", "__import__"}
# Instructions between an import's operands that carry none of them.
BYTECODE_FILLERS = {"PUSH_NULL", "EXTENDED_ARG", "CACHE", "NOP"}
_OP = dis.opmap
_FILLER_OPS = {_OP[name] for name in BYTECODE_FILLERS}
_NAME_LOADS = {_OP[name] for name in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_ATTR", "LOAD_FAST")}


def _instructions(code: types.CodeType) -> list[tuple[int, int]]:
    """(opcode, argument) of each instruction but the fillers, as dis.get_instructions reads
    them, straight from co_code (Python 3.12's: two bytes an instruction, EXTENDED_ARG prefixes,
    inline CACHE entries) and many times faster: reading bytecode is most of the import graph's
    time."""
    raw = code.co_code
    result: list[tuple[int, int]] = []
    extended = 0
    for offset in range(0, len(raw), 2):
        operation, argument = raw[offset], raw[offset + 1] | extended
        extended = argument << 8 if operation == _OP["EXTENDED_ARG"] else 0
        if operation not in _FILLER_OPS:
            result.append((operation, argument))
    return result


def _loaded_name(code: types.CodeType, operation: int, argument: int) -> str | None:
    """The name a LOAD_GLOBAL or LOAD_ATTR (3.12: index << 1 | flag), LOAD_NAME or LOAD_FAST
    loads."""
    if operation in (_OP["LOAD_GLOBAL"], _OP["LOAD_ATTR"]):
        return code.co_names[argument >> 1]
    if operation == _OP["LOAD_NAME"]:
        return code.co_names[argument]
    varnames = code.co_varnames
    return varnames[argument] if argument < len(varnames) else None


def bytecode_imports(path: Path, module: str) -> set[str]:
    """imports_of for a .pyc file, read from IMPORT_NAME instructions (with their level and
    from-list constants) and from a string constant that starts the arguments of import_module /
    __import__, in every code object of the module. It finds every name imports_of finds in the
    source (tests/test_build_import_graph.py), and may find a few strings that name no module
    (the start of a computed name: "sqlalchemy.dialects.%s")."""
    code = marshal.loads(path.read_bytes()[16:])  # after the .pyc header
    package = package_of(path, module)
    found: set[str] = set()

    def walk(code: types.CodeType) -> None:
        instructions = _instructions(code)
        for index, (operation, argument) in enumerate(instructions):
            if operation == _OP["IMPORT_NAME"]:
                level, from_list = (
                    code.co_consts[arg] for _, arg in instructions[index - 2 : index]
                )
                base = absolute_name(package, level, code.co_names[argument])
                if base:
                    found.add(base)
                for name in from_list or ():
                    found.add(f"{base}.{name}" if base else name)
            elif (
                operation in _NAME_LOADS
                and _loaded_name(code, operation, argument) in IMPORT_CALLS
                and index + 1 < len(instructions)
                and instructions[index + 1][0] == _OP["LOAD_CONST"]
                and isinstance(code.co_consts[instructions[index + 1][1]], str)
            ):
                name = code.co_consts[instructions[index + 1][1]]
                follows = instructions[index + 2] if index + 2 < len(instructions) else None
                alone = follows == (_OP["CALL"], 1)
                if name.startswith(".") and alone:
                    name = f"{package}{name}"
                found.add(name.lstrip("."))
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                walk(constant)

    walk(code)
    return found


ImportReader = Callable[[Path, str], set[str]]


def reachable(
    modules: dict[str, Path],
    entries: Iterable[Path],
    seeds: Iterable[str] = (),
    read: ImportReader = imports_of,
) -> set[str]:
    """The modules of `modules` that the entry files (and the seed modules) can import, directly
    or not. `read` is imports_of, or a cached imports_of when one graph is walked many times."""
    seen: set[str] = set()
    pending: list[str] = []

    def reach(name: str) -> None:
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if prefix in modules and prefix not in seen:
                seen.add(prefix)
                pending.append(prefix)

    for entry in entries:
        for name in read(entry, entry.stem):
            reach(name)
    for name in seeds:
        reach(name)
    while pending:
        module = pending.pop()
        path = modules[module]
        if path.suffix in {".py", ".pyc"}:
            for name in read(path, module):
                reach(name)
    return seen


def importers_of(
    modules: dict[str, Path], targets: set[str], read: ImportReader = imports_of
) -> Iterator[tuple[str, str]]:
    """(module, imported) for each module of the build that imports one of the targets (or a
    module inside one) and is not itself inside a target."""

    def inside(name: str) -> str | None:
        return next(
            (target for target in targets if name == target or name.startswith(target + ".")),
            None,
        )

    for module, path in modules.items():
        if path.suffix not in {".py", ".pyc"} or inside(module):
            continue
        for name in read(path, module):
            if inside(name):
                yield module, name


# ---------------------------------------------------------------------------------------------
# Building


def wheel_platforms(architecture: str) -> list[str]:
    machine = {"arm64": "aarch64", "x86_64": "x86_64"}[architecture]
    # The python3.12 runtime is Amazon Linux 2023 (glibc 2.34): any of these wheels runs there.
    tags = (f"manylinux_2_34_{machine}", f"manylinux_2_28_{machine}", f"manylinux2014_{machine}")
    return [argument for tag in tags for argument in ("--platform", tag)]


def install(lock: Path, target: Path, architecture: str) -> None:
    say(f"installing {lock.relative_to(ROOT)} ({architecture}, hashes required)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--require-hashes",
            "--no-deps",
            "--only-binary=:all:",
            "--target",
            str(target),
            *PYTHON_TAGS,
            *wheel_platforms(architecture),
            "-r",
            str(lock),
        ],
        check=True,
    )


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def prune(name: str, target: Path, extra_roots: list[Path]) -> list[str]:
    """Leaves out what is never imported; returns what it removed (relative paths)."""
    removed = []
    for relative in [*PRUNED.get(name, []), *DATA_PRUNED]:
        if (target / relative).exists():
            remove(target / relative)
            removed.append(relative)
    # Type stubs are for type checkers, and RECORD lists files for pip uninstall (no longer
    # true after pruning); neither is read at run time.
    for path in [*target.rglob("*.pyi"), *target.glob("*.dist-info/RECORD")]:
        path.unlink()
    candidates = [
        child
        for folder in PRUNABLE_PACKAGES
        if (target / folder).is_dir()
        for child in sorted((target / folder).iterdir())
        if child.is_dir() and (child / "__init__.py").exists()
    ]
    if candidates:
        modules = module_files([*extra_roots, target])
        entries = sorted(ROOT.glob(FUNCTION_ENTRY_GLOB))
        # All of our own package counts as imported, whatever imports it.
        ours = [module for module in modules if module.split(".")[0] == "todo_backend"]
        used = reachable(modules, entries, ours)
        for child in candidates:
            package = ".".join(child.relative_to(target).parts)
            if not any(m == package or m.startswith(package + ".") for m in used):
                remove(child)
                removed.append(child.relative_to(target).as_posix())
    return removed


def strip_tool(architecture: str) -> str | None:
    machine = {"arm64": "aarch64", "x86_64": "x86_64"}[architecture]
    native = platform.machine().lower() in (
        {"aarch64", "arm64"} if machine == "aarch64" else {"x86_64", "amd64"}
    )
    candidates = [os.environ.get("STRIP", ""), f"{machine}-linux-gnu-strip", "llvm-strip"]
    candidates += [f"llvm-strip-{version}" for version in range(22, 13, -1)]
    if native:
        candidates.append("strip")
    return next((found for tool in candidates if tool and (found := shutil.which(tool))), None)


def strip(target: Path, architecture: str) -> None:
    libraries = sorted(
        path
        for path in target.rglob("*")
        if path.is_file() and (path.suffix == ".so" or ".so." in path.name)
    )
    if not libraries:
        return
    tool = strip_tool(architecture)
    if tool is None:
        raise SystemExit(
            f"no strip tool for {architecture} libraries: install binutils-"
            f"{'aarch64' if architecture == 'arm64' else 'x86-64'}-linux-gnu or llvm (llvm-strip)"
        )
    say(f"stripping {len(libraries)} native libraries ({Path(tool).name})")
    subprocess.run([tool, "--strip-unneeded", *map(str, libraries)], check=True)


def build(name: str, artifacts: Path, architecture: str) -> None:
    if sys.version_info[:2] != (3, 12):
        raise SystemExit(f"{sys.executable} is not Python 3.12 (the Lambda runtime's version)")
    lock, packages, sources = SETS[name]
    target = artifacts / packages if packages else artifacts
    target.mkdir(parents=True, exist_ok=True)
    if lock:
        install(ROOT / lock, target, architecture)
    # Console scripts are never run in Lambda; stale bytecode from the work tree is not wanted.
    remove(target / "bin")
    for source in sources:
        source_path = ROOT / source
        if source_path.is_dir():
            shutil.copytree(source_path, target / source_path.name, dirs_exist_ok=True)
        else:
            shutil.copy2(source_path, target / source_path.name)
    for cache in list(target.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    removed = prune(name, target, [])
    if removed:
        say(f"left out, never imported: {', '.join(removed)}")
    strip(target, architecture)
    say(f"byte-compiling {target}")
    compile_tree(target, keep_source={source_path.name for source_path in map(Path, sources)})


def compile_tree(target: Path, keep_source: set[str]) -> None:
    """Byte-compiles every module; drops the source of all but `keep_source` (top-level names
    under target) and KEEP_SOURCE."""
    sources = sorted(target.rglob("*.py"))
    kept = [
        path
        for path in sources
        if path.relative_to(target).parts[0] in keep_source
        or path.relative_to(target).as_posix() in KEEP_SOURCE
    ]
    # unchecked-hash: SAM zips every file with a 1980 timestamp, which would make mtime-based
    # .pyc stale (and Python would recompile them on every cold start, unable to write them).
    failed = compile_files(target, kept, py_compile.PycInvalidationMode.UNCHECKED_HASH, False)
    # Sourceless modules without column positions (-X no_debug_ranges): a traceback could not
    # point into source it does not have, and the bytecode is 5% smaller and loads faster.
    sourceless = sorted(set(sources) - set(kept))
    completed = subprocess.run(
        [sys.executable, "-X", "no_debug_ranges", __file__, "compile-sourceless", str(target)],
        input="\n".join(map(str, sourceless)),
        capture_output=True,
        text=True,
    )
    failed += completed.stdout.split("\n") if completed.stdout else []
    if completed.returncode != 0:
        failed.append(completed.stderr[-2000:])
    # Where an extension module and a pure-Python twin ship together (SQLAlchemy's Cython
    # modules), Python imports the extension: the twin's bytecode is never loaded.
    for library in target.rglob("*.so"):
        twin = library.with_name(library.name.split(".", 1)[0] + ".pyc")
        if twin.exists():
            twin.unlink()
    if failed:
        raise SystemExit("byte-compilation failed:\n" + "\n".join(failed))


def compile_files(
    target: Path, paths: list[Path], mode: py_compile.PycInvalidationMode, sourceless: bool
) -> list[str]:
    """Compiles each file (sourceless: to module.pyc beside it, then deletes the source);
    returns the failures."""
    failed = []
    for path in paths:
        relative = path.relative_to(target)
        cfile = str(path.with_suffix(".pyc")) if sourceless else None
        try:
            py_compile.compile(
                str(path), cfile=cfile, dfile=str(relative), doraise=True, invalidation_mode=mode
            )
        except py_compile.PyCompileError as error:
            failed.append(f"{relative}: {error.msg}")
            continue
        if sourceless:
            path.unlink()
    return failed


def main() -> None:
    if sys.argv[1:2] == ["compile-sourceless"]:  # compile_tree's child: the files on stdin
        target = Path(sys.argv[2])
        paths = [Path(line) for line in sys.stdin.read().splitlines() if line]
        mode = py_compile.PycInvalidationMode.TIMESTAMP  # never checked without a source
        print("\n".join(compile_files(target, paths, mode, True)), end="")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", choices=sorted(SETS))
    parser.add_argument("artifacts_dir", type=Path)
    parser.add_argument(
        "--architecture",
        choices=["arm64", "x86_64"],
        default=os.environ.get("LAMBDA_ARCHITECTURE") or "arm64",
    )
    args = parser.parse_args()
    build(args.set, args.artifacts_dir.resolve(), args.architecture)


if __name__ == "__main__":
    main()
