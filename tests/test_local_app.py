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
