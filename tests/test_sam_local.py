"""`sam local start-api` offline (`make sam-local`, scripts/sam_local_smoke.sh, the sam-local
workflow): the template declares the variables --env-vars sets, an empty one counts as unset (the
secret is fetched then), and the example file only sets declared variables.

The end-to-end run needs a Docker-compatible engine and a PostgreSQL its containers can reach; it
is .github/workflows/sam-local.yml, and locally `scripts/sam_local_smoke.sh` (see
docs/development.md).
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from scripts.sam_local_check import CheckFailed, wait_for_health
from scripts.sam_local_env import container_url, env_file
from tests.test_deployment import TEMPLATE, load_cfn_yaml
from todo_backend.core.settings import ConfigurationError, load_settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "env.local.example.json"
WORKFLOW = ROOT / ".github" / "workflows" / "sam-local.yml"
SECRETS = ("DATABASE_URL", "BETTER_AUTH_SECRET", "CO_API_KEY")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_cfn_yaml(TEMPLATE)


def declared(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each function's environment as SAM sees it: Globals, then the function's own."""
    shared = template["Globals"]["Function"]["Environment"]["Variables"]
    return {
        name: {**shared, **resource["Properties"].get("Environment", {}).get("Variables", {})}
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def test_the_template_declares_the_variables_sam_local_sets_empty_in_aws(template):
    functions = declared(template)
    for function, variables in functions.items():
        assert variables["DATABASE_URL"] == "", function
        assert variables["BETTER_AUTH_SECRET"] == "", function
        assert variables["BETTER_AUTH_URL"] == {"Ref": "BetterAuthUrl"}, function
    assert functions["ChatFunction"]["CO_API_KEY"] == ""
    assert template["Parameters"]["BetterAuthUrl"]["Default"] == ""


def test_the_example_env_file_sets_only_declared_variables(template):
    # SAM silently ignores a variable the template does not declare for a function.
    functions = declared(template)
    example = json.loads(EXAMPLE.read_text())
    for name in example["Parameters"]:
        assert any(name in variables for variables in functions.values()), name
    for function, variables in example.items():
        if function != "Parameters":
            assert set(variables) <= set(functions[function]), function
    secret_ids = {f"{name}_SECRET_ID" for name in SECRETS}
    every = {**example["Parameters"], **example["ChatFunction"]}
    assert {name: every[name] for name in secret_ids} == dict.fromkeys(secret_ids, "")


def test_the_generated_env_file_carries_the_database_and_the_development_secret():
    from scripts.dev_secret import dev_auth_secret

    variables = json.loads(env_file("postgresql://postgres@10.88.0.1:5432/todo?sslmode=disable"))
    assert variables["Parameters"]["DATABASE_URL"].startswith("postgresql://postgres@10.88.0.1")
    assert variables["Parameters"]["BETTER_AUTH_SECRET"] == dev_auth_secret()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/todo",
            "postgresql://postgres@10.88.0.1:5432/todo?sslmode=disable",
        ),
        (
            "postgresql://u:p@localhost/todo?connect_timeout=5",
            "postgresql://u:p@10.88.0.1:5432/todo?connect_timeout=5&sslmode=disable",
        ),
        (
            "postgresql://u@ep-x-pooler.neon.tech/db?sslmode=require",
            "postgresql://u@ep-x-pooler.neon.tech/db?sslmode=require",
        ),
    ],
)
def test_a_local_database_url_is_rewritten_for_the_containers(url, expected):
    assert container_url(url, "10.88.0.1") == expected


# --- an empty value counts as unset ----------------------------------------------------------


def test_an_empty_secret_variable_is_fetched_from_secrets_manager(aws, configure):
    # Given the environment AWS gives the functions: the variables declared empty, the secrets' ARNs
    manager = boto3.client("secretsmanager", region_name="eu-west-1")
    database = manager.create_secret(Name="todo/dev/db", SecretString="postgresql://x@h/db")
    auth = manager.create_secret(
        Name="todo/dev/auth", SecretString="from-secrets-manager-" + "x" * 32
    )
    key = manager.create_secret(Name="todo/dev/co", SecretString="co-key")
    configure(
        DATABASE_URL="",
        BETTER_AUTH_SECRET="",
        CO_API_KEY="",
        DATABASE_URL_SECRET_ID=database["ARN"],
        BETTER_AUTH_SECRET_SECRET_ID=auth["ARN"],
        CO_API_KEY_SECRET_ID=key["ARN"],
    )
    # When the settings are loaded, then every secret comes from Secrets Manager
    settings = load_settings()
    assert settings.database_url.get_secret_value() == "postgresql://x@h/db"
    assert settings.better_auth_secret.get_secret_value() == "from-secrets-manager-" + "x" * 32
    assert settings.co_api_key is not None and settings.co_api_key.get_secret_value() == "co-key"


def test_a_set_variable_still_wins_and_empty_without_a_secret_is_named(aws, configure):
    manager = boto3.client("secretsmanager", region_name="eu-west-1")
    database = manager.create_secret(Name="todo/dev/db", SecretString="postgresql://x@h/db")
    configure(
        DATABASE_URL="postgresql://local@127.0.0.1/todo", DATABASE_URL_SECRET_ID=database["ARN"]
    )
    assert load_settings().database_url.get_secret_value() == "postgresql://local@127.0.0.1/todo"

    configure(DATABASE_URL="", DATABASE_URL_SECRET_ID="")
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        load_settings()


# --- the scripts and the workflow -------------------------------------------------------------


def test_the_scripts_are_valid_bash():
    for script in ("sam_local.sh", "sam_local_smoke.sh", "bootstrap.sh", "bootstrap_tools.sh"):
        result = subprocess.run(
            ["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


def test_the_workflow_runs_the_smoke_script_against_a_postgres_service():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    job = workflow["jobs"]["sam-local"]
    assert job["runs-on"] == "ubuntu-latest"
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    assert "5432:5432" in job["services"]["postgres"]["ports"]
    assert job["env"]["DATABASE_URL"].startswith("postgresql://postgres@127.0.0.1:5432/")
    runs = [step.get("run", "") for step in job["steps"]]
    assert "scripts/sam_local_smoke.sh" in runs
    for step in job["steps"]:
        if "uses" in step:
            assert re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    assert workflow["permissions"] == {"contents": "read"}


def test_the_smoke_script_starts_sam_local_with_warm_containers_and_the_env_file():
    script = (ROOT / "scripts" / "sam_local.sh").read_text()
    assert "local start-api" in script
    assert "--warm-containers EAGER" in script
    assert '--env-vars "$env_file"' in script
    smoke = (ROOT / "scripts" / "sam_local_smoke.sh").read_text()
    assert "scripts/sam_local.sh" in smoke and "scripts.sam_local_check" in smoke


def test_the_check_fails_on_a_200_with_an_error_body():
    # SAM answers 200 with an error body when a function fails to start.
    import http.server
    import threading

    class FailingStart(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"errorMessage": "Runtime.ImportModuleError", "errorType": "Runtime.Error"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FailingStart)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(CheckFailed, match=r"Runtime\.ImportModuleError"):
            wait_for_health(f"http://127.0.0.1:{server.server_port}", 3, None)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_the_smoke_script_passes_against_a_docker_compatible_engine():
    # Opt-in: it needs an engine and a database its containers reach (CI: the sam-local workflow).
    database_url = os.environ.get("SAM_LOCAL_SMOKE_DATABASE_URL")
    if not database_url:
        pytest.skip(
            "SAM_LOCAL_SMOKE_DATABASE_URL is not set (a PostgreSQL URL, as this machine sees it, "
            "whose server the engine's containers can reach; see docs/development.md, "
            "make sam-local)"
        )
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI to talk to a Docker-compatible engine")
    engine = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if engine.returncode != 0:
        pytest.skip(f"no Docker-compatible engine answers: {engine.stderr.strip()[-300:]}")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "sam_local_smoke.sh")],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for line in (
        "ok: GET /api/health answered",
        "ok: POST /api/tasks created the task",
        "ok: GET /api/tasks lists exactly it",
        "sam local smoke test passed",
    ):
        assert line in output
