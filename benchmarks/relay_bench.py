"""The relay's rows of `make bench`: a backlog of 10,000 task events of 2,000 tasks (five each),
loaded with `INSERT … SELECT generate_series`, relayed by scheduled runs exactly as the reminders
function calls the relay, to an EventBridge stand-in on a loopback port (every entry accepted,
through the real AWS SDK and HTTP): events per second, SQL statements per 100 events, and how many
runs the backlog takes (the function runs once a minute with a 60 s timeout).

    PYTHONPATH=.:layers/shared/python .venv/bin/python -m benchmarks.bench --only relay
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

BACKLOG_TASKS = 2_000
EVENTS_PER_TASK = 5
BUS = "bench-bus"

Row = tuple[str, ...]
ROOT = Path(__file__).resolve().parents[1]


def load_backlog(database: Any, tasks: int, per_task: int, *, stale: bool = False) -> None:
    """`tasks` new tasks and `per_task` unrelayed events of each, interleaved (event k of every
    task before event k+1 of any), as a burst of edits across many tasks leaves them. `stale`:
    the outbox's statistics are from before the backlog (analyzed while nothing was pending,
    autovacuum off), as after a burst that autovacuum has not caught up with yet."""
    with database.engine.connect() as connection:

        def run(sql: str, **parameters: Any) -> Any:
            return connection.execute(text(sql), parameters)

        run("UPDATE task_events SET relayed_at = now() WHERE relayed_at IS NULL")
        first_task = (
            run(
                "INSERT INTO tasks (user_id, title) SELECT 'relay-bench', 'task ' || n "
                "FROM generate_series(1, :tasks) AS n RETURNING id",
                tasks=tasks,
            )
            .scalars()
            .all()[0]
        )
        first_event = run("SELECT coalesce(max(id), 0) + 1 FROM task_events").scalar()
        # (the column is new in migration 0007: without it, this measures the relay before it)
        has_sequence = run(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'task_events' AND column_name = 'sequence'"
        ).scalar()
        columns, values = ("task, sequence", ", k") if has_sequence else ("task", "")
        run(
            f"INSERT INTO task_events (user_id, task_id, detail_type, {columns}, relayed_at) "
            "SELECT t.user_id, t.id, 'Task Updated', jsonb_build_object('id', t.id, "
            f"'title', t.title, 'description', repeat('x', 200)){values}, now() "
            "FROM generate_series(1, :per_task) AS k, "
            "(SELECT * FROM tasks WHERE id >= :first_task ORDER BY id) AS t ORDER BY k, t.id",
            per_task=per_task,
            first_task=first_task,
        )
        run(f"ALTER TABLE task_events SET (autovacuum_enabled = {'off' if stale else 'on'})")
        if stale:
            run("ANALYZE task_events")
        run("UPDATE task_events SET relayed_at = NULL WHERE id >= :first", first=first_event)
        if not stale:
            run("ANALYZE task_events")


def unrelayed(database: Any) -> int:
    with database.engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM task_events WHERE relayed_at IS NULL")
            ).scalar()
        )


# The stand-in runs in a process of its own, so that its CPU is not counted as the relay's.
STAND_IN = """
import sys
from tests.support.fake_eventbridge import fake_eventbridge
with fake_eventbridge() as fake:
    print(fake.base_url, flush=True)
    sys.stdin.read()
    print(sum(1 for target, _ in fake.calls if target == "PutEvents"), flush=True)
"""


@contextmanager
def eventbridge_stand_in() -> Iterator[tuple[str, list[int]]]:
    """The stand-in's URL, and (once the block has ended) how many PutEvents calls it took."""
    child = subprocess.Popen(
        [sys.executable, "-c", STAND_IN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert child.stdin is not None and child.stdout is not None
    calls: list[int] = []
    try:
        yield child.stdout.readline().strip(), calls
    finally:
        child.stdin.close()
        calls.append(int(child.stdout.readline() or 0))
        child.wait(timeout=30)


def relay_rows() -> list[Row]:
    """A backlog with fresh statistics, and one with statistics from before it."""
    return scenario(stale=False) + scenario(stale=True)


def scenario(*, stale: bool) -> list[Row]:
    import boto3

    from todo_backend.core.db import get_database
    from todo_backend.events.relay import relay_pending_events

    database = get_database()
    load_backlog(database, BACKLOG_TASKS, EVENTS_PER_TASK, stale=stale)
    backlog = unrelayed(database)
    statements: list[str] = []
    sql_seconds: list[float] = []
    started_at: list[float] = []

    def count(*args: Any) -> None:
        statements.append(args[2])
        started_at.append(time.perf_counter())

    def timed(*args: Any) -> None:
        sql_seconds.append(time.perf_counter() - started_at.pop())

    rows: list[Row] = []
    with eventbridge_stand_in() as (base_url, calls):
        client = boto3.client(
            "events",
            endpoint_url=base_url,
            region_name="eu-west-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        runs: list[tuple[int, float]] = []
        cpu_seconds: list[float] = []
        while unrelayed(database) and len(runs) < 20:
            event.listen(database.engine, "before_cursor_execute", count)
            event.listen(database.engine, "after_cursor_execute", timed)
            started, cpu = time.perf_counter(), time.process_time()
            try:
                report = relay_pending_events(database, BUS, client)
            finally:
                elapsed = time.perf_counter() - started
                cpu_seconds.append(time.process_time() - cpu)
                event.remove(database.engine, "before_cursor_execute", count)
                event.remove(database.engine, "after_cursor_execute", timed)
            runs.append((report.published, elapsed))
    published = sum(n for n, _ in runs)
    seconds = sum(s for _, s in runs)
    first_published, first_seconds = runs[0] if runs else (0, 0.0)
    statistics = "statistics from before the backlog" if stale else "fresh statistics"
    rows.append((f"relay: {backlog:,}-event backlog of {BACKLOG_TASKS:,} tasks, {statistics}",))
    rows.append(
        (
            "  relay: events per second",
            f"{published / seconds:,.0f}" if seconds else "-",
            f"{published:,} events in {seconds:.2f} s",
        )
    )
    rows.append(
        (
            "  relay: SQL statements per 100 events",
            f"{100 * len(statements) / max(published, 1):.2f}",
            f"{len(statements)} statements ({sum(sql_seconds):.2f} s), {calls[0]} PutEvents calls",
        )
    )
    rows.append(
        (
            "  relay: CPU seconds per 1,000 events",
            f"{1000 * sum(cpu_seconds) / max(published, 1):.2f}",
            "this process's CPU (the stand-in runs in another)",
        )
    )
    rows.append(
        (
            "  relay: first run clears",
            f"{first_published:,} of {backlog:,} in {first_seconds:.2f} s",
            f"{len(runs)} runs for the backlog",
            "",
            "",
            "",
            "",
            "all in 1 run",
            "yes" if first_published >= backlog else "NO",
        )
    )
    return rows
