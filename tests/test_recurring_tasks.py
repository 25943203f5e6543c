"""Recurring tasks through the API and the tools: every way of completing one creates exactly one
next occurrence, on the right date, in the same statement as the completion; concurrent
completions and toggles create exactly one too."""

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.chat import fake_cohere_fixture  # noqa: F401
from todo_backend.tasks.tools import ToolContext, execute_tool

WEEKLY = {
    "title": "Team sync",
    "description": "Agenda in the doc",
    "priority": "high",
    "tags": ["work", "meeting"],
    "due_date": "2026-11-23T09:00:00Z",  # a Monday
    "recurrence": "FREQ=WEEKLY;BYDAY=MO",
    "remind_at": "2026-11-23T08:00:00Z",  # an hour before
}


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def next_monday_after(moment: datetime, hour: int = 9) -> datetime:
    """The first Monday at `hour`:00 UTC strictly after `moment`."""
    candidate = moment.replace(hour=hour, minute=0, second=0, microsecond=0)
    candidate += timedelta(days=(7 - candidate.weekday()) % 7)
    while candidate <= moment:
        candidate += timedelta(days=7)
    return candidate


def tasks_of(api: Any, user: Any, **query: Any) -> list[dict[str, Any]]:
    response = api.get("/api/tasks", params={"limit": 100, **query}, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def occurrences(database: Any, user: Any) -> list[dict[str, Any]]:
    with database.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT * FROM tasks WHERE user_id = :user ORDER BY id"), {"user": user.id}
        )
        return [dict(row._mapping) for row in rows]


def assert_one_next_occurrence(api: Any, user: Any, completed: dict[str, Any]) -> dict[str, Any]:
    """The completed task has exactly one next occurrence, a copy due the right Monday."""
    assert completed["completed"] is True
    assert completed["next_task_id"] is not None
    everything = tasks_of(api, user)
    assert len(everything) == 2, everything
    following = api.get(f"/api/tasks/{completed['next_task_id']}", headers=user.headers).json()
    for field in ("title", "description", "priority", "tags", "recurrence"):
        assert following[field] == completed[field], field
    assert following["completed"] is False and following["next_task_id"] is None
    completed_at = instant(completed["completed_at"])
    expected = next_monday_after(max(instant(completed["due_date"]), completed_at))
    assert instant(following["due_date"]) == expected
    # the reminder keeps its offset from the due date
    offset = instant(completed["due_date"]) - instant(completed["remind_at"])
    assert instant(following["due_date"]) - instant(following["remind_at"]) == offset
    assert following["reminded_at"] is None
    return following


# --- every completion path ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "complete",
    [
        pytest.param(
            lambda api, path, h: api.patch(path, json={"completed": True}, headers=h),
            id="PATCH completed",
        ),
        pytest.param(
            lambda api, path, h: api.patch(f"{path}/complete", headers=h),
            id="PATCH /complete toggle",
        ),
        pytest.param(
            lambda api, path, h: api.patch(f"{path}/complete", json={"completed": True}, headers=h),
            id="PATCH /complete explicit",
        ),
        pytest.param(
            lambda api, path, h: api.put(path, json={**WEEKLY, "completed": True}, headers=h),
            id="PUT",
        ),
    ],
)
def test_each_rest_completion_creates_exactly_one_next_occurrence(tasks_api, user, complete):
    # Given a weekly task due on a Monday, with a reminder an hour before
    task = tasks_api.post("/api/tasks", json=WEEKLY, headers=user.headers).json()
    path = f"/api/tasks/{task['id']}"
    # When it is completed
    response = complete(tasks_api, path, user.headers)
    # Then the answer shows it completed with its next occurrence, which exists once
    assert response.status_code == 200, response.text
    assert_one_next_occurrence(tasks_api, user, response.json())


def test_the_canonical_path_completes_the_same_way(tasks_api, user):
    task = tasks_api.post(f"/api/{user.id}/tasks", json=WEEKLY, headers=user.headers).json()
    done = tasks_api.patch(f"/api/{user.id}/tasks/{task['id']}/complete", headers=user.headers)
    assert_one_next_occurrence(tasks_api, user, done.json())


def test_the_chat_tool_completion_creates_exactly_one_next_occurrence(tasks_api, user, database):
    # Given a weekly task added by the add_task tool ("every Monday", reminded an hour before)
    context = ToolContext(db=database, user_id=user.id)
    added = execute_tool(context, "add_task", {k: v for k, v in WEEKLY.items()})
    assert added["status"] == "created" and added["recurrence"] == "FREQ=WEEKLY;BYDAY=MO"
    assert added["remind_at"] == "2026-11-23T08:00:00Z"
    # When the complete_task tool completes it
    done = execute_tool(context, "complete_task", {"task_id": added["task_id"]})
    # Then it says so, naming the next occurrence, which exists once
    assert done["status"] == "completed" and done["next_task_id"] is not None
    completed = tasks_api.get(f"/api/tasks/{added['task_id']}", headers=user.headers).json()
    following = assert_one_next_occurrence(tasks_api, user, completed)
    assert following["id"] == done["next_task_id"]
    # and completing it again through the tool creates nothing more
    again = execute_tool(context, "complete_task", {"task_id": added["task_id"]})
    assert again["status"] == "completed"
    assert len(tasks_of(tasks_api, user)) == 2


def test_update_task_tool_sets_and_clears_a_recurrence(user, database):
    context = ToolContext(db=database, user_id=user.id)
    added = execute_tool(context, "add_task", {"title": "Gym", "due_date": "2026-12-01"})
    updated = execute_tool(
        context,
        "update_task",
        {"task_id": added["task_id"], "recurrence": "freq=daily;count=3", "remind_at": None},
    )
    assert updated["recurrence"] == "FREQ=DAILY;COUNT=3"
    refused = execute_tool(context, "update_task", {"task_id": added["task_id"], "due_date": "x"})
    assert "error" in refused
    bad = execute_tool(context, "add_task", {"title": "Bad", "recurrence": "FREQ=HOURLY"})
    assert "FREQ must be one of" in bad["error"]
    without_due = execute_tool(context, "add_task", {"title": "No due", "recurrence": "FREQ=DAILY"})
    assert "needs a due_date" in without_due["error"]
    # A recurrence on a task without a due date, set by update_task: the database's rule, told
    # to the model as an error (not raised)
    plain = execute_tool(context, "add_task", {"title": "Plain"})
    refused = execute_tool(
        context, "update_task", {"task_id": plain["task_id"], "recurrence": "FREQ=DAILY"}
    )
    assert refused == {"error": "a recurring task needs a due_date"}


def test_reopening_and_completing_again_creates_no_second_occurrence(tasks_api, user, database):
    # Given a weekly task completed once
    task = tasks_api.post("/api/tasks", json=WEEKLY, headers=user.headers).json()
    path = f"/api/tasks/{task['id']}"
    first = tasks_api.patch(f"{path}/complete", headers=user.headers).json()
    # When it is toggled back and forth, and completed by every route
    for _ in range(3):
        tasks_api.patch(f"{path}/complete", headers=user.headers)
    tasks_api.patch(path, json={"completed": False}, headers=user.headers)
    tasks_api.patch(path, json={"completed": True}, headers=user.headers)
    tasks_api.put(path, json={**WEEKLY, "completed": False}, headers=user.headers)
    last = tasks_api.put(path, json={**WEEKLY, "completed": True}, headers=user.headers).json()
    # Then there is still exactly one next occurrence, the first one
    assert last["next_task_id"] == first["next_task_id"]
    assert len(occurrences(database, user)) == 2


def test_completing_the_next_occurrence_creates_the_one_after(tasks_api, user):
    task = tasks_api.post("/api/tasks", json=WEEKLY, headers=user.headers).json()
    done = tasks_api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers).json()
    second = tasks_api.patch(f"/api/tasks/{done['next_task_id']}/complete", headers=user.headers)
    third = tasks_api.get(f"/api/tasks/{second.json()['next_task_id']}", headers=user.headers)
    due_second = instant(second.json()["due_date"])
    assert instant(third.json()["due_date"]) == next_monday_after(
        max(due_second, instant(second.json()["completed_at"]))
    )
    assert len(tasks_of(tasks_api, user)) == 3


def test_a_future_occurrence_completed_early_moves_one_week(tasks_api, user):
    # Given a weekly task due on a Monday well in the future, completed today
    task = tasks_api.post(
        "/api/tasks",
        json={**WEEKLY, "due_date": "2099-01-05T09:00:00Z", "remind_at": None},
        headers=user.headers,
    ).json()
    done = tasks_api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers).json()
    following = tasks_api.get(f"/api/tasks/{done['next_task_id']}", headers=user.headers).json()
    # Then the next one is due exactly a week after it, with no reminder
    assert following["due_date"] == "2099-01-12T09:00:00Z"
    assert following["remind_at"] is None


def test_count_is_decremented_and_the_last_occurrence_has_no_successor(tasks_api, user):
    body = {
        "title": "Pills",
        "due_date": "2099-03-01T08:00:00Z",
        "recurrence": "FREQ=DAILY;COUNT=2",
    }
    task = tasks_api.post("/api/tasks", json=body, headers=user.headers).json()
    done = tasks_api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers).json()
    last = tasks_api.get(f"/api/tasks/{done['next_task_id']}", headers=user.headers).json()
    assert (last["recurrence"], last["due_date"]) == ("FREQ=DAILY;COUNT=1", "2099-03-02T08:00:00Z")
    finished = tasks_api.patch(f"/api/tasks/{last['id']}/complete", headers=user.headers).json()
    assert finished["completed"] is True and finished["next_task_id"] is None
    assert len(tasks_of(tasks_api, user)) == 2


def test_a_rule_past_until_creates_nothing(tasks_api, user):
    body = {
        "title": "Old",
        "due_date": "2020-01-06T09:00:00Z",
        "recurrence": "FREQ=WEEKLY;UNTIL=20200301",
    }
    task = tasks_api.post("/api/tasks", json=body, headers=user.headers).json()
    done = tasks_api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers).json()
    assert done["completed"] is True and done["next_task_id"] is None
    assert len(tasks_of(tasks_api, user)) == 1


def test_an_until_before_the_year_1000_round_trips_and_completes(tasks_api, user):
    # Given a rule whose UNTIL is in the year 26 (a typo for 2026): stored zero-padded
    body = {"title": "Typo", "due_date": "2026-01-05", "recurrence": "FREQ=DAILY;UNTIL=00261231"}
    created = tasks_api.post("/api/tasks", json=body, headers=user.headers)
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["recurrence"] == "FREQ=DAILY;UNTIL=00261231"
    # When it is completed, and its rule is sent back as returned
    done = tasks_api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers)
    again = tasks_api.put(
        f"/api/tasks/{task['id']}",
        json={"title": "Typo", "due_date": "2026-01-05", "recurrence": task["recurrence"]},
        headers=user.headers,
    )
    # Then both work, and no occurrence follows a rule that ended long ago
    assert done.status_code == 200, done.text
    assert done.json()["next_task_id"] is None
    assert again.status_code == 200, again.text


def test_a_yearly_reminder_shifted_past_the_year_9999_is_dropped(tasks_api, user):
    # Given a yearly task due in 9998 whose reminder is a year after its due date
    body = {
        "title": "Far",
        "due_date": "9998-12-01T00:00:00Z",
        "remind_at": "9999-12-01T00:00:00Z",
        "recurrence": "FREQ=YEARLY",
    }
    created = tasks_api.post("/api/tasks", json=body, headers=user.headers)
    assert created.status_code == 201, created.text
    # When it is completed: the next occurrence is due 9999-12-01, its reminder would be 10000
    done = tasks_api.patch(f"/api/tasks/{created.json()['id']}/complete", headers=user.headers)
    assert done.status_code == 200, done.text
    following = tasks_api.get(f"/api/tasks/{done.json()['next_task_id']}", headers=user.headers)
    # Then the next occurrence exists, readable, without a reminder
    assert following.status_code == 200, following.text
    assert following.json()["due_date"] == "9999-12-01T00:00:00Z"
    assert following.json()["remind_at"] is None
    assert tasks_api.get("/api/tasks", headers=user.headers).status_code == 200


def test_patch_completing_with_a_new_schedule_uses_the_new_one(tasks_api, user):
    # Given a weekly task; When one PATCH completes it and changes its due date and rule
    task = tasks_api.post("/api/tasks", json=WEEKLY, headers=user.headers).json()
    done = tasks_api.patch(
        f"/api/tasks/{task['id']}",
        json={"completed": True, "due_date": "2099-06-10T12:00:00Z", "recurrence": "FREQ=DAILY"},
        headers=user.headers,
    ).json()
    # Then the next occurrence follows the new schedule
    following = tasks_api.get(f"/api/tasks/{done['next_task_id']}", headers=user.headers).json()
    assert (following["due_date"], following["recurrence"]) == (
        "2099-06-11T12:00:00Z",
        "FREQ=DAILY",
    )


def test_creating_a_recurring_task_already_completed_creates_its_next_occurrence(tasks_api, user):
    body = {**WEEKLY, "due_date": "2099-01-05T09:00:00Z", "completed": True, "remind_at": None}
    created = tasks_api.post("/api/tasks", json=body, headers=user.headers)
    assert created.status_code == 201
    following = tasks_api.get(
        f"/api/tasks/{created.json()['next_task_id']}", headers=user.headers
    ).json()
    assert following["due_date"] == "2099-01-12T09:00:00Z" and following["completed"] is False
    # an idempotent repeat creates neither task again
    headers = {**user.headers, "Idempotency-Key": "weekly-done"}
    first = tasks_api.post("/api/tasks", json=body, headers=headers).json()
    again = tasks_api.post("/api/tasks", json=body, headers=headers).json()
    assert again == first
    assert len(tasks_of(tasks_api, user)) == 4


# --- validation ----------------------------------------------------------------------------------


def test_a_recurrence_needs_a_due_date(tasks_api, user):
    headers = user.headers
    refused = tasks_api.post(
        "/api/tasks", json={"title": "x", "recurrence": "FREQ=DAILY"}, headers=headers
    )
    assert refused.status_code == 422
    assert "needs a due_date" in refused.text
    task = tasks_api.post("/api/tasks", json=WEEKLY, headers=headers).json()
    path = f"/api/tasks/{task['id']}"
    for response in (
        tasks_api.put(path, json={"title": "x", "recurrence": "FREQ=DAILY"}, headers=headers),
        tasks_api.patch(path, json={"due_date": None}, headers=headers),
        tasks_api.patch(path, json={"due_date": None, "recurrence": "FREQ=DAILY"}, headers=headers),
    ):
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert isinstance(detail, list) and "due_date" in str(detail)
    # clearing both at once is fine
    cleared = tasks_api.patch(path, json={"due_date": None, "recurrence": None}, headers=headers)
    assert cleared.status_code == 200 and cleared.json()["recurrence"] is None
    # and a task without a due date cannot be given a rule
    plain = tasks_api.post("/api/tasks", json={"title": "plain"}, headers=headers).json()
    refused = tasks_api.patch(
        f"/api/tasks/{plain['id']}", json={"recurrence": "FREQ=DAILY"}, headers=headers
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "due_date"]


@pytest.mark.parametrize(
    ("recurrence", "message"),
    [
        ("FREQ=HOURLY", "FREQ must be one of"),
        ("FREQ=WEEKLY;BYSETPOS=1", "BYSETPOS is not supported"),
        ("FREQ=DAILY;COUNT=0", "COUNT must be between 1 and 1000"),
        (17, "must be an RRULE string"),
        ("FREQ=DAILY\x00", "must not contain control characters"),
    ],
)
def test_an_unsupported_rule_is_a_422_naming_the_part(tasks_api, user, recurrence, message):
    body = {"title": "x", "due_date": "2026-12-01", "recurrence": recurrence}
    response = tasks_api.post("/api/tasks", json=body, headers=user.headers)
    assert response.status_code == 422
    assert message in response.text


def test_the_stored_rule_is_normalised_and_filterable(tasks_api, user):
    body = {
        "title": "Rent",
        "due_date": "2026-12-01",
        "recurrence": "rrule:bymonthday=1;freq=monthly",
    }
    recurring = tasks_api.post("/api/tasks", json=body, headers=user.headers).json()
    assert recurring["recurrence"] == "FREQ=MONTHLY;BYMONTHDAY=1"
    plain = tasks_api.post("/api/tasks", json={"title": "Once"}, headers=user.headers).json()
    assert [t["id"] for t in tasks_of(tasks_api, user, recurring="true")] == [recurring["id"]]
    assert [t["id"] for t in tasks_of(tasks_api, user, recurring="false")] == [plain["id"]]
    maybe = tasks_api.get("/api/tasks", params={"recurring": "maybe"}, headers=user.headers)
    assert maybe.status_code == 422


# --- concurrency ---------------------------------------------------------------------------------


def _run_concurrently(count: int, work: Any) -> list[Any]:
    """Run `work(i)` in `count` threads released together, each with its own connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except Exception as error:  # surfaced by the assertions
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.fixture
def databases() -> Any:
    """Eight independent databases (engines), as eight Lambda containers would have."""
    import os

    from todo_backend.core.db import Database, create_database_engine

    created = [Database(create_database_engine(os.environ["DATABASE_URL"])) for _ in range(8)]
    yield created
    for database in created:
        database.engine.dispose()


@pytest.mark.parametrize("how", ["complete", "toggle", "tool"])
def test_eight_concurrent_completions_create_exactly_one_next_occurrence(
    task_factory, user, database, databases, how
):
    from todo_backend.tasks import service

    # Given a weekly task
    task = task_factory(
        user,
        "Concurrent",
        due_date=datetime(2026, 11, 23, 9, tzinfo=UTC),
        recurrence="FREQ=WEEKLY;BYDAY=MO",
    )

    # When eight containers complete it at the same moment
    def complete(index: int) -> Any:
        db = databases[index]
        if how == "tool":
            return execute_tool(ToolContext(db, user.id), "complete_task", {"task_id": task.id})
        target = None if how == "toggle" else True
        return service.set_completion(db, user.id, task.id, target)

    started = datetime.now(UTC)
    results = _run_concurrently(8, complete)

    # Then every call answered, and exactly one next occurrence exists, with one event each
    assert not [r for r in results if isinstance(r, Exception)], results
    rows = occurrences(database, user)
    assert len(rows) == 2
    first, following = rows
    assert first["next_task_id"] == following["id"]
    assert following["due_date"] == next_monday_after(max(first["due_date"], started))
    with database.engine.connect() as connection:
        kinds = connection.execute(
            text(
                "SELECT detail_type, count(*) FROM task_events WHERE user_id = :user "
                "GROUP BY detail_type"
            ),
            {"user": user.id},
        ).all()
    counts = dict(kinds)
    assert counts["Task Created"] == 2  # the task and its one next occurrence
    # every one of the eight changes wrote exactly one event; setting completed on a task that
    # another call has just completed is an update (toggles may reopen and complete it again)
    assert counts["Task Completed"] + counts.get("Task Updated", 0) == 8
    if how != "toggle":
        assert counts["Task Completed"] == 1


# --- through the chat endpoint -------------------------------------------------------------


def test_every_monday_through_chat_creates_one_next_occurrence(
    chat_api, tasks_api, fake_cohere, user
):
    from tests.fakes.cohere_server import text_reply, tool_calls_reply

    # Given a model that, asked for "every Monday, remind me an hour before", adds the task as the
    # system prompt tells it to, then completes it
    fake_cohere.script(
        tool_calls_reply(
            (
                "add_task",
                {
                    "title": "Team sync",
                    "due_date": "2026-11-23T09:00:00Z",
                    "recurrence": "FREQ=WEEKLY;BYDAY=MO",
                    "remind_at": "2026-11-23T08:00:00Z",
                },
            )
        ),
        text_reply("Added 'Team sync' every Monday at 09:00 UTC, reminding you at 08:00."),
    )
    first = chat_api.post(
        f"/api/{user.id}/chat",
        json={"message": "Team sync every Monday at 9, remind me an hour before"},
        headers=user.headers,
    )
    assert first.status_code == 200, first.text
    added = first.json()["tool_calls"][0]["result"]
    assert added["recurrence"] == "FREQ=WEEKLY;BYDAY=MO"
    system = fake_cohere.requests[0].json["messages"][0]["content"]
    assert "FREQ=WEEKLY;BYDAY=MO" in system and "remind_at" in system

    # When the user says it is done
    fake_cohere.script(
        tool_calls_reply(("complete_task", {"task_id": added["task_id"]})),
        text_reply("Done; the next one is on the calendar."),
    )
    done = chat_api.post(
        f"/api/{user.id}/chat",
        json={"message": "Team sync is done", "conversation_id": first.json()["conversation_id"]},
        headers=user.headers,
    )

    # Then exactly one next occurrence exists, on the right Monday, an hour's reminder before it
    assert done.status_code == 200, done.text
    result = done.json()["tool_calls"][0]["result"]
    assert result["status"] == "completed" and result["next_task_id"] is not None
    completed = tasks_api.get(f"/api/tasks/{added['task_id']}", headers=user.headers).json()
    following = assert_one_next_occurrence(tasks_api, user, completed)
    assert following["id"] == result["next_task_id"]
