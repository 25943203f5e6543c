"""openapi.json: one document for the whole API, committed, generated from the functions' apps
(scripts/openapi.py, `make openapi`), holding every route the functions serve and API Gateway
routes, and good enough to generate a TypeScript client that type-checks."""

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.routing import Mount

from scripts.functions import HTTP_FUNCTIONS, load_http_functions, module_exists
from scripts.openapi import OPENAPI_FILE, MergeError, build_document, merge_schemas, render
from tests.test_deployment import TEMPLATE, load_cfn_yaml

ROOT = Path(__file__).resolve().parents[1]
NODE_BIN = ROOT / ".local" / "node" / "node_modules" / ".bin"
TYPESCRIPT_SOURCES = ROOT / "tests" / "support" / "typescript"
# As docs/API.md says to generate a client's types: fields with a default are optional in a request.
GENERATE_CLIENT_TYPES = [
    str(NODE_BIN / "openapi-typescript"),
    str(OPENAPI_FILE),
    "--default-non-nullable",
    "false",
]
FASTAPI_DOCS_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return json.loads(OPENAPI_FILE.read_text())


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_the_committed_openapi_json_is_what_the_code_generates():
    # Given the functions' apps as they are now, when the document is generated in memory,
    # then it is byte for byte the committed openapi.json.
    generated = render(build_document())
    assert OPENAPI_FILE.read_text() == generated, (
        "openapi.json is out of date: run `make openapi` and commit it"
    )


def served_routes(routes: list[Any]) -> Iterator[tuple[str, set[str] | None]]:
    """(path, methods) of every route an app serves, included routers flattened (FastAPI keeps
    them as one `_IncludedRouter` entry of app.routes); methods is None for a mounted app."""
    for route in routes:
        if hasattr(route, "effective_route_contexts"):
            for context in route.effective_route_contexts():
                yield context.path, set(getattr(context.original_route, "methods", None) or ())
        elif isinstance(route, Mount):
            yield route.path, None
        else:
            yield route.path, set(getattr(route, "methods", None) or ())


def test_every_route_of_every_function_is_in_the_document_tagged_with_its_function(committed):
    documented = operations(committed)
    functions = load_http_functions()
    assert [f.name for f in functions][:2] == ["tasks", "chat"]
    for function in functions:
        for path, methods in served_routes(function.app.routes):
            if path in FASTAPI_DOCS_ROUTES:
                continue
            if methods is None:  # a mounted app: something below its path must be documented
                assert any(documented_path.startswith(path) for _, documented_path in documented)
                continue
            for method in methods & HTTP_METHODS:
                assert (method, path) in documented, f"{function.name}: {method} {path} missing"
                assert documented[method, path]["tags"] == [function.name]


def test_the_document_and_the_template_route_the_same_operations(committed):
    # API Gateway only routes what the template declares: a route in the document but not in the
    # template would answer 404 in AWS, and the reverse is an undocumented route.
    template = load_cfn_yaml(TEMPLATE)
    routed = {
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
        for event in resource["Properties"].get("Events", {}).values()
        if event["Type"] == "HttpApi"
    }
    assert set(operations(committed)) == routed


def test_the_function_table_skips_a_function_not_written_yet():
    existing = [name for name, module in HTTP_FUNCTIONS if module_exists(module)]
    assert [f.name for f in load_http_functions()] == existing
    assert module_exists("functions.tasks.app")
    assert not module_exists("functions.no_such_function.app")


class Item(BaseModel):
    name: str


def _app(title: str, path: str, model: type[BaseModel]) -> FastAPI:
    app = FastAPI(title=title)

    @app.post(path)
    async def create(body: model) -> model:  # type: ignore[valid-type]
        return body

    return app


def test_a_schema_name_two_functions_define_differently_is_renamed_for_the_second():
    def other_item() -> type[BaseModel]:
        class Item(BaseModel):  # the same name as the module's Item, another definition
            count: int

        return Item

    first = _app("First", "/api/first", Item).openapi()
    second = _app("Second", "/api/second", other_item()).openapi()

    merged = merge_schemas([("first", first), ("second", second)])

    schemas = merged["components"]["schemas"]
    assert schemas["Item"]["properties"] == {"name": {"title": "Name", "type": "string"}}
    assert schemas["SecondItem"]["properties"] == {"count": {"title": "Count", "type": "integer"}}
    body = merged["paths"]["/api/second"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/SecondItem"}
    first_body = merged["paths"]["/api/first"]["post"]["requestBody"]["content"]
    assert first_body["application/json"]["schema"] == {"$ref": "#/components/schemas/Item"}
    assert [tag["name"] for tag in merged["tags"]] == ["first", "second"]


def test_two_functions_serving_the_same_route_is_an_error():
    one = _app("One", "/api/same", Item).openapi()
    two = _app("Two", "/api/same", Item).openapi()
    with pytest.raises(MergeError, match="POST /api/same is served by both one and two"):
        merge_schemas([("one", one), ("two", two)])


# ---------------------------------------------------------------------------------------------
# A TypeScript client generated from openapi.json


def _typescript_tools() -> tuple[Path, Path]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the TypeScript client check needs node and npm")
    generator, compiler = NODE_BIN / "openapi-typescript", NODE_BIN / "tsc"
    if not (generator.exists() and compiler.exists()):
        pytest.skip("openapi-typescript/typescript not in .local/node (scripts/bootstrap_tools.sh)")
    return generator, compiler


@pytest.fixture(scope="module")
def typescript_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    _, compiler = _typescript_tools()
    project = tmp_path_factory.mktemp("typescript")
    for source in TYPESCRIPT_SOURCES.iterdir():
        shutil.copy(source, project / source.name)
    (project / "node_modules").symlink_to(NODE_BIN.parent)
    result = subprocess.run(
        [*GENERATE_CLIENT_TYPES, "--output", str(project / "schema.d.ts")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return project, compiler


def _type_check(project: Path, compiler: Path, source: str) -> subprocess.CompletedProcess[str]:
    config = json.loads((project / "tsconfig.json").read_text())
    config["files"] = [source]
    (project / f"tsconfig.{source}.json").write_text(json.dumps(config))
    return subprocess.run(
        [str(compiler), "--project", f"tsconfig.{source}.json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_typescript_client_generated_from_openapi_json_type_checks(typescript_project):
    project, compiler = typescript_project
    schema = (project / "schema.d.ts").read_text()
    for path in ("/api/tasks", "/api/{user_id}/chat", "/api/health"):
        assert f'"{path}"' in schema
    result = _type_check(project, compiler, "client.ts")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_generated_types_reject_a_wrongly_typed_request(typescript_project):
    project, compiler = typescript_project
    result = _type_check(project, compiler, "wrong.ts")
    assert result.returncode != 0
    assert "wrong.ts(6," in result.stdout, result.stdout
    assert "Type 'number' is not assignable to type 'string'" in result.stdout, result.stdout
