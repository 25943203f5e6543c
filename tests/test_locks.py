"""The lock files (scripts/lock.py, `make lock`): each agrees with its requirements file, pins
every package with hashes, and all of them with the development lock, which is what .venv holds:
the packages tested are the packages deployed. (tests/test_deployment.py checks that the build
holds exactly the Lambda locks.)"""

import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.markers import Marker

from scripts import lock

ROOT = Path(__file__).resolve().parents[1]
DEV_LOCK = ROOT / "requirements.lock"
LAYER_LOCK = ROOT / "layers" / "shared" / "requirements.lock"
FUNCTION_LOCKS = {directory: ROOT / directory / "requirements.lock" for directory in lock.FUNCTIONS}
LAMBDA_LOCKS = [LAYER_LOCK, *FUNCTION_LOCKS.values()]
ALL_REQUIREMENTS = [ROOT / lock.DEV, ROOT / lock.LAYER] + [
    ROOT / directory / "requirements.txt" for directory in lock.FUNCTIONS
]
SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")


def entries(path: Path) -> dict[str, lock.Entry]:
    return {entry.name: entry for entry in lock.parse_lock(path.read_text())}


def direct_pins(path: Path) -> dict[str, str]:
    """name -> version of the requirements file's own pins (not those of -r files)."""
    pins = {}
    for line in path.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if not requirement or requirement.startswith("-"):
            continue
        name, separator, version = requirement.partition("==")
        assert separator, f"{path.name}: '{requirement}' is not pinned with =="
        pins[lock.canonical(name.split("[", 1)[0])] = version.strip()
    return pins


@pytest.mark.parametrize("requirements", ALL_REQUIREMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_lock_was_written_from_its_requirements_as_they_are(requirements: Path):
    # Given a requirements file and its lock
    lock_file = requirements.with_name("requirements.lock")
    assert lock_file.exists(), f"{lock_file.relative_to(ROOT)} is missing: run `make lock`"
    # Then the lock records the digest of the requirements as they are now (any edit, even a
    # removal, of the file or of a file it includes makes this fail until `make lock`)
    recorded = re.search(r"^# inputs-sha256: ([0-9a-f]{64})$", lock_file.read_text(), re.M)
    assert recorded, f"{lock_file.relative_to(ROOT)} has no inputs-sha256 line"
    assert recorded.group(1) == lock.inputs_digest(requirements), (
        f"{requirements.relative_to(ROOT)} changed since its lock was written: run `make lock`"
    )
    # And every pin of the file is in its lock at that version (for a function: in its lock, in
    # the layer's, or deliberately left out as never imported)
    locked = {name: entry.version for name, entry in entries(lock_file).items()}
    directory = requirements.parent.relative_to(ROOT).as_posix()
    if directory in lock.FUNCTIONS:
        locked = {name: e.version for name, e in entries(LAYER_LOCK).items()} | locked
    for name, version in direct_pins(requirements).items():
        assert locked.get(name) == version, f"{name}=={version}: lock has {locked.get(name)}"


def test_a_changed_requirements_file_no_longer_matches_its_lock(tmp_path: Path, monkeypatch):
    # Given a copy of the chat function's requirements and the digest its lock records
    copy = tmp_path / "functions" / "chat" / "requirements.txt"
    copy.parent.mkdir(parents=True)
    original = ROOT / "functions" / "chat" / "requirements.txt"
    copy.write_text(original.read_text())
    monkeypatch.setattr(lock, "ROOT", tmp_path)
    recorded = lock.inputs_digest(copy)
    # When a pin changes
    copy.write_text(original.read_text().replace("cohere==", "cohere==0.0.0; cohere=="))
    # Then the digest differs, so the test above would fail
    assert lock.inputs_digest(copy) != recorded


@pytest.mark.parametrize("lock_file", [DEV_LOCK, *LAMBDA_LOCKS], ids=lambda p: p.parent.name)
def test_every_locked_package_has_sha256_hashes(lock_file: Path):
    locked = entries(lock_file)
    assert locked
    for entry in locked.values():
        assert entry.version, entry.name
        assert entry.hashes, f"{entry.name} has no hash"
        assert all(SHA256.match(digest) for digest in entry.hashes), entry.name


@pytest.mark.parametrize("lock_file", LAMBDA_LOCKS, ids=lambda p: p.parent.name)
def test_lambda_locks_hold_the_development_versions_and_files_without_markers(lock_file: Path):
    dev = entries(DEV_LOCK)
    for name, entry in entries(lock_file).items():
        # No marker: pip evaluates markers for the machine it runs on, not for the Lambda target
        assert entry.marker is None, f"{name}: {entry.marker}"
        assert name in dev, f"{name} is not in requirements.lock"
        assert entry.version == dev[name].version, f"{name}: {entry.version} vs {dev[name].version}"
        assert set(entry.hashes) <= set(dev[name].hashes), f"{name}: files not in requirements.lock"


def test_no_function_ships_a_package_of_the_layer():
    # A function's copy would come first on sys.path and shadow the layer's
    layer = set(entries(LAYER_LOCK))
    for directory, lock_file in FUNCTION_LOCKS.items():
        assert not layer & set(entries(lock_file)), directory


def test_functions_leave_out_only_packages_their_resolution_pulls_in():
    # NOT_SHIPPED names packages: each must be in the development lock (else a typo hides)
    dev = entries(DEV_LOCK)
    for directory, names in lock.NOT_SHIPPED.items():
        for name in names:
            assert name in dev, f"{directory}: {name}"
            assert name not in entries(FUNCTION_LOCKS[directory])
    assert "huggingface-hub" in lock.NOT_SHIPPED["functions/chat"]


def test_the_venv_holds_exactly_the_development_lock():
    # Given the development lock's entries that apply to this machine
    wanted = {
        name: entry.version
        for name, entry in entries(DEV_LOCK).items()
        if entry.marker is None or Marker(entry.marker).evaluate()
    }
    # Then this interpreter's environment has each at that version
    installed = {
        lock.canonical(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }
    mismatched = {
        name: (version, installed.get(name))
        for name, version in wanted.items()
        if installed.get(name) != version
    }
    assert not mismatched, f"(locked, installed): {mismatched}; run scripts/bootstrap.sh"


def test_every_install_requires_hashes():
    # Builds, the development environment and CI install only from locks, hashes required
    build = (ROOT / "scripts" / "lambda_build.py").read_text()
    assert "--require-hashes" in build and "--no-deps" in build
    bootstrap = " ".join(
        (ROOT / "scripts" / "bootstrap.sh").read_text().replace("\\\n", "").split()
    )
    assert "--require-hashes --no-deps -r requirements.lock" in bootstrap
    assert (
        "uv pip sync --quiet --python .venv/bin/python --require-hashes requirements.lock"
        in bootstrap
    )
    tools = " ".join(
        (ROOT / "scripts" / "bootstrap_tools.sh").read_text().replace("\\\n", "").split()
    )
    assert "--require-hashes --no-deps -r requirements-sam.lock" in tools
    for makefile in [ROOT / "layers/shared/Makefile"] + [
        ROOT / directory / "Makefile" for directory in lock.FUNCTIONS
    ]:
        assert "scripts/lambda_build.py" in makefile.read_text(), makefile
    for workflow in (ROOT / ".github" / "workflows").glob("*.yml"):
        for line in workflow.read_text().splitlines():
            if "pip install" in line:
                assert "--require-hashes" in line, f"{workflow.name}: {line.strip()}"


def test_every_action_is_pinned_to_a_full_commit_sha_with_its_version():
    # A tag (@v6) can be moved to other code; a commit SHA cannot
    uses = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+?)(?:\s+#\s*(\S+))?\s*$")
    found = 0
    for workflow in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        for line in workflow.read_text().splitlines():
            match = uses.match(line)
            if not match or match.group(1).startswith("./"):
                continue
            found += 1
            action, _, ref = match.group(1).partition("@")
            assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{workflow.name}: {action}@{ref}"
            assert match.group(2) and re.fullmatch(r"v\d+(\.\d+)*", match.group(2)), (
                f"{workflow.name}: {action} needs its version in a comment"
            )
    assert found >= 3
