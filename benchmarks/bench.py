"""Benchmarks: cold start, warm latency, SQL round trips, artefact sizes; each against a baseline
measured in the same run, printed as a ratio.

    make bench   (PYTHONPATH=.:layers/shared/python .venv/bin/python -m benchmarks.bench --help)

Uses TEST_DATABASE_URL (a server to create a throwaway database on) or an embedded PostgreSQL.
Not part of the test run: the figures are for reading, not for asserting.
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.database import create_fresh_database, drop_database, migrate, server_url
from tests.support.tokens import TEST_SECRET, make_token

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "layers" / "shared" / "python"

Row = tuple[str, str, str, str]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# --- cold start ------------------------------------------------------------------------------

COLD_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    started = time.perf_counter()
    import importlib
    module = importlib.import_module(sys.argv[1])
    imported = time.perf_counter()
    from tests.support.lambda_events import LambdaContext, http_api_event
    event = http_api_event("GET", sys.argv[2], headers={"authorization": "Bearer " + sys.argv[3]})
    response = module.handler(event, LambdaContext())
    answered = time.perf_counter()
    assert response["statusCode"] == 200, response
    print(json.dumps({"import": imported - started, "first": answered - started,
                      "cohere_loaded": "cohere" in sys.modules}))
    """
)

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


def cold_start(module: str, path: str, token: str, runs: int, extra_path: str = "") -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [extra_path, str(ROOT), str(SHARED)])),
    }
    imports, firsts, cohere_loaded = [], [], False
    for _ in range(runs):
        output = (
            subprocess.run(
                [sys.executable, "-c", COLD_SCRIPT, module, path, token],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        figures = json.loads(output)
        imports.append(figures["import"])
        firsts.append(figures["first"])
        cohere_loaded = cohere_loaded or figures["cohere_loaded"]
    return {
        "import": statistics.median(imports),
        "first": statistics.median(firsts),
        "cohere_loaded": cohere_loaded,
    }


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
    """Counts statements (SQLAlchemy) and round trips (pg8000 socket flushes) per request."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.statements: list[tuple[str, Any]] = []
        self.round_trips = 0
        event.listen(engine, "before_cursor_execute", self._on_statement)
        event.listen(engine, "connect", self._on_connect)
        engine.dispose()  # new connections get the flush counter

    def _on_statement(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        self.statements.append((statement, params))

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection._sock = CountingSocket(dbapi_connection._sock, self)

    @contextmanager
    def measure(self) -> Iterator[dict[str, Any]]:
        self.statements.clear()
        self.round_trips = 0
        result: dict[str, Any] = {}
        yield result
        result["statements"] = list(self.statements)
        result["round_trips"] = self.round_trips


def time_calls(call: Callable[[], Any], iterations: int) -> list[float]:
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def raw_connection(database_url: str) -> Any:
    import pg8000.dbapi

    from todo_backend.core.db import parse_database_url

    target = parse_database_url(database_url)
    connection = pg8000.dbapi.connect(
        user=target.url.username or "postgres",
        password=target.url.password,
        host=target.url.host or "localhost",
        port=target.url.port or 5432,
        database=target.url.database,
        **{k: v for k, v in target.connect_args.items() if k != "startup_params"},
    )
    connection.autocommit = True
    return connection


def replay(connection: Any, statements: list[tuple[str, Any]]) -> None:
    cursor = connection.cursor()
    for statement, params in statements:
        cursor.execute(statement, params)
        if cursor.description:
            cursor.fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--skip-build", action="store_true", help="skip the sam build sizes")
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
        with contextlib.redirect_stdout(io.StringIO()):  # EMF metrics are printed
            print("cold starts …", file=sys.stderr, flush=True)
            rows += cold_start_rows(token, args.cold_runs)
            print("warm latency …", file=sys.stderr, flush=True)
            rows += warm_rows(database_url, token, args.iterations)
            if not args.skip_build:
                print("sam build for sizes …", file=sys.stderr, flush=True)
                rows += size_rows()
    finally:
        from todo_backend.core.db import get_database

        if get_database.cache_info().currsize:
            get_database().engine.dispose()
        drop_database(server, database_url)
    print_table(rows)


def cold_start_rows(token: str, runs: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "hello_app.py").write_text(HELLO_APP)
        base = cold_start("hello_app", "/api/health", token, runs, extra_path=folder)
    tasks = cold_start("functions.tasks.app", "/api/tasks", token, runs)
    chat = cold_start("functions.chat.app", "/api/bench-user/conversations", token, runs)
    rows: list[Row] = []
    for name, figures in (("tasks", tasks), ("chat", chat)):
        rows.append(
            (
                f"cold start {name}: import",
                fmt_ms(figures["import"]),
                fmt_ms(base["import"]),
                f"{figures['import'] / base['import']:.2f}x",
            )
        )
        rows.append(
            (
                f"cold start {name}: import + first event",
                fmt_ms(figures["first"]),
                fmt_ms(base["first"]),
                f"{figures['first'] / base['first']:.2f}x",
            )
        )
    rows.append(("tasks function imports cohere", str(tasks["cohere_loaded"]), "False", ""))
    return rows


def warm_rows(database_url: str, token: str, iterations: int) -> list[Row]:
    import cohere

    from functions.tasks.app import handler as tasks_handler
    from tests.fakes.cohere_server import FakeCohere, text_reply, tool_calls_reply
    from tests.support.lambda_events import LambdaContext, http_api_event
    from todo_backend.chat.assistant import get_cohere_client
    from todo_backend.core.db import get_database
    from todo_backend.core.settings import get_settings

    auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    recorder = StatementRecorder(get_database().engine)

    def call(handler: Any, method: str, path: str, body: Any = None, query: Any = None) -> dict:
        event = http_api_event(
            method, path, headers=auth, query=query, body=None if body is None else json.dumps(body)
        )
        response = handler(event, LambdaContext())
        assert response["statusCode"] < 300, response
        return response

    for index in range(50):
        call(tasks_handler, "POST", "/api/tasks", {"title": f"Task {index}", "tags": ["bench"]})
    task_id = json.loads(call(tasks_handler, "POST", "/api/tasks", {"title": "target"})["body"])[
        "id"
    ]
    delete_ids = iter(
        [
            json.loads(call(tasks_handler, "POST", "/api/tasks", {"title": f"d{i}"})["body"])["id"]
            for i in range(iterations + 3)
        ]
    )
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
    connection = raw_connection(database_url)
    rows: list[Row] = []
    for name, scenario in scenarios:
        scenario()  # warm
        with recorder.measure() as counted:
            scenario()
        samples = time_calls(scenario, iterations)
        floor = time_calls(lambda: replay(connection, counted["statements"]), iterations)
        rows += latency_rows(name, samples, floor, "same SQL via pg8000")
        rows.append(
            (
                f"  {name}: SQL statements / round trips",
                f"{len(counted['statements'])} / {counted['round_trips']}",
                "",
                "",
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

        chat_turn()
        with recorder.measure() as counted:
            chat_turn()
        chat_iterations = max(20, iterations // 4)
        samples = time_calls(chat_turn, chat_iterations)
        floor = time_calls(
            lambda: (bare_round_trips(), replay(connection, counted["statements"])),
            chat_iterations,
        )
        rows += latency_rows("chat turn, 1 tool call", samples, floor, "2 bare SDK calls + SQL")
        rows.append(
            (
                "  chat turn: SQL statements / round trips",
                f"{len(counted['statements'])} / {counted['round_trips']}",
                "",
                "",
            )
        )
    connection.close()
    return rows


def latency_rows(name: str, samples: list[float], floor: list[float], what: str) -> list[Row]:
    median, p95 = statistics.median(samples), percentile(samples, 0.95)
    floor_median, floor_p95 = statistics.median(floor), percentile(floor, 0.95)
    return [
        (
            f"warm {name}: median",
            fmt_ms(median),
            f"{fmt_ms(floor_median)} ({what})",
            f"{median / floor_median:.2f}x",
        ),
        (f"warm {name}: p95", fmt_ms(p95), fmt_ms(floor_p95), f"{p95 / floor_p95:.2f}x"),
    ]


def size_rows() -> list[Row]:
    """Unzipped function + layer sizes of an x86_64 build against the budgets
    (benchmarks/build_size.py)."""
    from benchmarks import build_size

    with tempfile.TemporaryDirectory() as folder:
        try:
            build_size.build("x86_64", Path(folder) / "build")
        except (OSError, subprocess.CalledProcessError):
            return [("artefact sizes", "skipped: sam build failed", "", "")]
        return build_size.rows(build_size.measure(Path(folder) / "build"))


def print_table(rows: list[Row]) -> None:
    headers = ("measure", "value", "baseline (same run)", "ratio")
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(4)]
    line = "  ".join("-" * width for width in widths)
    print(line)
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(line)


if __name__ == "__main__":
    main()
