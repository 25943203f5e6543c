"""Task events: every change writes exactly one outbox event in its own statement, and the relay
publishes them to an EventBridge bus (moto) whose rule routes them to an SQS queue, where these
tests read them. Failures: an entry EventBridge rejects is retried by a later run, never dropped;
a run that crashes between PutEvents and marking the events publishes them again, same event_id.

The AWS SDK's own event hooks (botocore, not our code) inject the failures: one rewrites a
request entry so that EventBridge rejects it, another raises after EventBridge has accepted.
"""

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.event_bus import BUS, REGION, Bus, moto_bus
from tests.support.lambda_events import LambdaContext
from todo_backend.tasks.tools import ToolContext, execute_tool

# --- helpers ------------------------------------------------------------------------------------


def outbox(database: Any, **where: Any) -> list[dict[str, Any]]:
    """The outbox rows matching `where` (column = value), oldest first."""
    conditions = " AND ".join(f"{column} = :{column}" for column in where) or "true"
    with database.engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT * FROM task_events WHERE {conditions} ORDER BY id"), where
        )
        return [dict(row._mapping) for row in rows]


def mark_backlog_relayed(database: Any) -> None:
    """Events other tests left pending are not these tests' concern: keep them out of the way."""
    with database.engine.connect() as connection:
        connection.execute(
            text("UPDATE task_events SET relayed_at = now() WHERE relayed_at IS NULL")
        )


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch, database: Any) -> Iterator[Bus]:
    """A moto EventBridge bus with one rule sending every `todo.tasks` event to an SQS queue."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    mark_backlog_relayed(database)
    with moto_bus() as started:
        yield started


def retries_fall_due(database: Any) -> None:
    """Time passes: every event waiting for a retry is due now."""
    with database.engine.connect() as connection:
        connection.execute(
            text("UPDATE task_events SET next_attempt_at = now() WHERE next_attempt_at > now()")
        )


def relay(database: Any, bus: Bus, **options: Any) -> Any:
    from todo_backend.events.relay import relay_pending_events

    return relay_pending_events(database, BUS, bus.events, **options)


# --- every change, exactly one event --------------------------------------------------------------


def test_every_change_writes_exactly_one_event_carrying_the_task_as_returned(
    tasks_api, user, database
):
    # Given a user, When they create, edit, replace, complete, reopen and delete a task
    created = tasks_api.post(
        "/api/tasks",
        json={"title": "Pay rent", "tags": ["home"], "due_date": "2026-12-01T09:30:00.25Z"},
        headers=user.headers,
    ).json()
    path = f"/api/tasks/{created['id']}"
    returned = [created]
    edit = {"priority": "high", "due_date": "2026-12-02T10:00:00Z", "remind_at": "2026-12-02"}
    returned.append(tasks_api.patch(path, json=edit, headers=user.headers).json())
    assert returned[-1]["due_date"] == "2026-12-02T10:00:00Z"  # no fraction: none in the event
    returned.append(
        tasks_api.put(path, json={"title": "Pay the rent"}, headers=user.headers).json()
    )
    returned.append(tasks_api.patch(f"{path}/complete", headers=user.headers).json())
    returned.append(tasks_api.patch(f"{path}/complete", headers=user.headers).json())
    # (changes that change nothing write nothing: an empty PATCH, another user's attempt)
    assert tasks_api.patch(path, json={}, headers=user.headers).status_code == 200
    other = {"Authorization": f"Bearer {_token('someone-else')}"}
    assert tasks_api.delete(path, headers=other).status_code == 404
    deleted = tasks_api.get(path, headers=user.headers).json()
    assert tasks_api.delete(path, headers=user.headers).status_code == 204
    returned.append(deleted)

    # Then the outbox holds exactly one event per change, in order, each with the task exactly as
    # the API returned it
    events = outbox(database, task_id=created["id"])
    assert [event["detail_type"] for event in events] == [
        "Task Created",
        "Task Updated",
        "Task Updated",
        "Task Completed",
        "Task Updated",
        "Task Deleted",
    ]
    assert [event["task"] for event in events] == returned
    assert all(event["user_id"] == user.id for event in events)
    assert len({event["event_id"] for event in events}) == len(events)
    assert all(event["relayed_at"] is None for event in events)


def _token(subject: str) -> str:
    from tests.support.tokens import make_token

    return make_token(subject)


def test_an_idempotent_repeat_and_a_failed_change_write_no_event(tasks_api, user, database):
    # Given a task created with an Idempotency-Key
    headers = {**user.headers, "Idempotency-Key": "once"}
    first = tasks_api.post("/api/tasks", json={"title": "Once"}, headers=headers)
    # When the same request is repeated, and an invalid change is refused
    again = tasks_api.post("/api/tasks", json={"title": "Once"}, headers=headers)
    refused = tasks_api.patch(
        f"/api/tasks/{first.json()['id']}",
        json={"recurrence": "FREQ=DAILY"},  # no due date: refused by the database's rule
        headers=user.headers,
    )
    # Then only the creation wrote an event
    assert (first.status_code, again.status_code, refused.status_code) == (201, 200, 422)
    assert [event["detail_type"] for event in outbox(database, user_id=user.id)] == ["Task Created"]


def test_tool_changes_write_their_events_too(user, database):
    # Given the chat tools acting for a user
    context = ToolContext(db=database, user_id=user.id)
    # When a tool adds a weekly task and another completes it
    added = execute_tool(
        context,
        "add_task",
        {"title": "Team sync", "due_date": "2026-11-23T10:00:00Z", "recurrence": "FREQ=WEEKLY"},
    )
    done = execute_tool(context, "complete_task", {"task_id": added["task_id"]})
    # Then: created, completed, and the next occurrence created, one event each
    events = outbox(database, user_id=user.id)
    assert [(event["detail_type"], event["task_id"]) for event in events] == [
        ("Task Created", added["task_id"]),
        ("Task Completed", added["task_id"]),
        ("Task Created", done["next_task_id"]),
    ]
    assert events[2]["task"]["recurrence"] == "FREQ=WEEKLY"


# --- relayed to EventBridge, read from SQS ---------------------------------------------------


def test_events_reach_an_sqs_queue_through_a_rule_on_the_bus(tasks_api, user, database, bus):
    # Given two changes recorded in the outbox
    task = tasks_api.post("/api/tasks", json={"title": "Ship it"}, headers=user.headers).json()
    done = tasks_api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers).json()
    recorded = outbox(database, user_id=user.id)

    # When the relay runs
    report = relay(database, bus)

    # Then both events reach the queue through the rule, as the contract describes them
    assert (report.published, report.failed) == (2, 0)
    messages = sorted(bus.received(), key=lambda m: m["detail"]["occurred_at"])
    assert [m["source"] for m in messages] == ["todo.tasks", "todo.tasks"]
    assert [m["detail-type"] for m in messages] == ["Task Created", "Task Completed"]
    for message, event, state in zip(messages, recorded, (task, done), strict=True):
        detail = message["detail"]
        assert set(detail) == {"event_id", "user_id", "task_id", "sequence", "occurred_at", "task"}
        assert detail["event_id"] == str(event["event_id"])
        assert (detail["user_id"], detail["task_id"]) == (user.id, task["id"])
        assert detail["task"] == state
        assert detail["occurred_at"].endswith("Z")
    assert [m["detail"]["sequence"] for m in messages] == [1, 2]
    # and they are marked relayed: the next run publishes nothing
    assert all(event["relayed_at"] is not None for event in outbox(database, user_id=user.id))
    assert relay(database, bus).published == 0
    assert bus.received() == []


def test_an_entry_eventbridge_rejects_is_retried_by_the_next_run_not_dropped(
    tasks_api, user, database, bus
):
    # Given three events, and EventBridge rejecting the second one once
    for title in ("one", "two", "three"):
        tasks_api.post("/api/tasks", json={"title": title}, headers=user.headers)
    events = outbox(database, user_id=user.id)
    rejected = str(events[1]["event_id"])
    rejections = []

    def corrupt_once(params: dict[str, Any], **_: Any) -> None:
        for entry in params["Entries"]:
            if rejected in entry["Detail"] and not rejections:
                entry["Detail"] = "{not json"  # EventBridge answers MalformedDetail
                rejections.append(entry)

    bus.events.meta.events.register("provide-client-params.events.PutEvents", corrupt_once)

    # When the relay runs
    first = relay(database, bus)
    # Then the other two are published and marked; the rejected one stays pending, with its error
    assert (first.published, first.failed) == (2, 1)
    after_first = {str(e["event_id"]): e for e in outbox(database, user_id=user.id)}
    assert after_first[rejected]["relayed_at"] is None
    assert after_first[rejected]["last_error"] == "MalformedDetail"
    assert sum(e["relayed_at"] is not None for e in after_first.values()) == 2

    assert after_first[rejected]["next_attempt_at"] is not None
    # When a run comes before its retry is due, it leaves it waiting
    assert relay(database, bus).published == 0
    # When the next run comes after the delay
    retries_fall_due(database)
    second = relay(database, bus)
    # Then it is published: each event reached the queue exactly once
    assert (second.published, second.failed) == (1, 0)
    delivered = [m["detail"]["event_id"] for m in bus.received()]
    assert sorted(delivered) == sorted(str(e["event_id"]) for e in events)
    assert all(e["relayed_at"] is not None for e in outbox(database, user_id=user.id))


class Crash(Exception):
    """The relay's container dies right after EventBridge accepted the events."""


def test_a_crash_between_put_and_mark_delivers_again_with_the_same_event_id(
    tasks_api, user, database, bus
):
    # Given an event, and a relay that crashes after PutEvents succeeded
    tasks_api.post("/api/tasks", json={"title": "Crash test"}, headers=user.headers)
    [event] = outbox(database, user_id=user.id)

    def crash(**_: Any) -> None:
        raise Crash

    bus.events.meta.events.register("after-call.events.PutEvents", crash)
    with pytest.raises(Crash):
        relay(database, bus, lease_seconds=1)
    bus.events.meta.events.unregister("after-call.events.PutEvents", crash)
    first_delivery = bus.received()
    assert [m["detail"]["event_id"] for m in first_delivery] == [str(event["event_id"])]
    [pending] = outbox(database, user_id=user.id)
    assert pending["relayed_at"] is None

    # When another run starts while the crashed run's lease holds, it leaves the event alone
    assert relay(database, bus).published == 0
    # When the lease has ended, the next run publishes it again
    time.sleep(1.1)
    again = relay(database, bus)

    # Then it was delivered at least once (here twice), always with the same event_id
    assert again.published == 1
    second_delivery = bus.received()
    assert [m["detail"]["event_id"] for m in second_delivery] == [str(event["event_id"])]
    assert second_delivery[0]["detail"] == first_delivery[0]["detail"]
    [relayed] = outbox(database, user_id=user.id)
    assert relayed["relayed_at"] is not None
    assert relayed["attempts"] == 2


def test_a_failed_putevents_call_releases_the_events_for_the_next_run(
    tasks_api, user, database, bus
):
    # Given an event, and a PutEvents call that fails as a whole (the bus is missing)
    tasks_api.post("/api/tasks", json={"title": "No bus"}, headers=user.headers)
    from todo_backend.events.relay import relay_pending_events

    # When the relay publishes to a bus that does not exist
    failed = relay_pending_events(database, "no-such-bus", bus.events)
    # Then nothing is lost: the event is released (not leased) for a retry after a delay, and a
    # later run publishes it
    assert failed.published == 0 and failed.failed >= 1
    [pending] = outbox(database, user_id=user.id)
    assert pending["relayed_at"] is None and pending["claimed_until"] is None
    assert pending["last_error"] == "ResourceNotFoundException"
    assert pending["next_attempt_at"] is not None and pending["attempts"] == 1
    retries_fall_due(database)
    assert relay(database, bus).published >= 1
    assert [m["detail"]["task"]["title"] for m in bus.received()] == ["No bus"]


# --- the reminders function ------------------------------------------------------------------


def test_a_due_reminder_is_listed_and_published_once_through_the_scheduled_function(
    tasks_api, user, database, bus, configure
):
    # Given a task whose reminder time has passed, and the reminders function configured with the
    # bus
    task = tasks_api.post(
        "/api/tasks",
        json={"title": "Call mum", "remind_at": "2026-01-01T08:00:00Z"},
        headers=user.headers,
    ).json()
    configure(EVENT_BUS_NAME=BUS)
    from todo_backend.events.relay import events_client

    events_client.cache_clear()
    from functions.reminders.app import handler

    # When the front end polls for reminders
    listed = tasks_api.get("/api/reminders", headers=user.headers).json()
    # Then it is there
    assert [item["id"] for item in listed["items"]] == [task["id"]]

    # When the scheduled function runs twice
    first = handler({"source": "aws.scheduler"}, LambdaContext())
    second = handler({"source": "aws.scheduler"}, LambdaContext())
    events_client.cache_clear()

    # Then the reminder was claimed once, and its event (with the task) reached the queue once
    assert first["reminders_claimed"] >= 1 and first["events_published"] >= 2
    assert second["reminders_claimed"] == 0 and second["events_published"] == 0
    messages = [m for m in bus.received() if m["detail"]["user_id"] == user.id]
    assert [m["detail-type"] for m in messages].count("Task Reminder Due") == 1
    reminder = next(m for m in messages if m["detail-type"] == "Task Reminder Due")
    assert reminder["detail"]["task"]["id"] == task["id"]
    assert reminder["detail"]["task"]["reminded_at"] is not None
    # and the API shows it delivered (still listed: it is not completed)
    after = tasks_api.get(f"/api/tasks/{task['id']}", headers=user.headers).json()
    assert after["reminded_at"] == reminder["detail"]["task"]["reminded_at"]
    assert tasks_api.get("/api/reminders", headers=user.headers).json()["total"] == 1


def test_without_a_bus_the_function_claims_reminders_and_keeps_events_recorded(
    task_factory, user, database, configure
):
    # Given a due reminder and no EVENT_BUS_NAME
    from datetime import UTC, datetime, timedelta

    task = task_factory(user, "Water plants", remind_at=datetime.now(UTC) - timedelta(minutes=1))
    configure(EVENT_BUS_NAME=None)
    from functions.reminders.app import handler

    # When the function runs
    outcome = handler({}, LambdaContext())
    # Then it claimed the reminder, and its event waits in the outbox
    assert outcome["reminders_claimed"] >= 1 and "events_published" not in outcome
    kinds = [(e["detail_type"], e["relayed_at"]) for e in outbox(database, task_id=task.id)]
    assert kinds == [("Task Created", None), ("Task Reminder Due", None)]
