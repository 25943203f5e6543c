"""SnapStart: the runtime hooks each function registers, run in a fresh process the way Lambda
runs them (tests/support/snapstart_probe.py): warm-up before the snapshot with no socket left
open, requests served right after the restore, the cold-start metric emitted once."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.fakes.cohere_server import FakeCohere, text_reply, tool_calls_reply
from tests.support.lambda_events import http_api_event
from tests.support.tokens import make_token, new_user_id
from todo_backend.core.snapstart import WARM_UP_USER

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "support" / "snapstart_probe.py"


def run_probe(
    tmp_path: Path, module: str, events: list[dict[str, Any]], **env: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The probe's result and the JSON lines the function printed (logs, EMF metrics)."""
    result_path = tmp_path / "result.json"
    request = {"module": module, "events": events, "result_path": str(result_path)}
    completed = subprocess.run(
        [sys.executable, str(PROBE)],
        input=json.dumps(request),
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "shared" / "python")]),
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "POWERTOOLS_SERVICE_NAME": module.split(".")[1],
            **env,
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return json.loads(result_path.read_text()), lines


def emf_values(lines: list[dict[str, Any]], metric: str) -> list[float]:
    """Every value of `metric` in the EMF lines (each holds a list of values)."""
    return [value for line in lines if "_aws" in line for value in line.get(metric, [])]


def access_logs(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("message") == "request"]


def bearer(user_id: str) -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(user_id)}", "content-type": "application/json"}


def test_tasks_function_is_warm_and_closed_at_snapshot_and_serves_after_restore(
    tmp_path: Path, database: Any
):
    # Given the tasks function, and the requests a user sends right after a restore
    user = new_user_id()
    events = [
        http_api_event("GET", "/api/tasks", headers=bearer(user)),
        http_api_event("POST", "/api/tasks", headers=bearer(user), body='{"title": "After"}'),
        http_api_event("GET", "/api/tasks", headers=bearer(user)),
    ]

    # When Lambda initialises it, runs the before-snapshot hooks, restores, and invokes it
    result, lines = run_probe(tmp_path, "functions.tasks.app", events)

    # Then the warm-up went through every route and method without a server error
    assert result["hooks_registered"] == [1, 1]
    sent = result["warm_up_requests"]
    assert {method for method, _, _ in sent} == {"GET", "POST", "PUT", "PATCH", "DELETE"}
    assert all(status < 500 for _, _, status in sent), sent
    assert {200, 201, 204, 401, 403, 404, 422} <= {status for _, _, status in sent}
    # and no socket was open when the snapshot would be taken
    assert result["sockets_at_snapshot"] == []
    # and the requests after the restore were answered (a new database connection)
    statuses = [response["status"] for response in result["responses"]]
    assert statuses == [200, 201, 200]
    assert json.loads(result["responses"][2]["body"])["total"] == 1
    # and the cold-start metric was emitted once, on the first invocation, whose log says so
    assert emf_values(lines, "ColdStart") == [1.0]
    assert [log["cold_start"] for log in access_logs(lines)] == [True, False, False]
    # and the warm-up's own metrics were dropped: one task created, one TasksCreated
    assert emf_values(lines, "TasksCreated") == [1.0]
    # and the warm-up left nothing behind
    with database.engine.connect() as connection:
        left = connection.execute(
            text("SELECT count(*) FROM tasks WHERE user_id = :user"), {"user": WARM_UP_USER}
        ).scalar_one()
    assert left == 0


def test_chat_function_imports_cohere_before_the_snapshot_without_calling_it(tmp_path: Path):
    # Given the chat function configured for a (fake) Cohere
    user = new_user_id()
    with FakeCohere() as fake:
        fake.script(
            tool_calls_reply(("list_tasks", {"status": "pending"})),
            text_reply("Nothing is pending."),
        )
        turn = http_api_event(
            "POST", f"/api/{user}/chat", headers=bearer(user), body='{"message": "Pending?"}'
        )

        # When it is snapshotted and restored, and the first invocation is a chat turn
        result, lines = run_probe(
            tmp_path,
            "functions.chat.app",
            [turn],
            CO_API_KEY="test-key",
            CO_API_URL=fake.base_url,
        )

        # Then the SDK was loaded before the snapshot, yet Cohere was only called by the turn
        assert result["modules_at_snapshot"] == ["cohere", "httpx"]
        assert len(fake.requests) == 2
    assert result["sockets_at_snapshot"] == []
    assert all(status < 500 for _, _, status in result["warm_up_requests"])
    assert result["responses"][0]["status"] == 200, result["responses"][0]["body"]
    assert json.loads(result["responses"][0]["body"])["response"] == "Nothing is pending."
    assert emf_values(lines, "ColdStart") == [1.0]


def test_a_failed_warm_up_still_leaves_a_clean_snapshot(tmp_path: Path):
    # Given a database that cannot be reached while the snapshot is prepared
    events = [http_api_event("GET", "/api/health")]

    # When the hooks run
    result, lines = run_probe(
        tmp_path,
        "functions.tasks.app",
        events,
        DATABASE_URL="postgresql://nobody@127.0.0.1:9/nowhere?connect_timeout=2",
    )

    # Then the failure is logged, not raised, no socket is left, and the function still answers
    assert any(line.get("message") == "snapshot warm-up incomplete" for line in lines)
    assert result["sockets_at_snapshot"] == []
    assert [response["status"] for response in result["responses"]] == [200]
