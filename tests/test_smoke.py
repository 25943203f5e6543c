"""`make smoke` (scripts/smoke.py) against a real HTTP server running `make dev`'s app
(scripts/local_app.py: every function, routed as API Gateway routes them) on the test database:
the whole run with a token, the public part without one, and a non-zero exit, with what it created
deleted, when anything fails."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.mcp_clients import uvicorn_server
from tests.support.tokens import make_token, new_user_id
from tests.test_deployment import ROOT

SMOKE = [sys.executable, str(ROOT / "scripts" / "smoke.py")]


def _failing_stats(app: Any) -> Any:
    """`make dev`'s app, except that GET /api/stats answers 500 (a broken deploy, midway)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/api/stats":
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"Internal Server Error"})
            return
        await app(scope, receive, send)

    return wrapped


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    from scripts.local_app import app

    with uvicorn_server(app) as base_url:
        yield base_url


def run_smoke(*arguments: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"TOKEN", "API_URL"}}
    if token is not None:
        environment["TOKEN"] = token
    return subprocess.run(
        [*SMOKE, *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def tasks_of(api_url: str, user_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{api_url}/api/tasks",
        headers={"Authorization": f"Bearer {make_token(user_id)}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_with_a_token_every_check_passes_and_nothing_is_left_behind(api_url):
    # Given a running API and a test account's token
    user_id = new_user_id()

    # When `make smoke` runs with both
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    environment = {k: v for k, v in os.environ.items() if k not in {"TOKEN", "API_URL"}}
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "smoke",
            f"API_URL={api_url}",
            f"TOKEN={make_token(user_id)}",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Then every check passed, one line each, and the task it made is gone
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"==> smoke test of {api_url} (with a token)"
    checks = [line for line in lines if line.startswith("ok    ")]
    for name in (
        "GET /api/health",
        "GET /api/tasks without a token: 401",
        "POST /mcp without a token: 401",
        "GET /.well-known/oauth-protected-resource",
        "POST /api/tasks",
        "GET /api/tasks/{id}",
        "PATCH /api/tasks/{id}/complete",
        "GET /api/tags",
        "GET /api/stats",
        "POST /mcp tools/list",
        "GET /api/{user_id}/chat/usage",
        "DELETE /api/tasks/{id}",
    ):
        assert any(line.startswith(f"ok    {name} (") for line in checks), (name, lines)
    assert lines[-1] == f"==> all {len(checks)} checks passed"
    assert make_token(user_id) not in result.stdout + result.stderr
    assert tasks_of(api_url, user_id) == []


def test_without_a_token_only_the_public_checks_run(api_url):
    result = run_smoke(api_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(without a token)" in result.stdout
    assert "resource_metadata=" in result.stdout  # the MCP 401's challenge is shown
    assert "--    no TOKEN: the checks that need an account were skipped" in result.stdout
    assert result.stdout.splitlines()[-1] == "==> all 4 checks passed"


def test_a_failure_midway_exits_non_zero_and_deletes_what_it_created():
    # Given an API whose stats route is broken
    from scripts.local_app import app

    user_id = new_user_id()
    with uvicorn_server(_failing_stats(app)) as broken_url:
        # When the smoke test runs
        result = run_smoke(broken_url, token=make_token(user_id))
        # Then it stops there with a non-zero status, saying what failed
        assert result.returncode == 1, result.stdout + result.stderr
        assert "ok    GET /api/tags" in result.stdout
        assert "FAIL  GET /api/stats: expected 200, got 500" in result.stdout
        assert "ok    POST /mcp tools/list" not in result.stdout
        # and the task it had created is deleted
        assert "clean-up: DELETE /api/tasks/" in result.stdout
        assert tasks_of(broken_url, user_id) == []


@pytest.mark.parametrize(
    "where",
    ["nothing listens there", "a server that is not the API"],
)
def test_a_wrong_url_exits_non_zero(api_url, where):
    if where == "nothing listens there":
        import socket

        with socket.socket() as probe:  # a port just freed: connection refused
            probe.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{probe.getsockname()[1]}"
        expected = "FAIL  GET /api/health: no answer"
    else:
        url = f"{api_url}/not-the-api"
        expected = "FAIL  GET /api/health: 404"
    result = run_smoke("--attempts", "1", url, token=make_token(new_user_id()))
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout


@pytest.mark.parametrize("url", ["", "127.0.0.1:8000", "ftp://example.com"])
def test_without_a_usable_url_it_says_how_to_call_it(url):
    result = run_smoke(url)
    assert result.returncode == 2
    assert "make smoke API_URL=https://..." in result.stderr


def test_a_token_that_is_not_a_jwt_fails_before_creating_anything(api_url):
    result = run_smoke("--attempts", "1", api_url, token="not-a-jwt")
    assert result.returncode == 1
    assert "FAIL  TOKEN is not a JWT with a `sub` claim" in result.stdout
    assert "POST /api/tasks" not in result.stdout


def test_the_deploy_workflow_smoke_tests_the_stack_it_just_deployed():
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    steps = workflow["jobs"]["deploy"]["steps"]
    runs = [step.get("run", "") for step in steps]
    [deploy] = [i for i, run in enumerate(runs) if "sam deploy" in run]
    [smoke] = [i for i, run in enumerate(runs) if "make smoke" in run]
    # After the deploy, on the stack's own URL, with the test account's token when there is one
    assert smoke > deploy
    assert 'make smoke API_URL="$url"' in runs[smoke]
    assert "describe-stacks --stack-name todo-backend-prod" in runs[smoke]
    assert steps[smoke]["env"] == {"TOKEN": "${{ secrets.SMOKE_TOKEN }}"}
