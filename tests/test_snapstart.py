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
    tmp_path: Path, module: str, events: list[dict[str, Any]], **env: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The probe's result and the JSON lines the function printed (logs, EMF metrics); an
    `env` value None removes that variable."""
    result_path = tmp_path / "result.json"
    request = {"module": module, "events": events, "result_path": str(result_path)}
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "shared" / "python")]),
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_SERVICE_NAME": module.split(".")[1],
        **env,
    }
    completed = subprocess.run(
        [sys.executable, str(PROBE)],
        input=json.dumps(request),
        env={name: value for name, value in environment.items() if value is not None},
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


def warm_up_rows(database: Any) -> dict[str, int]:
    """The warm-up user's rows in tasks and task_events."""
    with database.engine.connect() as connection:
        return {
            table: connection.execute(
                text(f"SELECT count(*) FROM {table} WHERE user_id = :user"), {"user": WARM_UP_USER}
            ).scalar_one()
            for table in ("tasks", "task_events")
        }


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
    # and the warm-up left nothing behind: no task, and no task event to publish for its user
    # (its writes queued some, which the release hook deleted before the snapshot)
    assert warm_up_rows(database) == {"tasks": 0, "task_events": 0}
    deleted = [line for line in lines if line.get("message") == "warm-up task events deleted"]
    assert len(deleted) == 1 and deleted[0]["events"] >= 8, deleted


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


# --- the MCP function -----------------------------------------------------------------------------

MCP_PROTOCOL = "2025-11-25"


def mcp_event(user: str, request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    headers = {
        **bearer(user),
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MCP_PROTOCOL,
    }
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return http_api_event("POST", "/mcp", headers=headers, body=json.dumps(body))


def test_mcp_function_is_warm_read_only_and_closed_at_snapshot_and_serves_after_restore(
    tmp_path: Path, database: Any
):
    # Given the MCP function, and a user's tool calls right after a restore
    user = new_user_id()
    add = {"name": "add_task", "arguments": {"title": "After the restore"}}
    events = [
        mcp_event(user, 1, "tools/call", add),
        mcp_event(user, 2, "tools/call", {"name": "list_tasks", "arguments": {}}),
    ]

    # When Lambda initialises it, runs the before-snapshot hooks, restores, and invokes it
    result, lines = run_probe(tmp_path, "functions.mcp.app", events)

    # Then the warm-up sent the metadata GET, the 401 challenge, and a whole stateless exchange,
    # none of which the SDK's Host/Origin checks refused (each answer is checked)
    assert result["hooks_registered"] == [1, 1]
    assert result["warm_up_requests"] == [
        ["GET", "/.well-known/oauth-protected-resource/mcp", 200],
        ["POST", "/mcp", 401],
        ["POST", "/mcp", 200],  # initialize
        ["POST", "/mcp", 200],  # tools/list
        ["POST", "/mcp", 200],  # tools/call list_tasks
    ]
    assert not [line for line in lines if line.get("message") == "snapshot warm-up incomplete"]
    # and it wrote nothing, left no socket open, and never imported Cohere
    assert warm_up_rows(database) == {"tasks": 0, "task_events": 0}
    assert result["sockets_at_snapshot"] == []
    assert "cohere" not in result["modules_at_snapshot"]
    # and the tool calls after the restore were answered (a new database connection)
    assert [response["status"] for response in result["responses"]] == [200, 200]
    added, listed = (json.loads(response["body"])["result"] for response in result["responses"])
    assert added["isError"] is False
    assert [task["title"] for task in listed["structuredContent"]["tasks"]] == ["After the restore"]
    # and the cold-start metric was emitted once, on the first invocation
    assert emf_values(lines, "ColdStart") == [1.0]
    assert [log["cold_start"] for log in access_logs(lines)] == [True, False]


# --- the scheduled reminders function -------------------------------------------------------------


def test_reminders_function_closes_database_and_eventbridge_sockets_before_the_snapshot(
    tmp_path: Path, database: Any
):
    from tests.support.fake_eventbridge import fake_eventbridge
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task

    # Given a task whose event waits in the outbox (the backlog of other tests marked relayed)
    with database.engine.connect() as connection:
        connection.execute(
            text("UPDATE task_events SET relayed_at = now() WHERE relayed_at IS NULL")
        )
    user = new_user_id()
    task, _ = create_task(database, user, TaskCreate(title="Relayed after the restore"), None)
    schedule = {
        "version": "0",
        "id": "00000000-0000-0000-0000-000000000000",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": "2026-01-01T00:00:00Z",
        "detail": {},
    }

    with fake_eventbridge() as bus:
        # When the function's initialisation used the database and the EventBridge client (both
        # hold a socket), then Lambda runs the hooks, restores it, and the schedule invokes it
        result, lines = run_probe(
            tmp_path,
            "tests.support.reminders_with_open_connections",
            [schedule],
            EVENT_BUS_NAME="todo-test-bus",
            AWS_ENDPOINT_URL=bus.base_url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_SESSION_TOKEN=None,
            AWS_DEFAULT_REGION="eu-west-1",
            AWS_REGION="eu-west-1",
            POWERTOOLS_SERVICE_NAME="reminders",
        )

        # Then hooks are registered without a warm-up, the two sockets open at init are closed
        # when the snapshot would be taken, and nothing else is left open
        assert result["hooks_registered"] == [1, 1]
        assert result["warm_up_requests"] is None
        assert len(result["sockets_at_init"]) == 2, result["sockets_at_init"]
        assert result["sockets_at_snapshot"] == []
        # and after the restore the run relays the event through a new client and connection
        outcome = result["responses"][0]["body"]
        assert outcome["events_failed"] == 0 and outcome["events_published"] >= 1
        details = [entry["Detail"] for entry in bus.published()]
        assert [d["task_id"] for d in details if d["user_id"] == user] == [task.id]
    assert any(line.get("message") == "scheduled run" for line in lines)


# --- the warm-up's own task events ----------------------------------------------------------------


def test_forgetting_warm_up_events_keeps_what_a_relay_holds_or_published(database: Any):
    import threading

    from todo_backend.core.db import create_database_engine
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task
    from todo_backend.tasks.warmup import forget_warm_up_events

    # Given five events of the warm-up user: pending, leased by a running relay, relayed,
    # leased by a relay whose lease ran out, and one a relay's claim is locking right now
    for index in range(5):
        create_task(database, WARM_UP_USER, TaskCreate(title=f"warm-up {index}"), None)
    other = new_user_id()
    create_task(database, other, TaskCreate(title="Someone else's"), None)
    with database.engine.connect() as connection:
        ids = connection.execute(
            text("SELECT id FROM task_events WHERE user_id = :u ORDER BY id"), {"u": WARM_UP_USER}
        ).scalars()
        _pending, leased, relayed, expired, locked = ids
        connection.execute(
            text(
                "UPDATE task_events SET claimed_until = CASE id WHEN :leased "
                "THEN now() + interval '2 minutes' WHEN :expired THEN now() - interval '1 second' "
                "END, relayed_at = CASE WHEN id = :relayed THEN now() END WHERE id = ANY(:ids)"
            ),
            {
                "leased": leased,
                "expired": expired,
                "relayed": relayed,
                "ids": [leased, expired, relayed],
            },
        )
    locking_engine = create_database_engine(os.environ["DATABASE_URL"], autocommit=False)
    outcome: list[int] = []
    try:
        with locking_engine.connect() as lock, lock.begin():
            lock.execute(
                text("SELECT id FROM task_events WHERE id = :id FOR UPDATE"), {"id": locked}
            )

            # When the release hook runs (while the lock is held)
            worker = threading.Thread(target=lambda: outcome.append(forget_warm_up_events()))
            worker.start()
            worker.join(timeout=10)
            finished_under_lock = not worker.is_alive()
        worker.join(timeout=10)

        # Then it did not wait for the lock, and deleted only the two rows no relay holds
        assert finished_under_lock
        assert outcome == [2]
        with database.engine.connect() as connection:
            left = connection.execute(
                text("SELECT id FROM task_events WHERE user_id = :u ORDER BY id"),
                {"u": WARM_UP_USER},
            ).scalars()
            assert list(left) == [leased, relayed, locked]
            others = connection.execute(
                text("SELECT count(*) FROM task_events WHERE user_id = :u"), {"u": other}
            ).scalar_one()
            assert others == 1
    finally:
        locking_engine.dispose()
        with database.engine.connect() as connection:
            for table in ("task_events", "tasks"):
                connection.execute(
                    text(f"DELETE FROM {table} WHERE user_id = :u"), {"u": WARM_UP_USER}
                )


# --- the warm-up token ----------------------------------------------------------------------------


def test_warm_up_token_carries_the_claims_better_auth_url_implies(configure: Any):
    from todo_backend.core.auth import get_token_verifier
    from todo_backend.core.snapstart import warm_up_token

    # Given a configuration whose issuer and audience come from BETTER_AUTH_URL only
    configure(BETTER_AUTH_URL="https://auth.example.test", JWT_ISSUER=None, JWT_AUDIENCE=None)

    # When the warm-up mints its token, Then the function's own verifier accepts it
    token = warm_up_token()
    assert token is not None
    assert get_token_verifier().verify(token) == WARM_UP_USER


def test_warm_up_token_is_none_without_an_hs256_secret(configure: Any):
    from todo_backend.core.snapstart import warm_up_token

    configure(BETTER_AUTH_SECRET=None, BETTER_AUTH_JWKS_URL="https://keys.example.test/jwks")
    assert warm_up_token() is None


def test_tasks_warm_up_with_claims_from_better_auth_url_is_authenticated(
    tmp_path: Path, database: Any
):
    # Given the tasks function, whose tokens must carry iss and aud = BETTER_AUTH_URL
    # When it is snapshotted and restored
    result, _ = run_probe(
        tmp_path,
        "functions.tasks.app",
        [http_api_event("GET", "/api/health")],
        BETTER_AUTH_URL="https://auth.example.test",
    )

    # Then the warm-up's authenticated requests were accepted (created, listed, deleted)
    statuses = {status for _, _, status in result["warm_up_requests"]}
    assert {200, 201, 204} <= statuses, result["warm_up_requests"]
    assert warm_up_rows(database) == {"tasks": 0, "task_events": 0}


def test_without_an_hs256_secret_only_the_unauthenticated_warm_up_runs(
    tmp_path: Path, database: Any
):
    # Given the tasks function verifying tokens with a JWKS key set only (no secret to sign one)
    user_token_event = http_api_event("GET", "/api/health")

    # When it is snapshotted and restored
    result, lines = run_probe(
        tmp_path,
        "functions.tasks.app",
        [user_token_event],
        BETTER_AUTH_SECRET=None,
        BETTER_AUTH_JWKS_URL="https://keys.example.test/jwks",
    )

    # Then the unauthenticated requests warmed it, the rest was skipped with one clear log line
    # (not reported as a failed warm-up), and the snapshot is still clean
    assert result["warm_up_requests"] == [
        ["GET", "/api/health", 200],
        ["GET", "/api/tasks", 401],
    ]
    skipped = [
        line for line in lines if "without authenticated requests" in line.get("message", "")
    ]
    assert len(skipped) == 1
    assert "BETTER_AUTH_SECRET" in skipped[0]["message"]
    assert not [line for line in lines if line.get("message") == "snapshot warm-up incomplete"]
    assert result["sockets_at_snapshot"] == []
    assert [response["status"] for response in result["responses"]] == [200]
    assert warm_up_rows(database) == {"tasks": 0, "task_events": 0}
