"""Any text the API accepts is stored and returned exactly (issue 9 item 2; API.md "Authentication
and input"): awkward strings, a tag "null" above all (pg8000 used to send it as an SQL NULL inside
the array), through create, replace, update, list, the chat tools and the stored messages."""

import json
from typing import Any

import pytest
from sqlalchemy import text

from tests.fakes.cohere_server import text_reply, tool_calls_reply
from tests.support.chat import chat_ok, fake_cohere_fixture, stored_messages  # noqa: F401

# Each is a valid tag (1-30 characters, lower case as stored) and a valid title.
AWKWARD = [
    "null",
    "nul",
    "nulls",
    '"',
    "'",
    "\\",
    "a\\b",
    '\\"',
    '"null"',
    "{",
    "}",
    "{}",
    "{a,b}",
    "{null}",
    ",",
    "a,b",
    "a b",
    "(1,2)",
    "[x]",
    "ü",
    "日本語",
    "🙂",
    "\\n",
    "\\n0",
    "nan",
    "$1",
    "%s",
    ":name",
    "-- x",
    "/* x */",
]
# As sent, in other cases: stored lower-case (tags) or exactly (titles).
SPELLINGS_OF_NULL = ["null", "NULL", "Null", "nULL", " NULL "]


def chunks(values: list[str], size: int = 10) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def stored(database: Any, task_id: int) -> dict[str, Any]:
    """The row as PostgreSQL itself renders it in JSON (independent of the driver's parsing)."""
    row = database.fetch_one(
        text(
            "SELECT json_build_object('title', title, 'description', description, 'tags', tags,"
            " 'null_tag_at', array_position(tags, NULL))::text AS doc"
            " FROM tasks WHERE id = :id"
        ).bindparams(id=task_id)
    )
    assert row is not None
    return json.loads(row["doc"])


def assert_same(api: Any, user: Any, database: Any, task: dict[str, Any], expected: dict) -> None:
    for name, value in expected.items():
        assert task[name] == value, name
    # What GET returns, what the list returns, and what the database holds
    fetched = api.get(f"/api/tasks/{task['id']}", headers=user.headers).json()
    listed = api.get("/api/tasks", params={"limit": 100}, headers=user.headers).json()
    [in_list] = [item for item in listed["items"] if item["id"] == task["id"]]
    row = stored(database, task["id"])
    assert row["null_tag_at"] is None
    for name, value in expected.items():
        assert fetched[name] == value, name
        assert in_list[name] == value, name
        assert row[name] == value, name


def test_awkward_tags_and_texts_round_trip_through_create(tasks_api, user, database):
    for group in chunks(AWKWARD):
        for title in group:
            body = {"title": title, "description": title, "tags": group}
            response = tasks_api.post("/api/tasks", json=body, headers=user.headers)
            assert response.status_code == 201, (title, response.text)
            assert_same(tasks_api, user, database, response.json(), body)


def test_every_spelling_of_null_is_the_four_letters(tasks_api, user, database):
    # Given tags and texts that spell NULL in any case
    response = tasks_api.post(
        "/api/tasks",
        json={"title": "NULL", "description": "Null", "tags": [*SPELLINGS_OF_NULL, "NuLl"]},
        headers=user.headers,
    )
    # Then the create succeeds (it answered 500 after committing) and they are stored as text
    assert response.status_code == 201, response.text
    expected = {"title": "NULL", "description": "Null", "tags": ["null"]}
    assert_same(tasks_api, user, database, response.json(), expected)
    # And the user's list still works, filtering by that tag too
    for tag in ("null", "NULL"):
        listed = tasks_api.get("/api/tasks", params={"tag": tag}, headers=user.headers)
        assert listed.status_code == 200
        assert [item["id"] for item in listed.json()["items"]] == [response.json()["id"]]


def test_an_empty_description_stays_an_empty_string(tasks_api, user, database):
    response = tasks_api.post(
        "/api/tasks", json={"title": "x", "description": ""}, headers=user.headers
    )
    assert response.status_code == 201
    assert_same(tasks_api, user, database, response.json(), {"description": "", "tags": []})


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_awkward_values_round_trip_through_updates(tasks_api, user, database, task_factory, method):
    task = task_factory(user, "Before", tags=["before"])
    for group in chunks(AWKWARD):
        body = {"title": group[-1], "description": "".join(group), "tags": group}
        response = tasks_api.request(
            method, f"/api/tasks/{task.id}", json=body, headers=user.headers
        )
        assert response.status_code == 200, response.text
        assert_same(tasks_api, user, database, response.json(), body)
        # And each tag finds the task
        for tag in group:
            found = tasks_api.get("/api/tasks", params={"tag": tag}, headers=user.headers)
            assert found.status_code == 200, (tag, found.text)
            assert [item["id"] for item in found.json()["items"]] == [task.id], tag


def test_awkward_values_round_trip_through_the_chat_tools_and_messages(
    chat_api, tasks_api, fake_cohere, user, database
):
    # Given a model that adds a task with awkward tags, then updates it with others
    first, second = chunks(AWKWARD)[:2]
    added = {"title": '"null", {a,b}', "description": "\\ NULL ,", "tags": ["NULL", *first[:9]]}
    updated = {"task_id": None, "title": "Null", "tags": second}
    fake_cohere.script(tool_calls_reply(("add_task", added)), text_reply("Added."))
    body = chat_ok(chat_api, user, "Add it")
    [add_call] = body["tool_calls"]
    task_id = add_call["result"]["task_id"]
    updated["task_id"] = task_id
    fake_cohere.script(tool_calls_reply(("update_task", updated)), text_reply("Updated."))
    body = chat_ok(chat_api, user, "Change it", body["conversation_id"])
    [update_call] = body["tool_calls"]
    # Then each tool returned the values exactly, and the task holds the last ones
    assert add_call["result"]["title"] == added["title"]
    assert add_call["arguments"] == added
    assert update_call["arguments"] == updated
    assert update_call["result"]["title"] == "Null"
    task = tasks_api.get(f"/api/tasks/{task_id}", headers=user.headers).json()
    assert_same(
        tasks_api,
        user,
        database,
        task,
        {"title": "Null", "description": added["description"], "tags": second},
    )
    # And the stored messages replay both calls with their arguments and results unchanged
    messages = stored_messages(chat_api, user, body["conversation_id"])
    calls = [call for message in messages for call in message["tool_calls"] or []]
    assert [call["arguments"] for call in calls] == [added, updated]
    assert [call["result"] for call in calls] == [add_call["result"], update_call["result"]]


def test_the_driver_sends_every_array_exactly(database):
    # Given arrays of awkward strings, NULLs, numbers and nesting, sent as parameters
    values = [*AWKWARD, *SPELLINGS_OF_NULL, "", " padded ", "NULL ", '\\"{,}"']
    cases = [
        ("CAST(:v AS varchar(30)[])", [value[:30] for value in values]),
        ("CAST(:v AS text[])", [*values, None]),
        ("CAST(:v AS int[])", [1, None, -3]),
        ("CAST(:v AS text[][])", [["a", "null"], ["{", None]]),
        ("CAST(:v AS text[])", []),
    ]
    for expression, value in cases:
        row = database.fetch_one(
            text(f"SELECT array_to_json({expression})::text AS doc").bindparams(v=value)
        )
        # Then PostgreSQL received exactly those elements
        assert row is not None
        assert json.loads(row["doc"]) == value, expression
