"""Writes every lock file from the requirements files (`make lock`; `make lock ARGS=--upgrade`).

Install sets and their locks (pins with the sha256 of every file of each pinned version, so the
same lock serves arm64 and x86_64 Lambda wheels and any developer's platform):

    requirements.txt                    -> requirements.lock                    (development, CI)
    requirements-sam.txt                -> requirements-sam.lock                (the SAM CLI)
    layers/shared/requirements.txt      -> layers/shared/requirements.lock      (the layer)
    functions/<f>/requirements.txt      -> functions/<f>/requirements.lock      (chat, mcp, ...)

The development set includes every other set, and is resolved first (uv, universal); the others are
resolved under its pins, so a package has one version everywhere: what the tests ran is what ships.
A Lambda lock holds exactly what is installed there, without environment markers: entries whose
marker is false on Lambda (Linux, CPython 3.12, arm64 and x86_64) are left out. A function's lock
leaves out what the layer already ships (the function would otherwise shadow the layer's copy) and
the packages listed in NOT_SHIPPED: never imported by the function's code (see each reason;
tests/test_deployment.py checks that no shipped module imports them). Builds install a Lambda
lock with `pip install --require-hashes --no-deps`, so pip neither resolves nor fetches anything
else.

Each lock starts with the sha256 of its inputs; tests/test_locks.py fails when a requirements file
changed after its lock was written.
"""

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker

ROOT = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).parent / "uv"
PYTHON_VERSION = "3.12"
DEV = "requirements.txt"
# The SAM CLI, in its own venv (.local/sam, scripts/bootstrap_tools.sh): it pins its own boto3.
SAM = "requirements-sam.txt"
LAYER = "layers/shared/requirements.txt"
FUNCTIONS = ("functions/chat", "functions/mcp", "functions/reminders")

# Lambda's python3.12 runtime, for environment markers (both architectures).
LAMBDA_ENVIRONMENTS = [
    {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": machine,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "python_version": "3.12",
        "python_full_version": "3.12.0",
        "extra": "",
    }
    for machine in ("aarch64", "x86_64")
]

# Dependencies a function's resolution pulls in that no shipped module imports (package names as
# in the lock). Keep a reason for each: tests/test_deployment.py checks the claim on the build.
NOT_SHIPPED: dict[str, dict[str, str]] = {
    "functions/chat": {
        "huggingface-hub": "tokenizers requires it, but only its Python bindings are imported, "
        "and they never import it (Tokenizer.from_pretrained, unused, downloads in Rust)",
        "hf-xet": "only huggingface-hub imports it",
        "fsspec": "only huggingface-hub imports it",
        "pyyaml": "only huggingface-hub imports it",
        "tqdm": "only huggingface-hub imports it",
        "filelock": "only huggingface-hub imports it",
        "packaging": "only huggingface-hub imports it",
        "httpx2": "only huggingface-hub imports it (cohere uses httpx)",
        "httpcore2": "only httpx2 imports it",
        "truststore": "only httpx2 imports it",
        "click": "only the httpx command line (httpx._main, which also needs rich: absent) "
        "imports it; `import httpx` falls back without it",
        "types-requests": "type stubs (.pyi): never imported",
        # The v1 client's: the chat function builds cohere.v2.client.V2Client (chat/assistant.py),
        # whose modules import none of these; cohere.ClientV2 would (it extends the v1 Client).
        "tokenizers": "only the v1 client (cohere.client, local tokenize/detokenize) imports it",
        "fastavro": "only the v1 client's dataset helpers (cohere.utils) import it",
        "requests": "only the v1 client's tokenizer download and the AWS/OCI clients import it",
        "urllib3": "only requests imports it",
        "charset-normalizer": "only requests imports it",
    },
    "functions/mcp": {},
    "functions/reminders": {},
}

CUSTOM_COMMAND = "make lock"


@dataclass
class Entry:
    name: str
    version: str
    marker: str | None
    hashes: list[str]
    via: list[str]

    def render(self) -> str:
        lines = [f"{self.name}=={self.version} \\"]
        lines += [f"    --hash={digest} \\" for digest in self.hashes]
        lines[-1] = lines[-1].removesuffix(" \\")
        return "\n".join(lines + self.via)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> list[Entry]:
    """The entries of a uv / pip-compile output with hashes (and "# via" annotations)."""
    entries: list[Entry] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            continue
        if not line.startswith(" "):
            requirement = line.removesuffix("\\").strip()
            pin, _, marker = requirement.partition(";")
            name, _, version = pin.strip().partition("==")
            name = name.split("[", 1)[0]  # extras: the lock holds their dependencies too
            entries.append(Entry(canonical(name), version.strip(), marker.strip() or None, [], []))
        elif line.strip().startswith("--hash="):
            entries[-1].hashes.append(
                line.strip().removeprefix("--hash=").removesuffix("\\").strip()
            )
        elif line.strip().startswith("#") and entries and "-c " not in line:
            entries[-1].via.append(line)  # not the scratch constraints file: its path changes
    for entry in entries:
        if entry.via == ["    # via"]:
            entry.via = []
    return entries


def requirement_files(path: Path) -> list[Path]:
    """The file and, recursively, the files it includes with -r."""
    files = [path]
    for line in path.read_text().splitlines():
        if line.startswith(("-r ", "--requirement ")):
            files += requirement_files(path.parent / line.split(None, 1)[1].strip())
    return files


def inputs_digest(path: Path) -> str:
    """sha256 of the requirements (comments and blank lines aside) of the file and its -r files."""
    digest = hashlib.sha256()
    for file in requirement_files(path):
        digest.update(file.relative_to(ROOT).as_posix().encode() + b"\0")
        for line in file.read_text().splitlines():
            requirement = line.split(" #", 1)[0].strip()
            if requirement and not requirement.startswith("#"):
                digest.update(requirement.encode() + b"\n")
    return digest.hexdigest()


def lock_path(requirements: Path) -> Path:
    """requirements.txt -> requirements.lock, requirements-sam.txt -> requirements-sam.lock"""
    return requirements.with_suffix(".lock")


def header(requirements: Path, lines: list[str]) -> str:
    relative = requirements.relative_to(ROOT).as_posix()
    return "\n".join(
        [
            f"# Generated by `{CUSTOM_COMMAND}` (scripts/lock.py) from {relative}: do not edit.",
            f"# inputs-sha256: {inputs_digest(requirements)}",
            *(f"# {line}" if line else "#" for line in lines),
        ]
    )


def uv_compile(requirements: Path, output: Path, extra: list[str]) -> None:
    command = [
        str(UV),
        "pip",
        "compile",
        str(requirements.relative_to(ROOT)),
        "--universal",
        "--python-version",
        PYTHON_VERSION,
        "--generate-hashes",
        "--no-header",
        "--quiet",
        "--output-file",
        str(output),
        *extra,
    ]
    subprocess.run(command, cwd=ROOT, check=True)


def on_lambda(entry: Entry) -> bool:
    if entry.marker is None:
        return True
    results = {Marker(entry.marker).evaluate(env) for env in LAMBDA_ENVIRONMENTS}
    if len(results) > 1:
        raise SystemExit(f"{entry.name}: marker '{entry.marker}' differs between architectures")
    return results.pop()


def lock_dev(requirements: Path, extra: list[str], notes: list[str]) -> list[Entry]:
    """A lock for any platform (universal, with markers) of a set installed on a developer's or
    CI's machine."""
    output = lock_path(requirements)
    print(f"==> {output.relative_to(ROOT)}", flush=True)
    uv_compile(requirements, output, extra)
    body = output.read_text()
    lines = ["Installed by scripts/bootstrap*.sh, hashes required.", *notes]
    output.write_text(header(requirements, lines) + "\n" + body)
    return parse_lock(body)


def lock_lambda_set(
    requirements: Path, constraints: Path, shipped_elsewhere: dict[str, str], extra: list[str]
) -> list[Entry]:
    output = lock_path(requirements)
    print(f"==> {output.relative_to(ROOT)}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        resolved = Path(scratch) / "resolved.txt"
        uv_compile(requirements, resolved, ["--constraint", str(constraints), *extra])
        entries = [entry for entry in parse_lock(resolved.read_text()) if on_lambda(entry)]
    directory = requirements.parent.relative_to(ROOT).as_posix()
    not_shipped = NOT_SHIPPED.get(directory, {})
    for name in not_shipped:
        if name not in {entry.name for entry in entries}:
            raise SystemExit(f"{directory}: NOT_SHIPPED names {name}, which it does not resolve")
    kept = [
        entry
        for entry in entries
        if entry.name not in shipped_elsewhere and entry.name not in not_shipped
    ]
    lines = [
        "Installed by the build (Makefile beside it) with",
        "  pip install --require-hashes --no-deps --only-binary=:all: -r requirements.lock",
        "exactly these packages: no marker, each applies on Lambda (arm64 and x86_64).",
    ]
    layer_copies = sorted(
        f"{entry.name}=={entry.version}" for entry in entries if entry.name in shipped_elsewhere
    )
    if layer_copies:
        lines += ["", "Also required, and shipped by the layer (same versions):"]
        lines += [f"  {item}" for item in layer_copies]
    if not_shipped:
        lines += ["", "Also required, but never imported, so not shipped:"]
        lines += [f"  {name}: {reason}" for name, reason in not_shipped.items()]
    text = header(requirements, lines) + "\n" + "\n".join(entry.render() for entry in kept)
    output.write_text(text + "\n")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upgrade", action="store_true", help="newest versions the pins allow")
    args = parser.parse_args()
    extra = ["--upgrade"] if args.upgrade else []

    dev = lock_dev(ROOT / DEV, extra, ["Every Lambda lock is resolved under these pins."])
    lock_dev(ROOT / SAM, extra, [])
    with tempfile.TemporaryDirectory() as scratch:
        constraints = Path(scratch) / "constraints.txt"
        # The pins that can apply on Lambda (a universal lock may fork a package by marker).
        pins = {
            f"{entry.name}=={entry.version}\n"
            for entry in dev
            if entry.marker is None
            or any(Marker(entry.marker).evaluate(env) for env in LAMBDA_ENVIRONMENTS)
        }
        constraints.write_text("".join(sorted(pins)))
        layer = lock_lambda_set(ROOT / LAYER, constraints, {}, [])
        in_layer = {entry.name: entry.version for entry in layer}
        for function in FUNCTIONS:
            lock_lambda_set(ROOT / function / "requirements.txt", constraints, in_layer, [])


if __name__ == "__main__":
    main()
