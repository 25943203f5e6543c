"""The relay under faults: rejected entries retried with growing delays and parked after
EVENT_MAX_ATTEMPTS tries, each event tried at most once a run, failing events never holding up
other tasks', a task's events published in order with gap-free `sequence` numbers, a relay killed
between PutEvents and settling (through the TCP proxy), and the scheduled function's retention.

EventBridge is moto's; rejections are injected by botocore's event hooks (an entry with invalid
JSON, which EventBridge rejects with `MalformedDetail`), never by patching our code.
"""

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.database import counted_statements
from tests.support.event_bus import BUS, REGION, Bus, PutEventsRecorder, moto_bus
from tests.support.lambda_events import LambdaContext
from tests.support.pg_proxy import PgProxy
from todo_backend.events.relay import relay_pending_events

# --- helpers ------------------------------------------------------------------------------------


def sql(database: Any, statement: str, **parameters: Any) -> list[dict[str, Any]]:
    with database.engine.connect() as connection:
        result = connection.execute(text(statement), parameters)
        return [dict(row._mapping) for row in result] if result.returns_rows else []


def events_of(database: Any, user_id: str) -> list[dict[str, Any]]:
    return sql(database, "SELECT * FROM task_events WHERE user_id = :u ORDER BY id", u=user_id)


def time_passes(database: Any) -> None:
    """Every retry delay has run out."""
    sql(database, "UPDATE task_events SET next_attempt_at = now() WHERE next_attempt_at > now()")


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch, database: Any) -> Iterator[Bus]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    # Events other tests left pending are not these tests' concern.
    sql(database, "UPDATE task_events SET relayed_at = now() WHERE relayed_at IS NULL")
    with moto_bus() as started:
        yield started


@pytest.fixture
def recorder(bus: Bus) -> Iterator[PutEventsRecorder]:
    recording = PutEventsRecorder(bus.events)
    yield recording
    recording.close()


def relay(database: Any, bus: Bus, **options: Any) -> Any:
    return relay_pending_events(database, BUS, bus.events, **options)


def by_title(prefix: str) -> Any:
    return lambda detail: detail["task"]["title"].startswith(prefix)


# --- poison events never jam the relay ------------------------------------------------------------


def test_poison_events_ahead_of_good_ones_back_off_and_are_parked_without_holding_them_up(
    task_factory, user, database, bus, recorder
):
    # Given 100 tasks whose events EventBridge always rejects, created before 5 good ones
    for n in range(100):
        task_factory(user, f"poison {n}")
    for n in range(5):
        task_factory(user, f"good {n}")
    recorder.reject = by_title("poison")

    # When the relay runs
    first = relay(database, bus)

    # Then the 5 good events are published in this one run, each event was tried exactly once,
    # in 11 PutEvents calls (105 entries, 10 a call), and the 100 wait for a retry
    assert (first.published, first.failed, first.parked) == (5, 100, 0)
    assert len(recorder.calls) == 11
    tried = [detail["event_id"] for call in recorder.calls for detail in call]
    assert len(tried) == len(set(tried)) == 105
    events = events_of(database, user.id)
    assert all(e["attempts"] == 1 for e in events)
    poison = [e for e in events if e["task"]["title"].startswith("poison")]
    assert all(e["relayed_at"] is None and e["next_attempt_at"] is not None for e in poison)
    assert {e["last_error"] for e in poison} == {"MalformedDetail"}
    assert sorted(d["task"]["title"] for d in recorder.accepted()) == [
        f"good {n}" for n in range(5)
    ]

    # When runs come before the retry is due: no call at all (no load while EventBridge rejects)
    assert relay(database, bus).failed == 0
    assert len(recorder.calls) == 11

    # When the delays run out, run after run, until the tenth try
    delays = []
    for attempt in range(2, 11):
        time_passes(database)
        calls_before = len(recorder.calls)
        report = relay(database, bus)
        # Then each run tries each poison event once more (10 calls), and only once
        assert len(recorder.calls) - calls_before == 10
        events = events_of(database, user.id)
        poison = [e for e in events if e["task"]["title"].startswith("poison")]
        assert {e["attempts"] for e in poison} == {attempt}
        if attempt < 10:
            assert report.parked == 0
            [delay] = sql(
                database,
                "SELECT extract(epoch FROM max(next_attempt_at) - now()) AS s FROM task_events "
                "WHERE user_id = :u",
                u=user.id,
            )
            delays.append(round(float(delay["s"])))  # (less the few ms since the settle)

    # Then the delays grew (30 s after the first try, doubling, at most an hour), and the tenth
    # rejection parked them all
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert report.parked == 100
    assert all(e["failed_at"] is not None for e in poison)
    assert all(e["next_attempt_at"] is None for e in poison)

    # And a parked event is never tried again
    time_passes(database)
    calls_before = len(recorder.calls)
    assert relay(database, bus).published == 0
    assert len(recorder.calls) == calls_before


def test_a_rejected_event_holds_back_its_own_task_only_and_order_is_kept(
    tasks_api, user, database, bus, recorder
):
    # Given task A created, edited and completed, and task B created; EventBridge rejects A's
    # first event once
    a = tasks_api.post("/api/tasks", json={"title": "A"}, headers=user.headers).json()
    b = tasks_api.post("/api/tasks", json={"title": "B"}, headers=user.headers).json()
    tasks_api.patch(f"/api/tasks/{a['id']}", json={"priority": "high"}, headers=user.headers)
    tasks_api.patch(f"/api/tasks/{a['id']}/complete", headers=user.headers)
    rejected: list[str] = []

    def once(detail: dict[str, Any]) -> bool:
        if detail["task_id"] == a["id"] and not rejected:
            rejected.append(detail["event_id"])
            return True
        return False

    recorder.reject = once

    # When the relay runs
    first = relay(database, bus)
    # Then B's event is published; A's later events wait behind its rejected first one
    assert (first.published, first.failed) == (1, 1)
    assert [(d["task_id"], d["sequence"]) for d in recorder.accepted()] == [(b["id"], 1)]
    waiting = [e for e in events_of(database, user.id) if e["task_id"] == a["id"]]
    assert [(e["sequence"], e["attempts"]) for e in waiting] == [(1, 1), (2, 0), (3, 0)]

    # When the retry is due and the relay runs again
    time_passes(database)
    second = relay(database, bus)

    # Then A's three events are published in the order they happened, one call after another,
    # the first with the event_id it was rejected with
    assert second.published == 3
    published_a = [d for d in recorder.accepted() if d["task_id"] == a["id"]]
    assert [d["sequence"] for d in published_a] == [1, 2, 3]
    assert published_a[0]["event_id"] == rejected[0]
    # (no PutEvents call ever carries two events of one task)
    assert all(len({d["task_id"] for d in call}) == len(call) for call in recorder.calls)
    # and the queue got each event once, every task's in sequence
    messages = [m["detail"] for m in bus.received()]
    assert sorted((m["task_id"], m["sequence"]) for m in messages) == sorted(
        [(a["id"], 1), (a["id"], 2), (a["id"], 3), (b["id"], 1)]
    )


def test_a_backlog_of_many_tasks_is_cleared_in_one_run_settling_once_per_claim(
    task_factory, user, database, bus, recorder
):
    # Given 300 tasks with three events each (created, then two edits), interleaved
    from todo_backend.tasks.models import TaskUpdate
    from todo_backend.tasks.service import update_task

    tasks = [task_factory(user, f"backlog {n}") for n in range(300)]
    for priority in ("high", "low"):
        for task in tasks:
            update_task(database, user.id, task.id, TaskUpdate(priority=priority))
    # When one run relays with claims of 100 events
    with counted_statements(database) as statements:
        report = relay(database, bus, batch=100)

    # Then all 900 are published in that run, in 9 claims of 100 (each task's events in order),
    # each claim settled by one statement, plus the claim that found nothing left
    assert report.published == 900 and report.claims == 9
    claims = [s for s in statements if "WITH claimable" in s]
    settles = [s for s in statements if "SET relayed_at" in s]
    assert (len(claims), len(settles), len(statements)) == (10, 9, 19)
    order: dict[int, list[int]] = {}
    for detail in recorder.accepted():
        order.setdefault(detail["task_id"], []).append(detail["sequence"])
    assert set(map(tuple, order.values())) == {(1, 2, 3)}
    assert all(e["relayed_at"] is not None for e in events_of(database, user.id))


# --- sequence numbers ---------------------------------------------------------------------------


def test_sequence_numbers_are_unique_and_gap_free_under_concurrent_changes_and_pruning(
    task_factory, user, database
):
    # Given a task, and 6 writers with their own connections
    from todo_backend.core.db import Database, create_database_engine
    from todo_backend.retention.prune import Retention, prune
    from todo_backend.tasks.models import TaskUpdate
    from todo_backend.tasks.service import delete_task, set_completion, update_task

    task = task_factory(user, "contended")
    url = os.environ["DATABASE_URL"]
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        db = Database(create_database_engine(url))
        try:
            start.wait()
            for i in range(10):
                if i % 3 == 0:
                    set_completion(db, user.id, task.id)
                else:
                    update_task(db, user.id, task.id, TaskUpdate(description=f"{n}-{i}"))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        finally:
            db.engine.dispose()

    # When they change it 60 times at once
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then its 61 events are numbered 1..61, each number once
    assert errors == []
    assert [e["sequence"] for e in events_of(database, user.id)] == list(range(1, 62))

    # When its events are relayed and pruned, and it is changed and deleted afterwards
    sql(
        database,
        "UPDATE task_events SET relayed_at = now() - interval '8 days' WHERE user_id = :u",
        u=user.id,
    )
    prune(database, Retention(event_days=7, chat_record_days=30))
    assert events_of(database, user.id) == []
    update_task(database, user.id, task.id, TaskUpdate(title="after pruning"))
    delete_task(database, user.id, task.id)
    # Then the numbering goes on from the task's counter
    assert [e["sequence"] for e in events_of(database, user.id)] == [62, 63]


# --- a relay killed between PutEvents and settling ----------------------------------------------


def test_a_relay_killed_before_settling_publishes_again_with_the_same_event_ids_in_order(
    task_factory, user, database, bus, recorder
):
    from todo_backend.core.db import Database, DatabaseUnavailableError, create_database_engine
    from todo_backend.tasks.models import TaskUpdate
    from todo_backend.tasks.service import update_task

    # Given task A with two events and task B with one
    a = task_factory(user, "A")
    task_factory(user, "B")
    update_task(database, user.id, a.id, TaskUpdate(priority="high"))
    recorded = events_of(database, user.id)

    # When a relay whose database connection goes through the proxy loses it right after
    # PutEvents succeeded, before its settle statement reaches the database
    with PgProxy(os.environ["DATABASE_URL"]) as proxy:
        behind_proxy = Database(create_database_engine(proxy.url))
        proxy.fail("SET relayed_at = CASE", when="before")
        with pytest.raises(DatabaseUnavailableError):
            relay(behind_proxy, bus)
        behind_proxy.engine.dispose()

    # Then A's first and B's events reached EventBridge but are not marked: still leased
    first_call = recorder.accepted()
    assert sorted(d["sequence"] for d in first_call) == [1, 1]
    assert all(e["relayed_at"] is None for e in events_of(database, user.id))

    # When another run comes while the lease holds, it leaves them alone
    assert relay(database, bus).published == 0
    # When the lease has run out (the dead run's), a run publishes them again
    sql(
        database,
        "UPDATE task_events SET claimed_until = now() - interval '1 second' WHERE user_id = :u",
        u=user.id,
    )
    again = relay(database, bus)

    # Then both are re-sent with the same event_ids, and A's second event only after its first
    assert again.published == 3
    resent = recorder.accepted()[len(first_call) :]
    assert {d["event_id"] for d in resent[:2]} == {d["event_id"] for d in first_call}
    a_order = [d["sequence"] for d in recorder.accepted() if d["task_id"] == a.id]
    assert a_order == [1, 1, 2]
    assert [str(e["event_id"]) for e in recorded if e["task_id"] == a.id] == [
        d["event_id"] for d in recorder.accepted() if d["task_id"] == a.id
    ][1:]
    assert all(e["relayed_at"] is not None for e in events_of(database, user.id))
    assert [e["attempts"] for e in events_of(database, user.id)] == [2, 2, 1]


# --- the scheduled function: EVENT_MAX_ATTEMPTS, the parked metric, retention -----------------


def test_the_scheduled_function_parks_after_event_max_attempts_and_counts_it(
    task_factory, user, database, bus, recorder, configure, capsys
):
    # Given EVENT_MAX_ATTEMPTS=2 and an event EventBridge always rejects
    configure(EVENT_BUS_NAME=BUS, EVENT_MAX_ATTEMPTS="2")
    from functions.reminders.app import handler
    from todo_backend.events.relay import events_client

    events_client.cache_clear()
    task_factory(user, "poison")
    recorder.close()
    client_recorder = PutEventsRecorder(events_client(), reject=by_title("poison"))
    try:
        # When the function runs, and again once the retry is due
        first = handler({}, LambdaContext())
        time_passes(database)
        second = handler({}, LambdaContext())
    finally:
        client_recorder.close()
        events_client.cache_clear()

    # Then the second try parked it, and the run reported it in the EventsParked metric
    assert (first["events_failed"], first["events_parked"]) == (1, 0)
    assert (second["events_failed"], second["events_parked"]) == (1, 1)
    [parked] = events_of(database, user.id)
    assert parked["failed_at"] is not None and parked["attempts"] == 2
    metrics = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    parked_counts = [m["EventsParked"] for m in metrics if "EventsParked" in m]
    assert parked_counts in ([0.0, 1.0], [[0.0], [1.0]])


def test_retention_deletes_old_settled_events_and_chat_records_in_bounded_batches(
    user, database, configure
):
    # Given events relayed or parked 8 days ago, one relayed 6 days ago, and ones never relayed
    # (one of them 40 days old); chat turns and usage of 31 days ago and of 29 days ago
    now = datetime.now(UTC)
    today = now.date()
    ago = {"old": now - timedelta(days=8), "young": now - timedelta(days=6)}
    rows = [
        ("relayed old", ago["old"], None, now),
        ("relayed old", ago["old"], None, now),
        ("relayed old", ago["old"], None, now),
        ("parked old", None, ago["old"], now),
        ("parked old", None, ago["old"], now),
        ("relayed young", ago["young"], None, now),
        ("pending ancient", None, None, now - timedelta(days=40)),
        ("pending", None, None, now),
    ]
    for title, relayed, parked, occurred in rows:
        sql(
            database,
            "INSERT INTO task_events (user_id, task_id, detail_type, task, relayed_at, "
            "failed_at, occurred_at) VALUES (:u, 1, 'Task Updated', "
            "CAST(:task AS jsonb), :r, :p, :o)",
            u=user.id,
            task=json.dumps({"title": title}),
            r=relayed,
            p=parked,
            o=occurred,
        )
    [conversation] = sql(
        database,
        "INSERT INTO conversations (id, user_id, title) VALUES (gen_random_uuid(), :u, 'c') "
        "RETURNING id",
        u=user.id,
    )
    for days in (31, 29):
        created = datetime.combine(today - timedelta(days=days), datetime.min.time(), UTC)
        sql(
            database,
            "INSERT INTO chat_turns (id, user_id, conversation_id, fingerprint, status, "
            "attempt_id, created_at) VALUES (gen_random_uuid(), :u, :c, :f, 'succeeded', "
            "gen_random_uuid(), :t)",
            u=user.id,
            c=conversation["id"],
            f=f"{days} days",
            t=created + timedelta(hours=23),
        )
        sql(
            database,
            "INSERT INTO chat_usage (user_id, day, turns) VALUES (:u, :d, 1)",
            u=user.id,
            d=today - timedelta(days=days),
        )
    # (a day's records go 30 days after the day ended: 31 days ago's now, 30 days ago's tomorrow)
    sql(
        database,
        "INSERT INTO chat_usage (user_id, day, turns) VALUES (:u, :d, 1)",
        u=user.id,
        d=today - timedelta(days=30),
    )
    from todo_backend.retention.prune import Retention, prune

    retention = Retention(event_days=7, chat_record_days=30)

    # When retention runs with batches of 2 and at most 2 batches a table
    deleted = prune(database, retention, batch=2, max_batches=2)

    # Then it deleted 4 of the 5 old settled events, oldest first, and nothing else of them
    assert deleted["task_events"] == 4
    left = [e["task"]["title"] for e in events_of(database, user.id)]
    assert sorted(left) == ["parked old", "pending", "pending ancient", "relayed young"]

    # When the scheduled function runs (the next run)
    configure(EVENT_BUS_NAME=None)
    from functions.reminders.app import handler

    outcome = handler({}, LambdaContext())

    # Then the last old one is gone; young and unrelayed events stay, however old
    assert outcome["deleted"]["task_events"] >= 1
    left = [e["task"]["title"] for e in events_of(database, user.id)]
    assert sorted(left) == ["pending", "pending ancient", "relayed young"]
    # And chat records past 30 days after their day are deleted; the conversation stays
    turns = sql(database, "SELECT fingerprint FROM chat_turns WHERE user_id = :u", u=user.id)
    assert [t["fingerprint"] for t in turns] == ["29 days"]
    usage = sql(database, "SELECT day FROM chat_usage WHERE user_id = :u ORDER BY day", u=user.id)
    assert [u["day"] for u in usage] == [today - timedelta(days=30), today - timedelta(days=29)]
    assert sql(database, "SELECT id FROM conversations WHERE user_id = :u", u=user.id) != []


def test_the_retry_and_retention_settings_are_validated():
    from todo_backend.core.settings import ConfigurationError, load_settings

    base = {"database_url": "postgresql://localhost/x", "better_auth_secret": "s" * 32}
    settings = load_settings(**base)
    assert (
        settings.event_max_attempts,
        settings.event_retention_days,
        settings.chat_record_retention_days,
    ) == (10, 7, 30)
    for name in ("event_max_attempts", "event_retention_days", "chat_record_retention_days"):
        with pytest.raises(ConfigurationError, match=name.upper()):
            load_settings(**base, **{name: 0})


def test_one_run_tries_an_event_once_even_when_its_retry_is_due_at_once(
    task_factory, user, database, bus, recorder
):
    # Given an event EventBridge rejects, and retries without delay
    task_factory(user, "poison")
    recorder.reject = by_title("poison")
    # When a run relays with claims of one event
    report = relay(database, bus, batch=1, retry_base_seconds=0)
    # Then it tried it once: its retry is for the next run
    assert (report.failed, len(recorder.calls)) == (1, 1)
    assert relay(database, bus, batch=1, retry_base_seconds=0).failed == 1
    assert [e["attempts"] for e in events_of(database, user.id)] == [2]


def test_a_run_out_of_time_stops_claiming_after_its_first_claim(
    task_factory, user, database, bus, recorder
):
    # Given three tasks' events, and a run whose time is already up
    for title in ("one", "two", "three"):
        task_factory(user, title)
    # When it relays with claims of one event
    report = relay(database, bus, batch=1, time_budget_seconds=0)
    # Then it made its first claim only (every run makes progress); the next run goes on
    assert (report.claims, report.published) == (1, 1)
    assert relay(database, bus).published == 2
