"""GET /api/tags and GET /api/stats (and their /api/{user_id}/... forms) against hand-computed
values; each is one SQL statement. The get_stats tool answers the same object."""

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from tests.support.database import counted_statements
from todo_backend.tasks.tools import ToolContext, execute_tool


def test_tags_lists_each_tag_with_its_task_count_by_name(tasks_api, user, other_user, database):
    # Given tasks with overlapping tags, and another user's tags
    for tags in (["home", "work"], ["home"], ["b", "a"], ["z", "é"], []):
        tasks_api.post("/api/tasks", json={"title": "t", "tags": tags}, headers=user.headers)
    tasks_api.post(
        "/api/tasks", json={"title": "t", "tags": ["secret"]}, headers=other_user.headers
    )
    # When the user asks for their tags
    with counted_statements(database) as statements:
        response = tasks_api.get("/api/tags", headers=user.headers)
    # Then each tag is there once, with the number of tasks carrying it, in code point order
    assert response.status_code == 200
    assert response.json() == {
        "items": [
            {"name": "a", "count": 1},
            {"name": "b", "count": 1},
            {"name": "home", "count": 2},
            {"name": "work", "count": 1},
            {"name": "z", "count": 1},
            {"name": "é", "count": 1},
        ],
        "total": 6,
    }
    assert len(statements) == 1
    # and the canonical path answers the same
    canonical = tasks_api.get(f"/api/{user.id}/tags", headers=user.headers)
    assert canonical.json() == response.json()
    assert tasks_api.get(f"/api/{other_user.id}/tags", headers=user.headers).status_code == 403


def test_tags_list_is_bounded_and_total_counts_every_tag(user, database, task_factory):
    from fastapi.testclient import TestClient

    from functions.tasks.app import app
    from todo_backend.tasks.service import TAGS_LISTED_MAX

    # Given more distinct tags than one response lists (10 per task)
    tasks_needed = TAGS_LISTED_MAX // 10 + 1
    for index in range(tasks_needed):
        task_factory(user, tags=[f"t{index:04d}-{n}" for n in range(10)])
    # When the user asks for their tags
    with counted_statements(database) as statements:
        body = TestClient(app).get("/api/tags", headers=user.headers).json()
    # Then the first TAGS_LISTED_MAX by name are listed, total counts them all, one statement
    assert len(body["items"]) == TAGS_LISTED_MAX
    assert body["total"] == tasks_needed * 10
    assert body["items"][0] == {"name": "t0000-0", "count": 1}
    assert [item["name"] for item in body["items"]] == sorted(
        item["name"] for item in body["items"]
    )
    assert len(statements) == 1


def test_tags_of_a_user_without_tasks_is_empty(tasks_api, user):
    assert tasks_api.get("/api/tags", headers=user.headers).json() == {"items": [], "total": 0}


def test_stats_match_hand_computed_counts(tasks_api, user, other_user, database):
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow = today + timedelta(days=1)

    def create(**fields: Any) -> dict[str, Any]:
        body = {"title": "t", **fields}
        for key in ("due_date",):
            if isinstance(body.get(key), datetime):
                body[key] = body[key].isoformat()
        response = tasks_api.post("/api/tasks", json=body, headers=user.headers)
        assert response.status_code == 201, response.text
        return response.json()

    # Given, for one user:
    create(priority="high", due_date=now - timedelta(days=2))  # pending, high, overdue
    create(priority="high", due_date=today)  # pending, high, due today and overdue
    create(priority="low", due_date=tomorrow - timedelta(microseconds=1))  # pending, low, today
    create(priority="medium", due_date=tomorrow)  # pending, medium, not today
    create(priority="medium")  # pending, medium, no due date
    create(priority="low", due_date=now - timedelta(days=1), completed=True)  # done, not overdue
    done_today = create(priority="high", due_date=today + timedelta(minutes=1), completed=True)
    old = create(priority="medium", completed=True)  # completed 8 days ago (set below)
    with database.engine.connect() as connection:
        connection.execute(
            text("UPDATE tasks SET completed_at = now() - interval '8 days' WHERE id = :id"),
            {"id": old["id"]},
        )
    # and another user's tasks, which must not count
    tasks_api.post(
        "/api/tasks", json={"title": "x", "priority": "high"}, headers=other_user.headers
    )
    assert done_today["completed"] is True

    # When the user asks for their stats
    with counted_statements(database) as statements:
        response = tasks_api.get("/api/stats", headers=user.headers)

    # Then, computed by hand:
    assert response.status_code == 200
    assert response.json() == {
        "total": 8,
        "pending": 5,
        "completed": 3,
        "overdue": 2,  # pending only: two days ago, and today 00:00
        "due_today": 2,  # pending only: today 00:00 and today 23:59:59.999999
        "by_priority": {"low": 1, "medium": 2, "high": 2},  # pending tasks
        "completed_last_7_days": 2,
    }
    assert len(statements) == 1
    assert tasks_api.get(f"/api/{user.id}/stats", headers=user.headers).json() == response.json()

    # and the get_stats tool gives the model the same object
    tool = execute_tool(ToolContext(db=database, user_id=user.id), "get_stats", {})
    assert tool == response.json()


def test_stats_of_a_user_without_tasks_are_zero(tasks_api, user):
    assert tasks_api.get("/api/stats", headers=user.headers).json() == {
        "total": 0,
        "pending": 0,
        "completed": 0,
        "overdue": 0,
        "due_today": 0,
        "by_priority": {"low": 0, "medium": 0, "high": 0},
        "completed_last_7_days": 0,
    }


def test_tags_stats_and_reminders_need_a_token(tasks_api):
    for path in ("/api/tags", "/api/stats", "/api/reminders"):
        response = tasks_api.get(path)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
