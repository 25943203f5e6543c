"""The task endpoints of API.md, one status code at a time, and two users who cannot see or touch
each other's tasks."""

import os
from datetime import UTC, datetime
from typing import Any

import pytest


@pytest.fixture
def tasks_api(tasks_api_in_both_path_forms: Any) -> Any:
    """Every test of this module runs against `/api/tasks...` and `/api/{user_id}/tasks...`."""
    return tasks_api_in_both_path_forms


FULL_TASK = {
    "title": "Buy milk",
    "description": "Two litres, semi-skimmed",
    "priority": "high",
    "tags": ["home", "errands"],
    "due_date": "2026-11-30T17:00:00Z",
}
TASK_FIELDS = {
    "all_day",
    "id",
    "title",
    "description",
    "completed",
    "priority",
    "tags",
    "due_date",
    "completed_at",
    "created_at",
    "updated_at",
    "recurrence",
    "next_task_id",
    "remind_at",
    "reminded_at",
}


def instant(value: str) -> datetime:
    """A returned datetime, which must carry a UTC offset."""
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, f"{value!r} has no offset"
    return parsed


def create(api: Any, user: Any, **fields: Any) -> dict[str, Any]:
    response = api.post("/api/tasks", json={"title": "A task", **fields}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


def fetch(api: Any, user: Any, task_id: int) -> Any:
    return api.get(f"/api/tasks/{task_id}", headers=user.headers)


def total(api: Any, user: Any) -> int:
    response = api.get("/api/tasks", headers=user.headers)
    assert response.status_code == 200
    return response.json()["total"]


# --- health --------------------------------------------------------------------------------------


def test_health_is_ok_without_auth(tasks_api):
    # Given no credentials
    # When the health check is called
    response = tasks_api.get("/api/health")
    # Then it reports ok
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- create --------------------------------------------------------------------------------------


def test_create_returns_201_location_and_the_task(tasks_api, user):
    # Given a user
    # When they create a task with every field
    response = tasks_api.post("/api/tasks", json=FULL_TASK, headers=user.headers)
    # Then it is created, with a Location and the full task object
    assert response.status_code == 201, response.text
    task = response.json()
    assert set(task) == TASK_FIELDS
    assert isinstance(task["id"], int)
    assert response.headers["Location"] == f"/api/tasks/{task['id']}"
    assert task["title"] == "Buy milk"
    assert task["description"] == "Two litres, semi-skimmed"
    assert task["priority"] == "high"
    assert task["tags"] == ["home", "errands"]
    assert task["due_date"] == "2026-11-30T17:00:00Z"
    assert task["completed"] is False
    assert task["completed_at"] is None
    created_at = instant(task["created_at"])
    assert created_at.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - created_at).total_seconds()) < 60
    assert task["updated_at"] == task["created_at"]
    # And the Location serves the same task
    assert tasks_api.get(response.headers["Location"], headers=user.headers).json() == task


def test_create_with_only_a_title_takes_the_defaults(tasks_api, user):
    # Given a user
    # When they create a task with a title only
    task = create(tasks_api, user, title="Just a title")
    # Then every other field has its default
    assert task["title"] == "Just a title"
    assert task["description"] is None
    assert task["priority"] == "medium"
    assert task["tags"] == []
    assert task["due_date"] is None
    assert task["completed"] is False
    assert task["completed_at"] is None


def test_create_completed_records_completed_at(tasks_api, user):
    # Given a user
    # When they create a task that is already done
    task = create(tasks_api, user, title="Done already", completed=True)
    # Then it is completed, with a completion time
    assert task["completed"] is True
    assert task["completed_at"] is not None
    assert instant(task["completed_at"]) >= instant(task["created_at"])
    assert fetch(tasks_api, user, task["id"]).json() == task


def test_create_without_title_is_422(tasks_api, user):
    # Given a user with no tasks
    # When they post a body without a title
    response = tasks_api.post("/api/tasks", json={"priority": "low"}, headers=user.headers)
    # Then it is refused and nothing is created
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)
    assert total(tasks_api, user) == 0


# --- read ----------------------------------------------------------------------------------------


def test_get_returns_the_task(tasks_api, user, task_factory):
    # Given a stored task
    stored = task_factory(user, "Read me", priority="low", tags=["a"])
    # When it is requested by id
    response = fetch(tasks_api, user, stored.id)
    # Then it is returned as stored
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == stored.id
    assert body["title"] == "Read me"
    assert body["priority"] == "low"
    assert body["tags"] == ["a"]


@pytest.mark.parametrize("task_id", ["deleted", str(2**63 - 1)])
def test_get_missing_task_is_404(tasks_api, user, task_factory, database, task_id):
    # Given an id that names no task (a deleted one, or the largest possible id)
    if task_id == "deleted":
        from todo_backend.tasks.service import delete_task

        gone = task_factory(user, "Soon gone")
        delete_task(database, user.id, gone.id)
        task_id = str(gone.id)
    # When it is requested
    response = tasks_api.get(f"/api/tasks/{task_id}", headers=user.headers)
    # Then it is not found
    assert response.status_code == 404
    assert isinstance(response.json()["detail"], str)


# --- PUT -----------------------------------------------------------------------------------------


def test_put_replaces_and_resets_omitted_fields(tasks_api, user):
    # Given a task with every field set, completed
    task = create(tasks_api, user, **FULL_TASK, completed=True)
    assert task["completed_at"] is not None
    # When it is replaced with only a title
    response = tasks_api.put(
        f"/api/tasks/{task['id']}", json={"title": "Replaced"}, headers=user.headers
    )
    # Then the title changes and every omitted field is back to its default
    assert response.status_code == 200, response.text
    replaced = response.json()
    assert replaced["id"] == task["id"]
    assert replaced["title"] == "Replaced"
    assert replaced["description"] is None
    assert replaced["priority"] == "medium"
    assert replaced["tags"] == []
    assert replaced["due_date"] is None
    assert replaced["completed"] is False
    assert replaced["completed_at"] is None
    assert replaced["created_at"] == task["created_at"]
    assert instant(replaced["updated_at"]) > instant(task["updated_at"])
    # And the stored task is the replaced one
    assert fetch(tasks_api, user, task["id"]).json() == replaced


def test_put_sets_every_given_field(tasks_api, user):
    # Given a task with only a title
    task = create(tasks_api, user, title="Bare")
    # When it is replaced with every field
    body = {**FULL_TASK, "completed": True}
    response = tasks_api.put(f"/api/tasks/{task['id']}", json=body, headers=user.headers)
    # Then every field takes the given value
    assert response.status_code == 200
    replaced = response.json()
    for name, value in FULL_TASK.items():
        assert replaced[name] == value
    assert replaced["completed"] is True
    assert replaced["completed_at"] is not None


def test_put_without_title_is_422_and_changes_nothing(tasks_api, user):
    # Given a task
    task = create(tasks_api, user, **FULL_TASK)
    # When a replacement omits the title
    response = tasks_api.put(
        f"/api/tasks/{task['id']}", json={"priority": "low"}, headers=user.headers
    )
    # Then it is refused and the task is unchanged
    assert response.status_code == 422
    assert fetch(tasks_api, user, task["id"]).json() == task


# --- PATCH ---------------------------------------------------------------------------------------


def test_patch_changes_only_the_fields_sent(tasks_api, user):
    # Given a task with every field set
    task = create(tasks_api, user, **FULL_TASK)
    # When one field is patched
    response = tasks_api.patch(
        f"/api/tasks/{task['id']}", json={"priority": "low"}, headers=user.headers
    )
    # Then only that field (and updated_at) changed
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["priority"] == "low"
    unchanged = {key: value for key, value in task.items() if key not in {"priority", "updated_at"}}
    assert {key: patched[key] for key in unchanged} == unchanged
    assert instant(patched["updated_at"]) > instant(task["updated_at"])
    assert fetch(tasks_api, user, task["id"]).json() == patched


def test_patch_several_fields_and_clear_nullable_ones(tasks_api, user):
    # Given a task with a description and a due date
    task = create(tasks_api, user, **FULL_TASK)
    # When the title and tags change and the description and due date are cleared
    body = {"title": "Buy oat milk", "tags": ["shop"], "description": None, "due_date": None}
    response = tasks_api.patch(f"/api/tasks/{task['id']}", json=body, headers=user.headers)
    # Then exactly those fields change
    assert response.status_code == 200
    patched = response.json()
    assert patched["title"] == "Buy oat milk"
    assert patched["tags"] == ["shop"]
    assert patched["description"] is None
    assert patched["due_date"] is None
    assert patched["priority"] == "high"
    assert patched["completed"] is False


def test_patch_with_empty_body_changes_nothing(tasks_api, user):
    # Given a task
    task = create(tasks_api, user, **FULL_TASK)
    # When an empty object is patched
    response = tasks_api.patch(f"/api/tasks/{task['id']}", json={}, headers=user.headers)
    # Then the task is returned unchanged
    assert response.status_code == 200
    assert response.json() == task
    assert fetch(tasks_api, user, task["id"]).json() == task


def test_patch_completed_sets_and_clears_completed_at(tasks_api, user):
    # Given a pending task
    task = create(tasks_api, user, title="Finish report")
    path = f"/api/tasks/{task['id']}"
    # When it is patched to completed
    done = tasks_api.patch(path, json={"completed": True}, headers=user.headers).json()
    # Then it records when it was completed
    assert done["completed"] is True
    assert done["completed_at"] is not None
    assert instant(done["completed_at"]) > instant(task["created_at"])
    # When it is patched to completed again
    again = tasks_api.patch(path, json={"completed": True}, headers=user.headers).json()
    # Then the first completion time is kept
    assert again["completed"] is True
    assert again["completed_at"] == done["completed_at"]
    # When it is patched back to pending
    undone = tasks_api.patch(path, json={"completed": False}, headers=user.headers).json()
    # Then the completion time is cleared
    assert undone["completed"] is False
    assert undone["completed_at"] is None
    assert fetch(tasks_api, user, task["id"]).json() == undone


@pytest.mark.parametrize("field", ["title", "priority", "tags", "completed"])
def test_patch_null_for_a_required_field_is_422(tasks_api, user, field):
    # Given a task
    task = create(tasks_api, user, **FULL_TASK)
    # When a non-nullable field is patched to null
    response = tasks_api.patch(f"/api/tasks/{task['id']}", json={field: None}, headers=user.headers)
    # Then it is refused and nothing changed
    assert response.status_code == 422
    assert fetch(tasks_api, user, task["id"]).json() == task


# --- PATCH /complete -----------------------------------------------------------------------------


def test_complete_without_body_toggles(tasks_api, user):
    # Given a pending task
    task = create(tasks_api, user, title="Water plants")
    path = f"/api/tasks/{task['id']}/complete"
    # When /complete is called without a body
    first = tasks_api.patch(path, headers=user.headers)
    # Then it becomes completed, with a completion time
    assert first.status_code == 200, first.text
    assert first.json()["completed"] is True
    assert first.json()["completed_at"] is not None
    # When it is called again without a body
    second = tasks_api.patch(path, headers=user.headers)
    # Then it is pending again, without a completion time
    assert second.status_code == 200
    assert second.json()["completed"] is False
    assert second.json()["completed_at"] is None
    assert fetch(tasks_api, user, task["id"]).json() == second.json()


def test_complete_with_explicit_state_sets_it(tasks_api, user):
    # Given a pending task
    task = create(tasks_api, user, title="Pay rent")
    path = f"/api/tasks/{task['id']}/complete"
    # When it is marked completed twice
    first = tasks_api.patch(path, json={"completed": True}, headers=user.headers).json()
    second = tasks_api.patch(path, json={"completed": True}, headers=user.headers).json()
    # Then it stays completed (no toggle) and keeps its first completion time
    assert first["completed"] is True
    assert second["completed"] is True
    assert second["completed_at"] == first["completed_at"] is not None
    # When it is marked not completed twice
    third = tasks_api.patch(path, json={"completed": False}, headers=user.headers).json()
    fourth = tasks_api.patch(path, json={"completed": False}, headers=user.headers).json()
    # Then it stays pending
    assert third["completed"] is False
    assert fourth["completed"] is False
    assert fourth["completed_at"] is None
    assert fetch(tasks_api, user, task["id"]).json() == fourth


def test_complete_only_changes_completion(tasks_api, user):
    # Given a task with every field set
    task = create(tasks_api, user, **FULL_TASK)
    # When it is completed
    done = tasks_api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers).json()
    # Then the other fields are untouched
    for name in ("title", "description", "priority", "tags", "due_date", "created_at"):
        assert done[name] == task[name]
    assert instant(done["updated_at"]) > instant(task["updated_at"])


def test_complete_with_unknown_field_is_422(tasks_api, user):
    # Given a pending task
    task = create(tasks_api, user, title="Stay pending")
    # When /complete gets a body with an unknown field
    response = tasks_api.patch(
        f"/api/tasks/{task['id']}/complete", json={"done": True}, headers=user.headers
    )
    # Then it is refused and the task is not toggled
    assert response.status_code == 422
    assert fetch(tasks_api, user, task["id"]).json() == task


# --- DELETE --------------------------------------------------------------------------------------


def test_delete_is_204_then_the_task_is_gone(tasks_api, user):
    # Given two tasks
    doomed = create(tasks_api, user, title="Doomed")
    kept = create(tasks_api, user, title="Kept")
    # When one is deleted
    response = tasks_api.delete(f"/api/tasks/{doomed['id']}", headers=user.headers)
    # Then the answer is an empty 204
    assert response.status_code == 204
    assert response.text == ""
    # And it cannot be read, changed or deleted again, while the other remains
    assert fetch(tasks_api, user, doomed["id"]).status_code == 404
    assert tasks_api.delete(f"/api/tasks/{doomed['id']}", headers=user.headers).status_code == 404
    listed = tasks_api.get("/api/tasks", headers=user.headers).json()
    assert [item["id"] for item in listed["items"]] == [kept["id"]]
    assert listed["total"] == 1


# --- missing and malformed ids -------------------------------------------------------------------

ITEM_ROUTES = [
    ("GET", "/api/tasks/{id}", None),
    ("PUT", "/api/tasks/{id}", {"title": "New"}),
    ("PATCH", "/api/tasks/{id}", {"title": "New"}),
    ("PATCH", "/api/tasks/{id}/complete", None),
    ("PATCH", "/api/tasks/{id}/complete", {"completed": True}),
    ("DELETE", "/api/tasks/{id}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ITEM_ROUTES)
def test_missing_task_is_404_on_every_route(tasks_api, user, database, method, path, body):
    # Given the id of a task that was deleted
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task, delete_task

    gone, _ = create_task(database, user.id, TaskCreate(title="Gone"))
    delete_task(database, user.id, gone.id)
    # When a route is called with it
    response = tasks_api.request(method, path.format(id=gone.id), json=body, headers=user.headers)
    # Then it is not found, and nothing was (re)created
    assert response.status_code == 404, response.text
    assert total(tasks_api, user) == 0


def test_non_integer_id_is_422(tasks_api, user, task_factory):
    # Given a user with a task
    task = task_factory(user, "Untouchable")
    # When each item route is called with ids that are not integers
    outcomes = {
        (method, path, bad_id): tasks_api.request(
            method, path.format(id=bad_id), json=body, headers=user.headers
        ).status_code
        for method, path, body in ITEM_ROUTES
        for bad_id in ("abc", "1.5", "1e3", "0x10", f"{task.id}abc")
    }
    # Then each is a validation error, and the task is untouched
    assert outcomes == dict.fromkeys(outcomes, 422)
    after = fetch(tasks_api, user, task.id).json()
    assert (after["title"], after["completed"]) == ("Untouchable", False)


# --- isolation between users ---------------------------------------------------------------------


def test_other_users_tasks_are_not_listed(tasks_api, user, other_user, task_factory):
    # Given each user has tasks
    mine = [task_factory(user, f"Mine {n}").id for n in range(2)]
    theirs = task_factory(other_user, "Theirs").id
    # When each lists their tasks
    my_list = tasks_api.get("/api/tasks", headers=user.headers).json()
    their_list = tasks_api.get("/api/tasks", headers=other_user.headers).json()
    # Then each sees only their own
    assert sorted(item["id"] for item in my_list["items"]) == sorted(mine)
    assert my_list["total"] == 2
    assert [item["id"] for item in their_list["items"]] == [theirs]
    assert their_list["total"] == 1


@pytest.mark.parametrize(("method", "path", "body"), ITEM_ROUTES)
def test_other_users_task_is_404_and_untouched(
    tasks_api, user, other_user, database, method, path, body
):
    # Given a task of one user, and a deleted task of the other
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task, delete_task

    victim = create(tasks_api, user, **FULL_TASK)
    gone, _ = create_task(database, other_user.id, TaskCreate(title="Gone"))
    delete_task(database, other_user.id, gone.id)
    # When the other user calls the route on the first user's task, and on their deleted one
    response = tasks_api.request(
        method, path.format(id=victim["id"]), json=body, headers=other_user.headers
    )
    missing = tasks_api.request(
        method, path.format(id=gone.id), json=body, headers=other_user.headers
    )
    # Then it is a 404, exactly as for a task that does not exist
    assert response.status_code == 404
    assert missing.status_code == 404
    assert response.json()["detail"].replace(str(victim["id"]), "<id>") == missing.json()[
        "detail"
    ].replace(str(gone.id), "<id>")
    # And the owner's task is unchanged, and the intruder has no tasks
    assert fetch(tasks_api, user, victim["id"]).json() == victim
    assert total(tasks_api, other_user) == 0


# --- datetimes are returned in UTC ---------------------------------------------------------------


def test_datetimes_are_utc_whatever_the_database_session_time_zone(tasks_api, user, configure):
    # Given a cold start against a database whose session time zone is not UTC
    url = os.environ["DATABASE_URL"]
    separator = "&" if "?" in url else "?"
    configure(DATABASE_URL=f"{url}{separator}options=-c%20timezone%3DAmerica/New_York")
    # When a task is created and read back
    created = create(tasks_api, user, title="Zoned", due_date="2026-11-30T17:00:00Z")
    fetched = fetch(tasks_api, user, created["id"]).json()
    # Then its datetimes are still returned in UTC
    for task in (created, fetched):
        assert task["due_date"] == "2026-11-30T17:00:00Z"
        for name in ("created_at", "updated_at"):
            assert instant(task[name]).utcoffset().total_seconds() == 0, task[name]
