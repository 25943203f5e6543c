"""scripts/local_app.py, what `make dev` serves: every function on one port, routed by path as
API Gateway routes them, and the whole API's OpenAPI document and Swagger UI."""

import json
import re

import pytest
from fastapi.testclient import TestClient

from scripts import local_app
from scripts.functions import load_http_functions
from scripts.openapi import OPENAPI_FILE, build_document
from tests.support.tokens import make_token, new_user_id

SAMPLE_PARAMETERS = {
    "task_id": "7",
    "user_id": "alice",
    "conversation_id": "0b5f3c1e-8f2e-4c59-9d7a-3f0a1d2b4c5e",
    "action_id": "5d2a9c4e-1b3f-4e6a-8c7d-9e0f1a2b3c4d",
    "turn_id": "7e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b",
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    with TestClient(local_app.app) as client:
        yield client


def test_docs_serve_the_whole_api_document(client):
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == build_document()
    assert served.json() == json.loads(OPENAPI_FILE.read_text())
    page = client.get("/docs")
    assert page.status_code == 200
    assert "swagger-ui" in page.text and "/openapi.json" in page.text


def test_the_docs_page_loads_only_what_the_app_itself_serves(client):
    # Given the Swagger UI page of `make dev`
    page = client.get("/docs")
    assert page.status_code == 200
    # When the URLs it loads are read
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    urls = loaded + re.findall(r"url: '([^']+)'", page.text)
    # Then every one is a local path (nothing from a CDN: the page works offline)
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    # And each is served, with the media type a browser needs to use it
    expected = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        suffix = url[url.rfind(".") :]
        if suffix in expected:
            assert response.headers["content-type"].startswith(expected[suffix]), url
            assert len(response.content) > 1000, url
    assert {url.rsplit(".", 1)[-1] for url in urls} >= {"js", "css", "json"}


def test_only_the_swagger_ui_files_are_served_under_the_docs_assets(client):
    # Given the assets path of the docs page
    # When anything but Swagger UI's own files is asked for
    # Then it is not found (no directory listing, no other file of the package)
    for name in ("__init__.py", "redoc.standalone.js", "", "..%2F__init__.py"):
        assert client.get(f"/docs/assets/{name}").status_code == 404, name


def test_the_functions_do_not_serve_fastapis_cdn_docs_pages():
    # Given every function's app, when its FastAPI docs pages are asked for
    # Then there are none (they would load Swagger UI from a CDN); the document itself remains
    for function in load_http_functions():
        with TestClient(function.app) as function_client:
            assert function_client.get("/docs").status_code == 404, function.name
            assert function_client.get("/redoc").status_code == 404, function.name


def test_every_documented_operation_is_routed_to_the_function_that_serves_it():
    apps = {function.name: function.app for function in load_http_functions()}
    document = json.loads(OPENAPI_FILE.read_text())
    for template, item in document["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMETERS[m.group(1)], template)
        for method, operation in item.items():
            scope = {"type": "http", "method": method.upper(), "path": path, "root_path": ""}
            assert local_app.choose(scope) is apps[operation["tags"][0]], f"{method} {path}"


def test_tasks_and_chat_answer_through_the_one_app(client):
    user = new_user_id()
    headers = {"Authorization": f"Bearer {make_token(user)}"}

    created = client.post("/api/tasks", json={"title": "Buy milk"}, headers=headers)
    listed = client.get("/api/tasks", headers=headers)
    conversations = client.get(f"/api/{user}/conversations", headers=headers)

    assert created.status_code == 201
    assert [task["title"] for task in listed.json()["items"]] == ["Buy milk"]
    assert conversations.status_code == 200 and conversations.json()["total"] == 0
    assert client.get("/api/health").json() == {"status": "ok"}


def test_a_wrong_method_is_405_and_an_unknown_path_404(client):
    assert client.put("/api/tasks", json={}).status_code == 405
    assert client.get("/api/nothing/here/at/all").status_code == 404
