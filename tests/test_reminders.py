"""Reminders: GET /api/reminders for a front end that polls, and the claim that the scheduled
function makes, exactly once per reminder even when two runs overlap."""

import os
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from tests.support.database import counted_statements
from todo_backend.core.db import Database, create_database_engine
from todo_backend.tasks.reminders import claim_due_reminders, claim_statement


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def later(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def reminder_events(database: Any, user: Any) -> list[int]:
    with database.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT task_id FROM task_events WHERE user_id = :user "
                "AND detail_type = 'Task Reminder Due' ORDER BY task_id"
            ),
            {"user": user.id},
        )
        return [row.task_id for row in rows]


def test_due_reminders_are_the_pending_tasks_whose_time_has_passed_soonest_first(
    tasks_api, user, other_user
):
    def create(owner: Any = user, **fields: Any) -> dict[str, Any]:
        response = tasks_api.post(
            "/api/tasks", json={"title": "t", **fields}, headers=owner.headers
        )
        assert response.status_code == 201, response.text
        return response.json()

    # Given reminders in the past (two), in the future, on a completed task, none, another user's
    recent = create(title="recent", remind_at=ago(minutes=1))
    oldest = create(title="oldest", remind_at=ago(days=2))
    create(title="future", remind_at=later(hours=1))
    create(title="done", remind_at=ago(hours=1), completed=True)
    create(title="no reminder")
    create(other_user, title="not mine", remind_at=ago(hours=1))

    # When the front end polls
    response = tasks_api.get("/api/reminders", headers=user.headers)

    # Then it gets the two due ones, soonest first, as full tasks
    assert response.status_code == 200
    body = response.json()
    assert [task["id"] for task in body["items"]] == [oldest["id"], recent["id"]]
    assert body["total"] == 2
    assert body["items"][0] == oldest
    canonical = tasks_api.get(f"/api/{user.id}/reminders", headers=user.headers)
    assert canonical.json() == body
    assert tasks_api.get(f"/api/{user.id}/reminders", headers=other_user.headers).status_code == 403


def test_changing_remind_at_clears_reminded_at_and_keeping_it_does_not(tasks_api, user, database):
    # Given a reminder that has been delivered
    remind_at = "2026-01-05T08:00:00Z"
    task = tasks_api.post(
        "/api/tasks", json={"title": "t", "remind_at": remind_at}, headers=user.headers
    ).json()
    path = f"/api/tasks/{task['id']}"
    claim_due_reminders(database)
    delivered = tasks_api.get(path, headers=user.headers).json()
    assert delivered["reminded_at"] is not None
    # When it is patched with the same time, or other fields change, it stays delivered
    same = tasks_api.patch(path, json={"remind_at": remind_at, "title": "u"}, headers=user.headers)
    assert same.json()["reminded_at"] == delivered["reminded_at"]
    put = tasks_api.put(path, json={"title": "v", "remind_at": remind_at}, headers=user.headers)
    assert put.json()["reminded_at"] == delivered["reminded_at"]
    # When the time changes, it is a new reminder: not delivered yet, and claimed again later
    moved = tasks_api.patch(path, json={"remind_at": ago(minutes=5)}, headers=user.headers)
    assert moved.json()["reminded_at"] is None
    assert [t.id for t in claim_due_reminders(database) if t.id == task["id"]] == [task["id"]]
    # When it is removed, so is its delivery
    cleared = tasks_api.patch(path, json={"remind_at": None}, headers=user.headers).json()
    assert (cleared["remind_at"], cleared["reminded_at"]) == (None, None)
    assert reminder_events(database, user) == [task["id"], task["id"]]


def test_a_claim_is_one_statement_and_each_reminder_is_claimed_once(task_factory, user, database):
    # Given three due reminders and one in the future
    due = [
        task_factory(user, f"due {i}", remind_at=datetime.now(UTC) - timedelta(minutes=i + 1))
        for i in range(3)
    ]
    task_factory(user, "future", remind_at=datetime.now(UTC) + timedelta(hours=1))
    # When the claim runs twice
    with counted_statements(database) as statements:
        first = [task.id for task in claim_due_reminders(database)]
    second = [t.id for t in claim_due_reminders(database)]
    # Then the first claimed the three due ones in one statement, the second none of them
    assert {t.id for t in due} <= set(first)
    assert len(statements) == 1
    assert "FOR UPDATE SKIP LOCKED" in statements[0]
    assert not {t.id for t in due} & set(second)
    assert reminder_events(database, user) == sorted(t.id for t in due)


def test_two_overlapping_runs_claim_each_reminder_exactly_once(task_factory, user, database):
    # Given twelve due reminders
    due = {
        task_factory(user, f"r{i}", remind_at=datetime.now(UTC) - timedelta(seconds=i + 1)).id
        for i in range(12)
    }
    # When run A has claimed five (its transaction still open, as a run in progress) and run B
    # claims meanwhile
    engine = create_database_engine(os.environ["DATABASE_URL"], autocommit=False)
    try:
        with engine.connect() as run_a:
            claimed_a = {row.id for row in run_a.execute(claim_statement(5))}
            claimed_b = {task.id for task in claim_due_reminders(database, limit=1000)}
            run_a.commit()
    finally:
        engine.dispose()
    # and a third run comes after both
    claimed_c = {task.id for task in claim_due_reminders(database, limit=1000)}

    # Then B skipped what A held, and together they claimed every reminder exactly once
    mine_a, mine_b = claimed_a & due, claimed_b & due
    assert not mine_a & mine_b
    assert mine_a | mine_b == due
    assert not claimed_c & due
    assert reminder_events(database, user) == sorted(due)


def test_many_concurrent_runs_claim_each_reminder_exactly_once(task_factory, user, database):
    # Given sixty due reminders, and four runs claiming five at a time until none is left
    due = {
        task_factory(user, f"c{i}", remind_at=datetime.now(UTC) - timedelta(seconds=i)).id
        for i in range(60)
    }
    url = os.environ["DATABASE_URL"]
    runs = [Database(create_database_engine(url)) for _ in range(4)]
    claimed: list[list[int]] = [[] for _ in runs]
    barrier = threading.Barrier(len(runs))

    def run(index: int) -> None:
        barrier.wait()
        while batch := claim_due_reminders(runs[index], limit=5):
            claimed[index] += [task.id for task in batch]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(runs))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for db in runs:
            db.engine.dispose()
    # Then each was claimed by exactly one run, once, with exactly one event
    mine = [task_id for per_run in claimed for task_id in per_run if task_id in due]
    assert sorted(mine) == sorted(due)
    assert reminder_events(database, user) == sorted(due)
