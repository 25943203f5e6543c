"""Cohere is called with `strict_tools: true`; the declarations follow strict mode's rules (the
fake Cohere server refuses any request that breaks them, so every chat test checks them), while
MCP keeps its schemas and every tool runs with the arguments it accepted before."""

from tests.fakes.cohere_server import text_reply, tool_calls_reply
from tests.support.chat import chat_ok, fake_cohere_fixture  # noqa: F401


def test_get_stats_runs_with_its_cohere_only_parameter(chat_api, fake_cohere, user, task_factory):
    # Given a task, and a model that asks for the stats as its strict declaration requires
    task_factory(user, "Buy milk")
    fake_cohere.script(
        tool_calls_reply(("get_stats", {"scope": "all"})), text_reply("You have 1 task.")
    )

    # When the user asks how they are doing
    body = chat_ok(chat_api, user, "How am I doing?")

    # Then the tool ran and counted the task
    [call] = body["tool_calls"]
    assert call["result"]["total"] == 1
    assert call["result"]["pending"] == 1


def test_list_tasks_without_status_still_lists_every_task(
    chat_api, fake_cohere, user, task_factory
):
    # Given a pending and a completed task
    task_factory(user, "Buy milk")
    task_factory(user, "Done already", completed=True)
    fake_cohere.script(tool_calls_reply(("list_tasks", {})), text_reply("Two tasks."))

    # When the model lists them without a status (as before strict mode)
    body = chat_ok(chat_api, user, "Show my tasks")

    # Then it lists all of them
    assert body["tool_calls"][0]["result"]["total"] == 2


def test_mcp_keeps_its_schemas_while_cohere_gets_strict_ones():
    from todo_backend.tasks.tools import TOOLS, cohere_tool_definitions

    cohere = {
        tool["function"]["name"]: tool["function"]["parameters"]
        for tool in cohere_tool_definitions()
    }
    # Every Cohere declaration requires a parameter, and declares each one it requires
    for name, parameters in cohere.items():
        assert parameters["required"], name
        assert set(parameters["required"]) <= set(parameters["properties"]), name
    assert "status" in cohere["list_tasks"]["required"]
    assert cohere["get_stats"]["properties"]["scope"]["enum"] == ["all"]
    # ... while MCP's schemas are as before: nothing required, no extra parameter
    assert TOOLS["list_tasks"].input_schema["required"] == []
    assert TOOLS["get_stats"].input_schema == {"type": "object", "properties": {}, "required": []}


def test_list_tasks_takes_a_cursor_and_returns_the_next(chat_api, fake_cohere, user, task_factory):
    # Given three tasks and the next_cursor of a first page of one (the tool's order: newest first)
    from todo_backend.core.db import get_database
    from todo_backend.tasks import service
    from todo_backend.tasks.models import TaskListQuery

    ids = [task_factory(user, f"Task {n}").id for n in range(3)]
    cursor = service.list_tasks(get_database(), user.id, TaskListQuery(limit=1)).next_cursor
    assert cursor is not None
    fake_cohere.script(
        tool_calls_reply(("list_tasks", {"status": "all", "limit": 1, "cursor": cursor})),
        tool_calls_reply(("list_tasks", {"status": "all", "cursor": "not a cursor"})),
        text_reply("The next one."),
    )

    # When the model asks for the page after it, and then passes a cursor it never got
    body = chat_ok(chat_api, user, "And the next?")

    # Then the first call lists the second newest task, with a cursor for the third
    paged, invalid = (call["result"] for call in body["tool_calls"])
    assert [task["task_id"] for task in paged["tasks"]] == [ids[1]]
    assert paged["total"] == 3 and paged["next_cursor"] is not None
    # And the other is an error result naming the cursor, not a failed turn
    assert invalid["error"].startswith("invalid arguments: cursor: not a cursor of this list")
