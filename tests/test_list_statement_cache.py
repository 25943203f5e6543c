"""The task list statement is compiled once per query shape and reused: every value is sent as a
parameter, so reusing it never carries one request's values into another's."""

from typing import Any

from tests.support.tokens import new_user_id
from todo_backend.tasks import service
from todo_backend.tasks.models import TaskCreate, TaskListQuery


def titles(database: Any, user: str, **query: Any) -> list[str]:
    page = service.list_tasks(database, user, TaskListQuery(**query))
    return sorted(item.title for item in page.items)


def test_one_compiled_statement_serves_every_value_of_a_shape(database: Any):
    # Given two users with differently named and tagged tasks
    alice, bob = new_user_id(), new_user_id()
    for user, names in ((alice, ["alpha one", "beta two"]), (bob, ["alpha three"])):
        for name in names:
            service.create_task(database, user, TaskCreate(title=name, tags=[name.split()[0]]))
    service._list_statement.cache_clear()

    # When the same shapes are listed with different values
    assert titles(database, alice, q="ALPHA") == ["alpha one"]
    assert titles(database, alice, q="two") == ["beta two"]
    assert titles(database, bob, q="alpha") == ["alpha three"]
    assert titles(database, alice, tag="beta", limit=5) == ["beta two"]
    assert titles(database, alice, tag="alpha", limit=1, offset=0) == ["alpha one"]
    assert titles(database, alice, q="%") == []  # no pattern characters
    # Then each shape was compiled once and reused for the other values
    info = service._list_statement.cache_info()
    assert (info.misses, info.hits) == (2, 4)


def test_enums_and_booleans_choose_the_statement():
    a = service._shape(TaskListQuery(status="pending", q="x"))
    b = service._shape(TaskListQuery(status="completed", q="y"))
    c = service._shape(TaskListQuery(status="pending", q="z"))
    assert a != b
    assert a == c


def test_one_compiled_create_serves_every_value_of_a_shape(database: Any):
    # Given no compiled create statement yet
    alice, bob = new_user_id(), new_user_id()
    service._create_statement.cache_clear()
    # When tasks with different values, owners and idempotency keys are created
    first, created = service.create_task(
        database, alice, TaskCreate(title="one", tags=["a"], priority="high"), "key-1"
    )
    second, _ = service.create_task(
        database, bob, TaskCreate(title="two", description="d", due_date="2030-01-02"), "key-1"
    )
    third, _ = service.create_task(database, alice, TaskCreate(title="three", completed=True))
    fourth, _ = service.create_task(database, alice, TaskCreate(title="four", completed=True))
    repeat, repeated = service.create_task(
        database, alice, TaskCreate(title="one", tags=["a"], priority="high"), "key-1"
    )
    # Then each task holds its own values
    assert created and (first.title, first.tags, first.priority) == ("one", ["a"], "high")
    assert (second.title, second.description, second.due_date.isoformat()) == (
        "two",
        "d",
        "2030-01-02T00:00:00+00:00",
    )
    assert third.completed and third.completed_at is not None
    assert fourth.completed and fourth.id != third.id
    assert not repeated and repeat.id == first.id
    assert titles(database, alice) == ["four", "one", "three"]
    assert titles(database, bob) == ["two"]
    # And each shape (with a key and pending, without and completed) was compiled once
    info = service._create_statement.cache_info()
    assert (info.misses, info.hits) == (2, 3)
