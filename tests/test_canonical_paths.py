"""The canonical task paths `/api/{user_id}/tasks...` (issue 10 item 1; API.md "Canonical paths"):
the same routes as `/api/tasks...` (the task API tests run in both forms, see
`tasks_api_in_both_path_forms`), plus 403 when `{user_id}` is not the token's `sub`, checked before
the body, and a `Location` in the form of the request."""

from typing import Any
from urllib.parse import quote

import pytest

from tests.support.tokens import make_token

FORBIDDEN = {"detail": "Not allowed to act for another user"}
ROUTES = [
    ("GET", "/tasks"),
    ("POST", "/tasks"),
    ("GET", "/tasks/{task_id}"),
    ("PUT", "/tasks/{task_id}"),
    ("PATCH", "/tasks/{task_id}"),
    ("PATCH", "/tasks/{task_id}/complete"),
    ("DELETE", "/tasks/{task_id}"),
]
BODIES = {
    "valid": {"title": "Hijacked", "completed": True},
    "invalid": {"title": "", "priority": "urgent", "unknown": 1},
}


def test_every_task_route_is_served_in_both_forms_with_the_403_documented():
    from functions.tasks.app import app

    # Routes are built when first reached (DeferredRoute): the document lists what is served.
    paths = app.openapi()["paths"]
    for method, path in ROUTES:
        plain = paths[f"/api{path}"][method.lower()]
        canonical = paths[f"/api/{{user_id}}{path}"][method.lower()]
        assert "403" in canonical["responses"], (method, path)
        assert "403" not in plain["responses"], (method, path)
        assert {p["name"] for p in canonical["parameters"]} == {
            p["name"] for p in plain.get("parameters", [])
        } | {"user_id"}
        assert plain["operationId"] != canonical["operationId"]


@pytest.mark.parametrize("body", list(BODIES), ids=list(BODIES))
def test_another_users_id_in_the_path_is_403_whatever_the_body(
    tasks_api, user, other_user, task_factory, body
):
    # Given two users, each with a task
    mine = task_factory(user, "Mine")
    theirs = task_factory(other_user, "Theirs")
    # When a user names the other in the path, on every task route, with a valid or invalid body
    for method, path in ROUTES:
        for task in (mine, theirs):
            url = f"/api/{other_user.id}" + path.format(task_id=task.id)
            kwargs: dict[str, Any] = {"headers": user.headers}
            if method in {"POST", "PUT", "PATCH"}:
                kwargs["json"] = BODIES[body]
            response = tasks_api.request(method, url, **kwargs)
            # Then it is refused with 403 before the body is even read
            assert response.status_code == 403, (method, url, response.text)
            assert response.json() == FORBIDDEN
    # And nothing changed for either user
    for owner, task in ((user, mine), (other_user, theirs)):
        listed = tasks_api.get(f"/api/{owner.id}/tasks", headers=owner.headers).json()
        assert [(item["id"], item["title"], item["completed"]) for item in listed["items"]] == [
            (task.id, task.title, False)
        ]


def test_a_malformed_body_to_another_users_path_is_403(tasks_api, user, other_user):
    headers = {**user.headers, "Content-Type": "application/json"}
    for content in ("{not json", "[]", "\x00"):
        response = tasks_api.post(f"/api/{other_user.id}/tasks", content=content, headers=headers)
        assert response.status_code == 403, (content, response.text)


def test_without_a_valid_token_the_canonical_path_is_401_not_403(tasks_api, user, other_user):
    for headers in ({}, {"Authorization": "Bearer garbage"}):
        response = tasks_api.post(
            f"/api/{other_user.id}/tasks", json={"title": "x"}, headers=headers
        )
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_location_uses_the_form_of_the_request(tasks_api, user):
    # When a task is created through each form
    plain = tasks_api.post("/api/tasks", json={"title": "Plain"}, headers=user.headers)
    canonical = tasks_api.post(
        f"/api/{user.id}/tasks", json={"title": "Canon"}, headers=user.headers
    )
    # Then each Location has the form of its request, and serves the task
    assert plain.status_code == canonical.status_code == 201
    assert plain.headers["Location"] == f"/api/tasks/{plain.json()['id']}"
    assert canonical.headers["Location"] == f"/api/{user.id}/tasks/{canonical.json()['id']}"
    for response in (plain, canonical):
        fetched = tasks_api.get(response.headers["Location"], headers=user.headers)
        assert fetched.status_code == 200
        assert fetched.json() == response.json()


def test_an_idempotent_repeat_answers_in_the_form_of_the_repeat(tasks_api, user):
    headers = {**user.headers, "Idempotency-Key": f"form-{user.id}"}
    first = tasks_api.post(f"/api/{user.id}/tasks", json={"title": "Once"}, headers=headers)
    again = tasks_api.post("/api/tasks", json={"title": "Once"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.headers["Location"] == f"/api/{user.id}/tasks/{first.json()['id']}"
    assert again.headers["Location"] == f"/api/tasks/{first.json()['id']}"


@pytest.mark.parametrize("sub", ["alice@example.com", "name with spaces", "ümlaut+plus"])
def test_a_sub_with_url_special_characters_works_percent_encoded(tasks_api, sub):
    headers = {"Authorization": f"Bearer {make_token(sub)}"}
    prefix = f"/api/{quote(sub, safe='')}"
    # Given the user's own tasks cleared from earlier runs of this test
    for item in tasks_api.get(f"{prefix}/tasks", headers=headers).json()["items"]:
        tasks_api.delete(f"{prefix}/tasks/{item['id']}", headers=headers)
    created = tasks_api.post(f"{prefix}/tasks", json={"title": "Mine"}, headers=headers)
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert " " not in location
    fetched = tasks_api.get(location, headers=headers)
    assert fetched.status_code == 200, (location, fetched.text)
    assert fetched.json()["id"] == created.json()["id"]
    listed = tasks_api.get(f"{prefix}/tasks", headers=headers)
    assert [item["title"] for item in listed.json()["items"]] == ["Mine"]
    # And the same user through the plain form sees the same task
    assert tasks_api.get("/api/tasks", headers=headers).json()["total"] == 1
