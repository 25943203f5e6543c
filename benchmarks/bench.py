"""Benchmarks: cold start with and without SnapStart, warm latency, SQL round trips, artefact
sizes; each against a baseline measured in the same run, in interleaved rounds, reported as CPU
time and wall time with the median of the per-round ratios (a busy machine slows both sides of a
round alike), and checked against the targets of issue 13.

    make bench   (PYTHONPATH=.:layers/shared/python .venv/bin/python -m benchmarks.bench --help)

Cold starts run the `sam build` output (x86_64, built once per run; `--skip-build` uses the
repository and the virtualenv instead) in a fresh `python3.12 -S` with only that output on the
path, the way Lambda does, and measure the process's CPU and wall time from its start to its first
answer. Baseline: a bare FastAPI + Mangum hello from the same layer (the targets), and the same
hello as pip installs FastAPI and Mangum (the virtualenv, untrimmed). The SnapStart rows run the
functions' runtime hooks as Lambda does (tests/support/snapstart_probe.py) and measure the first
request after the restore.

Uses TEST_DATABASE_URL (a server to create a throwaway database on) or an embedded PostgreSQL.
Not part of the test run: the figures are for reading, not for asserting.
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.database import create_fresh_database, drop_database, migrate, server_url
from tests.support.tokens import TEST_SECRET, make_token

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "layers" / "shared" / "python"
PROBE = ROOT / "tests" / "support" / "snapstart_probe.py"

# measure, value, baseline, ratio[, wall, wall baseline, wall ratio, target, met]: a short row
# (value, baseline, ratio) is fine; CPU figures go in the first three.
Row = tuple[str, ...]
HEADERS = (
    "measure",
    "CPU / value",
    "baseline (same run)",
    "ratio",
    "wall",
    "wall baseline",
    "wall ratio",
    "target",
    "met",
)

# Issue 13's targets: ratio of CPU time to the baseline's. Warm requests (issue 25): against
# pg8000.native sending the same statements; the other writes are printed without a target.
TARGETS = {
    "cold start tasks": 1.8,
    "cold start chat": 2.5,
    "SnapStart tasks": 0.1,
    "list 50 tasks": 2.0,
    "create": 2.0,
}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


@dataclass(frozen=True)
class Sample:
    cpu: float
    wall: float


def compared(
    name: str, ours: Sequence[Sample], base: Sequence[Sample], what: str = "", target: str = ""
) -> Row:
    """One row: medians of each side, and the median of the per-round ratios (CPU and wall)."""
    cpu_ratio = statistics.median(o.cpu / b.cpu for o, b in zip(ours, base, strict=True))
    wall_ratio = statistics.median(o.wall / b.wall for o, b in zip(ours, base, strict=True))
    limit = TARGETS.get(target)
    return (
        name,
        fmt_ms(statistics.median(o.cpu for o in ours)),
        fmt_ms(statistics.median(b.cpu for b in base)) + (f" ({what})" if what else ""),
        f"{cpu_ratio:.2f}x",
        fmt_ms(statistics.median(o.wall for o in ours)),
        fmt_ms(statistics.median(b.wall for b in base)),
        f"{wall_ratio:.2f}x",
        f"<= {limit}x" if limit is not None else "",
        ("yes" if cpu_ratio <= limit else "NO") if limit is not None else "",
    )


# --- cold start --------------------------------------------------------------------------------

HELLO_APP = textwrap.dedent(
    """
    from fastapi import FastAPI
    from mangum import Mangum

    app = FastAPI()

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    handler = Mangum(app, lifespan="off")
    """
)


@dataclass(frozen=True)
class Runtime:
    """Where a function's code comes from: a build output (as in Lambda) or the repository."""

    python: list[str]
    paths: dict[str, list[str]]  # function -> PYTHONPATH entries
    modules: dict[str, str]  # function -> module holding `handler`
    label: str


def build_runtime(build: Path | None, hello_dir: Path, hooks_dir: Path) -> Runtime:
    """`python3.12 -S` with only the build output on the path (plus the hello app, and
    snapshot_restore_py as Lambda's runtime provides it); without a build, the repository and
    the virtualenv's site-packages."""
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    # The hello as pip installs FastAPI and Mangum (the virtualenv: same versions, nothing
    # pruned or stripped), beside the hello run from the layer, which gains from the build's
    # trims as the functions do.
    stock_hello = [str(hello_dir), site]
    if build is not None:
        layer = str(build / "SharedLayer" / "python")
        return Runtime(
            python=[sys.executable, "-S", "-P"],
            paths={
                "hello": [str(hello_dir), layer, str(hooks_dir)],
                "stock hello": stock_hello,
                "tasks": [str(build / "TasksFunction"), layer, str(hooks_dir)],
                "chat": [str(build / "ChatFunction"), layer, str(hooks_dir)],
            },
            modules={
                "hello": "hello_app",
                "stock hello": "hello_app",
                "tasks": "app",
                "chat": "app",
            },
            label="sam build output",
        )
    return Runtime(
        python=[sys.executable, "-S", "-P"],
        paths={
            "hello": stock_hello,
            "stock hello": stock_hello,
            "tasks": [str(ROOT), str(SHARED), site],
            "chat": [str(ROOT), str(SHARED), site],
        },
        modules={
            "hello": "hello_app",
            "stock hello": "hello_app",
            "tasks": "functions.tasks.app",
            "chat": "functions.chat.app",
        },
        label="repository + virtualenv",
    )


def run_probe(
    runtime: Runtime, function: str, events: list[dict[str, Any]], *, hooks: bool
) -> dict[str, Any]:
    """One fresh process: import, (SnapStart hooks,) events. Its result, plus `cold`: CPU and
    wall time from the process's start to its first answer."""
    with tempfile.TemporaryDirectory() as folder:
        result_path = Path(folder) / "result.json"
        request = {
            "module": runtime.modules[function],
            "events": events,
            "result_path": str(result_path),
            "hooks": hooks,
        }
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(runtime.paths[function]),
            "POWERTOOLS_SERVICE_NAME": function,
        }
        started = time.time()
        completed = subprocess.run(
            [*runtime.python, str(PROBE)],
            input=json.dumps(request),
            env=env,
            capture_output=True,
            text=True,
            cwd=folder,
            timeout=300,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{function} probe failed: {completed.stderr[-2000:]}")
        result = json.loads(result_path.read_text())
    first = result["responses"][0]
    if first["status"] >= 300:
        raise RuntimeError(f"{function}: first answer {first['status']}: {first['body'][:300]}")
    result["cold"] = Sample(first["process_cpu_seconds"], first["answered_at"] - started)
    result["first"] = Sample(first["cpu_seconds"], first["wall_seconds"])
    return result


def cold_start_rows(runtime: Runtime, token: str, fake: Any, rounds: int) -> list[Row]:
    from tests.fakes.cohere_server import text_reply, tool_calls_reply
    from tests.support.lambda_events import http_api_event

    auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    health = [http_api_event("GET", "/api/health")]
    listing = [http_api_event("GET", "/api/tasks", headers=auth)]
    turn = [
        http_api_event(
            "POST", "/api/bench-user/chat", headers=auth, body='{"message": "What is pending?"}'
        )
    ]

    def chat(hooks: bool) -> dict[str, Any]:
        fake.script(tool_calls_reply(("list_tasks", {"status": "pending"})), text_reply("None."))
        return run_probe(runtime, "chat", turn, hooks=hooks)

    runs: dict[str, list[dict[str, Any]]] = {
        key: [] for key in ("hello", "stock hello", "tasks", "chat", "tasks_snap", "chat_snap")
    }
    for index in range(rounds):
        print(f"  cold start round {index + 1}/{rounds}", file=sys.stderr, flush=True)
        runs["hello"].append(run_probe(runtime, "hello", health, hooks=False))
        runs["stock hello"].append(run_probe(runtime, "stock hello", health, hooks=False))
        runs["tasks"].append(run_probe(runtime, "tasks", listing, hooks=False))
        runs["chat"].append(chat(hooks=False))
        runs["tasks_snap"].append(run_probe(runtime, "tasks", listing, hooks=True))
        runs["chat_snap"].append(chat(hooks=True))

    hello = [run["cold"] for run in runs["hello"]]
    hello_import = [
        Sample(run["init_cpu_seconds"], run["init_cpu_seconds"]) for run in runs["hello"]
    ]
    what = "FastAPI + Mangum hello"
    rows: list[Row] = [(f"cold starts: {runtime.label}, {rounds} rounds",)]
    rows.append(
        compared(
            "cold start tasks: start + import + first request (GET 50)",
            [run["cold"] for run in runs["tasks"]],
            hello,
            what,
            "cold start tasks",
        )
    )
    rows.append(
        compared(
            "cold start chat: start + import + first turn (1 tool call)",
            [run["cold"] for run in runs["chat"]],
            hello,
            what,
            "cold start chat",
        )
    )
    stock = [run["cold"] for run in runs["stock hello"]]
    for name, what_ran in (("tasks", "first request (GET 50)"), ("chat", "first turn")):
        row = compared(
            f"  {name}: start + import + {what_ran}",
            [run["cold"] for run in runs[name]],
            stock,
            "hello as pip installs FastAPI + Mangum",
        )
        rows.append(row[:7])
    for name in ("tasks", "chat"):
        imports = [Sample(run["init_cpu_seconds"], run["init_cpu_seconds"]) for run in runs[name]]
        row = compared(f"  {name}: import of the handler module", imports, hello_import, "hello's")
        rows.append(row[:4])
    rows.append(
        compared(
            "SnapStart tasks: first request after restore",
            [run["first"] for run in runs["tasks_snap"]],
            hello,
            f"{what} cold start",
            "SnapStart tasks",
        )
    )
    rows.append(
        compared(
            "SnapStart chat: first turn after restore",
            [run["first"] for run in runs["chat_snap"]],
            hello,
            f"{what} cold start",
        )
    )
    for name in ("tasks_snap", "chat_snap"):
        hooks = statistics.median(run["hooks_cpu_seconds"] for run in runs[name])
        restore = statistics.median(run["restore_cpu_seconds"] for run in runs[name])
        sockets = max(len(run["sockets_at_snapshot"]) for run in runs[name])
        warmed = len(runs[name][0]["warm_up_requests"] or [])
        rows.append(
            (
                f"  {name.split('_')[0]}: before-snapshot hooks / after-restore hooks (CPU)",
                f"{fmt_ms(hooks)} / {fmt_ms(restore)}",
                f"{warmed} warm-up requests, {sockets} sockets left",
            )
        )
    loaded = any("cohere" in run["modules_at_snapshot"] for run in runs["tasks"])
    rows.append(("tasks function imports cohere", str(loaded), "False"))
    return rows


# --- warm latency and SQL counting -----------------------------------------------------------


class CountingSocket:
    """pg8000 flushes its socket once per request/response exchange: one flush, one round trip."""

    def __init__(self, sock: Any, recorder: "StatementRecorder") -> None:
        self._sock = sock
        self._recorder = recorder

    def flush(self) -> None:
        self._recorder.round_trips += 1
        self._sock.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class StatementRecorder:
    """Counts statements (SQLAlchemy) and round trips (pg8000 socket flushes) per request, while
    `measure` runs: the timed calls run without the listeners and the counting socket."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []
        self.round_trips = 0

    def _on_statement(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        self.statements.append((statement, params))

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection._sock = CountingSocket(dbapi_connection._sock, self)

    @contextmanager
    def measure(self) -> Iterator[dict[str, Any]]:
        from sqlalchemy import event

        listeners = (("before_cursor_execute", self._on_statement), ("connect", self._on_connect))
        for name, listener in listeners:
            event.listen(self.engine, name, listener)
        self.engine.dispose()  # the next connection gets the flush counter
        self.statements.clear()
        self.round_trips = 0
        result: dict[str, Any] = {}
        try:
            yield result
        finally:
            # Counted before the dispose: closing sends Terminate, a flush but no round trip.
            result["statements"] = list(self.statements)
            result["round_trips"] = self.round_trips
            for name, listener in listeners:
                event.remove(self.engine, name, listener)
            self.engine.dispose()  # and the one after it does not


def time_calls(call: Callable[[], Any], iterations: int) -> Sample:
    """CPU and wall time of one call, averaged over `iterations` calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(iterations):
        call()
    return Sample(
        (time.process_time() - cpu) / iterations, (time.perf_counter() - wall) / iterations
    )


def interleaved(
    ours: Callable[[], Any], base: Callable[[], Any], rounds: int, per_round: int
) -> tuple[list[Sample], list[Sample]]:
    """`rounds` rounds, each timing `per_round` calls of ours and then of the baseline."""
    ours_samples, base_samples = interleaved_sides([ours, base], rounds, per_round)
    return ours_samples, base_samples


def interleaved_sides(
    sides: Sequence[Callable[[], Any]], rounds: int, per_round: int
) -> list[list[Sample]]:
    """`rounds` rounds, each timing `per_round` calls of every side in turn: each side's
    samples, round by round (so per-round ratios compare calls made moments apart)."""
    samples: list[list[Sample]] = [[] for _ in sides]
    for _ in range(rounds):
        for side, collected in zip(sides, samples, strict=True):
            collected.append(time_calls(side, per_round))
    return samples


def native_connection(database_url: str, *, stock_adapters: bool = False) -> Any:
    """A plain `pg8000.native.Connection` to the same database, with the connection settings
    the engine uses (TCP host and port, TLS context, `TimeZone=UTC` startup parameter).

    Unless `stock_adapters`, timestamptz values are parsed with `datetime.fromisoformat` (the
    project's `parse_timestamptz`, registered through pg8000's public `register_in_adapter`):
    pg8000's own strptime-based parser costs ~10 us a value, about 2 ms of a 50-task page,
    which would flatter the handler by a parser it does not use."""
    import pg8000.native

    from todo_backend.core.db import parse_database_url
    from todo_backend.core.pg_wire import TIMESTAMPTZ_OID, parse_timestamptz

    target = parse_database_url(database_url)
    args = dict(target.connect_args)
    args["startup_params"] = {**(args.get("startup_params") or {}), "TimeZone": "UTC"}
    connection = pg8000.native.Connection(
        user=target.url.username or "postgres",
        password=target.url.password,
        host=target.url.host or "localhost",
        port=target.url.port or 5432,
        database=target.url.database,
        **args,
    )
    if not stock_adapters:
        connection.register_in_adapter(TIMESTAMPTZ_OID, parse_timestamptz)
    return connection


def named_placeholders(statement: str) -> tuple[str, list[str]]:
    """A statement in pg8000's `format` paramstyle (`%s`, and `%%` for a literal `%`:
    SQLAlchemy escapes every literal `%`, in string literals too) with `:p1, :p2, ...`
    placeholders, as an application written for `pg8000.native` holds it; and those names."""
    parts: list[str] = []
    names: list[str] = []
    index = 0
    while index < len(statement):
        pair = statement[index : index + 2]
        if pair == "%%":
            parts.append("%")
        elif pair == "%s":
            names.append(f"p{len(names) + 1}")
            parts.append(f":{names[-1]}")
        else:
            parts.append(statement[index])
            index += 1
            continue
        index += 2
    return "".join(parts), names


def native_replayer(connection: Any, statements: list[tuple[str, Any]]) -> Callable[[], None]:
    """The statements through stock `pg8000.native.Connection.run(sql, **params)`, their SQL
    converted once to `:name` placeholders. `run` rewrites them to `$n` on every call and sends
    the statement unnamed as stock pg8000 does: Parse, Describe, then Bind + Execute, a round
    trip each."""
    converted = []
    for sql, params in statements:
        text, names = named_placeholders(sql)
        converted.append((text, dict(zip(names, params or (), strict=True))))

    def replay() -> None:
        for text, params in converted:
            connection.run(text, **params)

    return replay


def unnamed_replayer(connection: Any, statements: list[tuple[str, Any]]) -> Callable[[], None]:
    """The statements through stock pg8000's lowest call for an unnamed statement,
    `execute_unnamed` (`$n` SQL rewritten once, not per call; still three round trips): the
    driver's own work with nothing above it, a stricter baseline than `run()`."""
    from todo_backend.core.pg_wire import numbered_placeholders

    converted = [(numbered_placeholders(sql), tuple(params or ())) for sql, params in statements]

    def replay() -> None:
        for sql, params in converted:
            connection.execute_unnamed(sql, params)

    return replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31, help="interleaved rounds (warm)")
    parser.add_argument("--per-round", type=int, default=10, help="calls per side per round")
    parser.add_argument("--cold-rounds", type=int, default=15, help="rounds of cold processes")
    parser.add_argument(
        "--skip-build",
        action="store_true",
        help="no sam build: cold starts from the repository, no sizes",
    )
    parser.add_argument(
        "--only",
        choices=["relay", "warm"],
        help="run one section (its rows only, no build, no cold starts)",
    )
    args = parser.parse_args()

    # The table is the output: keep the functions' JSON logs and EMF metrics off stdout.
    os.environ.update(POWERTOOLS_LOG_LEVEL="WARNING")
    server = server_url()
    database_url = create_fresh_database(server, prefix="todo_bench")
    rows: list[Row] = []
    try:
        migrate(database_url)
        os.environ.update(DATABASE_URL=database_url, BETTER_AUTH_SECRET=TEST_SECRET)
        os.environ.pop("CO_API_KEY", None)
        token = make_token("bench-user", expires_in=3600)
        with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # EMF metrics
            if args.only is None:
                build = None if args.skip_build else sam_build(Path(folder) / "build")
                print("cold starts …", file=sys.stderr, flush=True)
                rows += cold_rows(build, Path(folder), token, args.cold_rounds)
                print("warm latency …", file=sys.stderr, flush=True)
                rows += warm_rows(database_url, token, args.rounds, args.per_round)
                if not args.skip_build:
                    rows += size_rows(build)
            if args.only == "warm":
                rows += warm_rows(database_url, token, args.rounds, args.per_round)
            else:
                rows += relay_section()
    finally:
        from todo_backend.core.db import get_database

        if get_database.cache_info().currsize:
            get_database().engine.dispose()
        drop_database(server, database_url)
    print_table(rows)


def relay_section() -> list[Row]:
    """The outbox relay clearing a backlog (benchmarks/relay_bench.py)."""
    from benchmarks import relay_bench

    print("relay backlog …", file=sys.stderr, flush=True)
    return relay_bench.relay_rows()


def sam_build(directory: Path) -> Path | None:
    """scripts/sam_build.sh x86_64 into `directory`; None (with a note) when it cannot run."""
    print("sam build (x86_64) …", file=sys.stderr, flush=True)
    result = subprocess.run(
        [str(ROOT / "scripts" / "sam_build.sh"), "x86_64", "--build-dir", str(directory)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if result.returncode != 0:
        print(f"sam build failed, using the repository: {result.stderr[-500:]}", file=sys.stderr)
        return None
    return directory


def cold_rows(build: Path | None, folder: Path, token: str, rounds: int) -> list[Row]:
    import snapshot_restore_py

    from tests.fakes.cohere_server import FakeCohere

    hello_dir, hooks_dir = folder / "hello", folder / "runtime"
    hello_dir.mkdir()
    hooks_dir.mkdir()
    (hello_dir / "hello_app.py").write_text(HELLO_APP)
    shutil.copy(snapshot_restore_py.__file__, hooks_dir)  # as Lambda's runtime provides it
    runtime = build_runtime(build, hello_dir, hooks_dir)
    with FakeCohere(strict=False) as fake:
        os.environ.update(CO_API_KEY="bench", CO_API_URL=fake.base_url)
        try:
            return cold_start_rows(runtime, token, fake, rounds)
        finally:
            os.environ.pop("CO_API_KEY", None)
            os.environ.pop("CO_API_URL", None)


def warm_rows(database_url: str, token: str, rounds: int, per_round: int) -> list[Row]:
    import cohere

    from functions.tasks.app import handler as tasks_handler
    from tests.fakes.cohere_server import FakeCohere, text_reply, tool_calls_reply
    from tests.support.lambda_events import LambdaContext, http_api_event
    from todo_backend.chat.assistant import get_cohere_client
    from todo_backend.core.db import get_database
    from todo_backend.core.settings import get_settings

    auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    recorder = StatementRecorder(get_database().engine)

    # Lambda hands the handler a parsed event: building one (uuids, clock, query string) is the
    # harness's work, not the handler's, so a repeated request reuses its event and context.
    context = LambdaContext()
    events: dict[str, dict[str, Any]] = {}

    def call(handler: Any, method: str, path: str, body: Any = None, query: Any = None) -> dict:
        text = None if body is None else json.dumps(body)
        key = json.dumps([method, path, text, query])
        event = events.get(key)
        if event is None:
            event = events[key] = http_api_event(method, path, headers=auth, query=query, body=text)
        response = handler(event, context)
        assert response["statusCode"] < 300, response
        return response

    def create(title: str) -> int:
        return json.loads(call(tasks_handler, "POST", "/api/tasks", {"title": title})["body"])["id"]

    for index in range(50):
        call(tasks_handler, "POST", "/api/tasks", {"title": f"Task {index}", "tags": ["bench"]})
    task_id = create("target")
    delete_ids = iter([create(f"d{i}") for i in range(rounds * per_round + 3)])
    # Completing a recurring task also creates its next occurrence; each call completes the
    # occurrence the previous call created.
    recurring = {
        "id": json.loads(
            call(
                tasks_handler,
                "POST",
                "/api/tasks",
                {"title": "daily", "due_date": "2030-01-01", "recurrence": "FREQ=DAILY"},
            )["body"]
        )["id"]
    }

    def complete_recurring() -> dict:
        path = f"/api/tasks/{recurring['id']}/complete"
        response = call(tasks_handler, "PATCH", path, {"completed": True})
        recurring["id"] = json.loads(response["body"])["next_task_id"]
        return response

    scenarios: list[tuple[str, Callable[[], Any]]] = [
        ("list 50 tasks", lambda: call(tasks_handler, "GET", "/api/tasks", query={"tag": "bench"})),
        ("create", lambda: call(tasks_handler, "POST", "/api/tasks", {"title": "New"})),
        (
            "update (PATCH)",
            lambda: call(tasks_handler, "PATCH", f"/api/tasks/{task_id}", {"priority": "high"}),
        ),
        ("toggle", lambda: call(tasks_handler, "PATCH", f"/api/tasks/{task_id}/complete")),
        ("delete", lambda: call(tasks_handler, "DELETE", f"/api/tasks/{next(delete_ids)}")),
        ("complete a recurring task", complete_recurring),
    ]
    native = native_connection(database_url)
    stock = native_connection(database_url, stock_adapters=True)
    base_what = "same SQL, pg8000.native run()"
    rows: list[Row] = [(f"warm: {rounds} rounds x {per_round} calls per side",)]
    for name, scenario in scenarios:
        with recorder.measure() as counted:
            scenario()
        scenario()  # warm, on a connection without the counter
        # (The recorded DELETE names one id: the baseline's repeats delete nothing, which costs
        # the same statement and round trip.)
        statements = counted["statements"]
        sides = [
            scenario,
            native_replayer(native, statements),
            unnamed_replayer(native, statements),
        ]
        if name == "list 50 tasks":
            sides.append(native_replayer(stock, statements))
        ours, base, unnamed, *stock_base = interleaved_sides(sides, rounds, per_round)
        rows.append(compared(f"warm {name}", ours, base, base_what, name))
        strict = "same SQL, pg8000 execute_unnamed, $n SQL"
        rows.append(compared(f"  {name}", ours, unnamed, strict)[:7])
        if stock_base:
            pg8000s = "same SQL, pg8000.native run(), pg8000's timestamptz parser"
            rows.append(compared(f"  {name}", ours, stock_base[0], pg8000s)[:7])
        rows.append(
            (
                f"  {name}: SQL statements / round trips",
                f"{len(statements)} / {counted['round_trips']}",
            )
        )

    # Chat: one tool call (list_tasks), then the final answer, against an instant fake.
    with FakeCohere(strict=False) as fake:
        os.environ.update(CO_API_KEY="bench", CO_API_URL=fake.base_url)
        get_settings.cache_clear()
        get_cohere_client.cache_clear()
        from functions.chat.app import handler as chat_handler

        def chat_turn() -> Any:
            fake.script(
                tool_calls_reply(("list_tasks", {"status": "pending", "limit": 5})),
                text_reply("You have pending tasks."),
            )
            return call(
                chat_handler, "POST", "/api/bench-user/chat", {"message": "What's pending?"}
            )

        client = cohere.ClientV2(api_key="bench", base_url=fake.base_url, max_retries=0)

        def bare_round_trips() -> None:
            fake.script(tool_calls_reply(("list_tasks", {})), text_reply("ok"))
            for _ in range(2):
                client.chat(model="m", messages=[{"role": "user", "content": "hi"}])

        with recorder.measure() as counted:
            chat_turn()
        chat_turn()
        replay = native_replayer(native, counted["statements"])
        ours, base = interleaved(
            chat_turn,
            lambda: (bare_round_trips(), replay()),
            rounds,
            max(2, per_round // 4),
        )
        rows.append(
            compared("warm chat turn, 1 tool call", ours, base, "2 bare SDK calls + native SQL")
        )
        rows.append(
            (
                "  chat turn: SQL statements / round trips",
                f"{len(counted['statements'])} / {counted['round_trips']}",
            )
        )
        os.environ.pop("CO_API_KEY", None)
        os.environ.pop("CO_API_URL", None)
    native.close()
    stock.close()
    return rows


def size_rows(build: Path | None = None) -> list[Row]:
    """Unzipped size of each function with the layer against the budgets
    (benchmarks/build_size.py), from `build` or an x86_64 build of its own."""
    from benchmarks import build_size

    if build is not None:
        return build_size.rows(build_size.measure(build))
    with tempfile.TemporaryDirectory() as folder:
        try:
            build_size.build("x86_64", Path(folder) / "build")
        except (OSError, subprocess.CalledProcessError):
            return [("artefact sizes", "skipped: sam build failed", "", "")]
        return build_size.rows(build_size.measure(Path(folder) / "build"))


def print_table(rows: list[Row]) -> None:
    """Rows may be shorter than the headers (the missing cells are blank); a one-cell row is a
    section title."""
    width_of = len(HEADERS)
    padded = [tuple(row) + ("",) * (width_of - len(row)) for row in rows]
    cells = [row for row in padded if any(row[1:])]
    widths = [max(len(str(row[i])) for row in [HEADERS, *cells]) for i in range(width_of)]
    line = "  ".join("-" * width for width in widths)
    print(line)
    print("  ".join(str(h).ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip())
    print(line)
    for row in padded:
        if not any(row[1:]):
            print(f"[{row[0]}]")
            continue
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(line)
    missed = [row[0].strip() for row in padded if row[8] == "NO"]
    print("targets: " + ("all met" if not missed else "missed: " + "; ".join(missed)))


if __name__ == "__main__":
    main()
