"""Conversations: continuing one replays its history to the model; listing, reading and deleting
them; and who may touch which conversation.

Each scenario runs through TestClient and through the Lambda handler (payload 2.0 events).
"""

import json
import uuid
from datetime import datetime

from tests.fakes.cohere_server import text_reply, tool_calls_reply
from tests.support.chat import (
    chat,
    chat_ok,
    conversations_page,
    fake_cohere_fixture,  # noqa: F401
    is_uuid,
    message_count,
    stored_messages,
    task_row,
    wire_call,
)
from tests.support.tokens import make_token


def conversation_paths(user_id: str, conversation_id: str) -> dict[str, tuple[str, str]]:
    """Every chat route, as (method, path)."""
    return {
        "chat": ("POST", f"/api/{user_id}/chat"),
        "list": ("GET", f"/api/{user_id}/conversations"),
        "messages": ("GET", f"/api/{user_id}/conversations/{conversation_id}/messages"),
        "delete": ("DELETE", f"/api/{user_id}/conversations/{conversation_id}"),
    }


def call(api, method: str, path: str, headers: dict[str, str], conversation_id: str):
    body = {"message": "Hello", "conversation_id": conversation_id} if method == "POST" else None
    return api.request(method, path, json=body, headers=headers)


# --- continuing a conversation --------------------------------------------------------------------


def test_next_turns_replay_the_earlier_ones(chat_api, fake_cohere, user, task_factory, database):
    # Given a first turn that added a task
    fake_cohere.script(
        tool_calls_reply(
            ("add_task", {"title": "Buy groceries"}, "add_task_turn10001"),
            tool_plan="I will add the task.",
        ),
        text_reply("Added 'Buy groceries'."),
    )
    first = chat_ok(chat_api, user, "Add a task to buy groceries")
    conversation_id = first["conversation_id"]
    added = first["tool_calls"][0]["result"]

    # When the user continues it with a turn of two steps
    fake_cohere.script(
        tool_calls_reply(
            ("list_tasks", {"q": "groceries"}, "list_tasks_turn2001"),
            tool_plan="I will find the task.",
        ),
        tool_calls_reply(
            ("complete_task", {"task_id": added["task_id"]}, "complete_task_turn2"),
            tool_plan="I will complete it.",
        ),
        text_reply("Done: 'Buy groceries' is complete."),
    )
    second = chat_ok(chat_api, user, "I bought them", conversation_id)

    # Then the turn belongs to the same conversation and its first request replays turn one:
    # the user's message, the assistant's tool call, the tool result, the assistant's text
    assert second["conversation_id"] == conversation_id
    system = fake_cohere.requests[0].messages[0]
    replay = fake_cohere.requests[2].messages
    assert replay[0] == system
    assert replay[1] == {"role": "user", "content": "Add a task to buy groceries"}
    assert replay[2]["role"] == "assistant"
    assert replay[2]["tool_plan"] == "I will add the task."
    assert wire_call(replay[2]) == ("add_task_turn10001", "add_task", {"title": "Buy groceries"})
    assert replay[3]["role"] == "tool"
    assert replay[3]["tool_call_id"] == "add_task_turn10001"
    assert json.loads(replay[3]["content"]) == added
    assert replay[4] == {"role": "assistant", "content": "Added 'Buy groceries'."}
    assert replay[5] == {"role": "user", "content": "I bought them"}
    assert len(replay) == 6
    # And the task really is completed
    assert task_row(database, added["task_id"])["completed"] is True

    # When the user continues once more
    fake_cohere.script(text_reply("You're welcome!"))
    chat_ok(chat_api, user, "Thanks", conversation_id)

    # Then the two steps of turn two are replayed in order, each with its plan and its result
    replay = fake_cohere.requests[5].messages
    turn_two = replay[5:12]
    assert [m["role"] for m in turn_two] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert turn_two[1]["tool_plan"] == "I will find the task."
    assert wire_call(turn_two[1]) == ("list_tasks_turn2001", "list_tasks", {"q": "groceries"})
    assert turn_two[2]["tool_call_id"] == "list_tasks_turn2001"
    assert json.loads(turn_two[2]["content"]) == second["tool_calls"][0]["result"]
    assert turn_two[3]["tool_plan"] == "I will complete it."
    assert wire_call(turn_two[3]) == (
        "complete_task_turn2",
        "complete_task",
        {"task_id": added["task_id"]},
    )
    assert turn_two[4]["tool_call_id"] == "complete_task_turn2"
    assert json.loads(turn_two[4]["content"]) == second["tool_calls"][1]["result"]
    assert turn_two[5] == {"role": "assistant", "content": "Done: 'Buy groceries' is complete."}
    assert turn_two[6] == {"role": "user", "content": "Thanks"}
    assert len(replay) == 12


def test_messages_are_listed_oldest_first(chat_api, fake_cohere, user):
    # Given a conversation of two turns, the first with a tool call
    fake_cohere.script(
        tool_calls_reply(("add_task", {"title": "Plan the week"})),
        text_reply("Added 'Plan the week'."),
        text_reply("Anything else?"),
    )
    first = chat_ok(chat_api, user, "Add plan the week")
    chat_ok(chat_api, user, "That's all", first["conversation_id"])

    # When the user reads its messages
    response = chat_api.get(
        f"/api/{user.id}/conversations/{first['conversation_id']}/messages", headers=user.headers
    )

    # Then they come oldest first, each with id, role, content, tool_calls and created_at
    assert response.status_code == 200
    items = response.json()["items"]
    assert [(m["role"], m["content"]) for m in items] == [
        ("user", "Add plan the week"),
        ("assistant", "Added 'Plan the week'."),
        ("user", "That's all"),
        ("assistant", "Anything else?"),
    ]
    for message in items:
        assert set(message) == {"id", "role", "content", "tool_calls", "created_at"}
        assert is_uuid(message["id"])
    assert len({m["id"] for m in items}) == 4
    created = [datetime.fromisoformat(m["created_at"]) for m in items]
    assert created == sorted(created)
    assert all(moment.utcoffset() is not None for moment in created)
    # And only the assistant message that acted carries its calls, as {name, arguments, result}
    assert [m["tool_calls"] is None for m in items] == [True, False, True, True]
    assert items[1]["tool_calls"] == first["tool_calls"]
    assert set(items[1]["tool_calls"][0]) == {"name", "arguments", "result"}


# --- listing, paging and deleting conversations ---------------------------------------------------


def test_conversations_are_listed_newest_first_and_paged(chat_api, fake_cohere, user, other_user):
    # Given three conversations of the user, and one of somebody else
    first_messages = ["  Plan   my\nweek ", "Groceries for the party", "x" * 300]
    fake_cohere.script(*[text_reply("OK.") for _ in range(5)])
    ids = [chat_ok(chat_api, user, message)["conversation_id"] for message in first_messages]
    chat_ok(chat_api, other_user, "Not yours")
    # ... the first of which goes on (its title stays the first message's)
    chat_ok(chat_api, user, "Another message", ids[0])

    # When the user lists them
    page = conversations_page(chat_api, user)

    # Then all three are there, most recently active first, titled by their first message
    assert page["total"] == 3
    assert [item["id"] for item in page["items"]] == [ids[0], ids[2], ids[1]]
    titles = {item["id"]: item["title"] for item in page["items"]}
    assert titles[ids[0]] == "Plan my week"
    assert titles[ids[1]] == "Groceries for the party"
    assert len(titles[ids[2]]) == 80
    assert titles[ids[2]] == "x" * 79 + "…"
    for item in page["items"]:
        assert set(item) == {"id", "title", "created_at", "updated_at"}
        assert datetime.fromisoformat(item["updated_at"]) >= datetime.fromisoformat(
            item["created_at"]
        )

    # When the user pages through them
    first_page = conversations_page(chat_api, user, limit=2)
    second_page = conversations_page(chat_api, user, limit=2, offset=2)
    beyond = conversations_page(chat_api, user, limit=2, offset=10)

    # Then the pages split the same order, and total always counts them all
    assert [item["id"] for item in first_page["items"]] == [ids[0], ids[2]]
    assert [item["id"] for item in second_page["items"]] == [ids[1]]
    assert beyond["items"] == []
    assert first_page["total"] == second_page["total"] == beyond["total"] == 3

    # And invalid paging is refused
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "many"}):
        response = chat_api.get(
            f"/api/{user.id}/conversations", params=params, headers=user.headers
        )
        assert response.status_code == 422, params


def test_a_new_user_has_no_conversations(chat_api, user):
    # Given a user who never chatted
    # When they list their conversations
    page = conversations_page(chat_api, user)

    # Then the list is empty
    assert page == {"items": [], "total": 0}


def test_deleting_a_conversation(chat_api, fake_cohere, user, database):
    # Given a conversation in which a task was added
    fake_cohere.script(
        tool_calls_reply(("add_task", {"title": "Keep me"})), text_reply("Added 'Keep me'.")
    )
    body = chat_ok(chat_api, user, "Add keep me")
    conversation_id = body["conversation_id"]
    task_id = body["tool_calls"][0]["result"]["task_id"]
    requests_before = len(fake_cohere.requests)

    # When the user deletes it
    response = chat_api.delete(
        f"/api/{user.id}/conversations/{conversation_id}", headers=user.headers
    )

    # Then it is gone, with its messages
    assert response.status_code == 204
    assert response.text == ""
    assert message_count(database, conversation_id) == 0
    assert conversations_page(chat_api, user)["total"] == 0
    paths = conversation_paths(user.id, conversation_id)
    for route in ("messages", "delete", "chat"):
        method, path = paths[route]
        again = call(chat_api, method, path, user.headers, conversation_id)
        assert again.status_code == 404, route
        assert again.json() == {"detail": "Conversation not found"}
    # And the model was not called for the deleted conversation, and the task stays
    assert len(fake_cohere.requests) == requests_before
    assert task_row(database, task_id) is not None


# --- who may do what ------------------------------------------------------------------------------


def test_a_path_user_other_than_the_token_subject_is_403(
    chat_api, fake_cohere, user, other_user, database
):
    # Given a conversation of another user
    fake_cohere.script(text_reply("Hi."))
    theirs = chat_ok(chat_api, other_user, "My secret plans")["conversation_id"]
    requests_before = len(fake_cohere.requests)

    # When the user calls each route with the other user's id in the path
    statuses = {
        route: call(chat_api, method, path, user.headers, theirs).status_code
        for route, (method, path) in conversation_paths(other_user.id, theirs).items()
    }

    # Then every route refuses, without calling the model or touching the conversation
    assert statuses == {"chat": 403, "list": 403, "messages": 403, "delete": 403}
    assert len(fake_cohere.requests) == requests_before
    assert message_count(database, theirs) == 2
    assert conversations_page(chat_api, user)["total"] == 0


def test_another_users_conversation_is_404_and_stays_intact(
    chat_api, fake_cohere, user, other_user, database
):
    # Given a conversation of another user, and an id no conversation has
    fake_cohere.script(text_reply("Hi."))
    theirs = chat_ok(chat_api, other_user, "My secret plans")["conversation_id"]
    before = stored_messages(chat_api, other_user, theirs)
    requests_before = len(fake_cohere.requests)
    unknown = str(uuid.uuid4())

    # When the user uses the other user's id (and the unknown one) on their own routes
    outcomes = {}
    for label, conversation_id in (("theirs", theirs), ("unknown", unknown)):
        for route in ("chat", "messages", "delete"):
            method, path = conversation_paths(user.id, conversation_id)[route]
            response = call(chat_api, method, path, user.headers, conversation_id)
            outcomes[label, route] = (response.status_code, response.json())

    # Then each is a 404, exactly as for a conversation that does not exist
    not_found = (404, {"detail": "Conversation not found"})
    assert outcomes == dict.fromkeys(outcomes, not_found)
    # And the model was not called, no message was added to it, and it was not deleted
    assert len(fake_cohere.requests) == requests_before
    assert stored_messages(chat_api, other_user, theirs) == before
    assert message_count(database, theirs) == 2
    assert conversations_page(chat_api, user)["total"] == 0


def test_missing_or_bad_token_is_401(chat_api, fake_cohere, user):
    # Given requests without a usable token
    conversation_id = str(uuid.uuid4())
    bad_headers = {
        "missing": {},
        "not-bearer": {"Authorization": f"Basic {user.token}"},
        "garbage": {"Authorization": "Bearer not-a-jwt"},
        "expired": {"Authorization": f"Bearer {make_token(user.id, expires_in=-120)}"},
        "wrong-secret": {"Authorization": f"Bearer {make_token(user.id, secret='x' * 40)}"},
    }

    # When each route is called with each of them
    outcomes = {}
    for label, headers in bad_headers.items():
        for route, (method, path) in conversation_paths(user.id, conversation_id).items():
            response = call(chat_api, method, path, headers, conversation_id)
            outcomes[label, route] = (
                response.status_code,
                response.headers.get("www-authenticate"),
            )

    # Then each is a 401 that asks for a bearer token, and the model is never called
    assert outcomes == dict.fromkeys(outcomes, (401, "Bearer"))
    assert fake_cohere.requests == []


def test_message_length_limits(chat_api, fake_cohere, user):
    # Given a model that answers
    fake_cohere.script(text_reply("That's a long one."))

    # When the user sends messages of 0, 4001 and 4000 characters
    empty = chat(chat_api, user, "")
    too_long = chat(chat_api, user, "a" * 4001)
    longest = chat(chat_api, user, "a" * 4000)

    # Then only the 4000-character message is accepted, and sent whole to the model
    assert empty.status_code == 422
    assert too_long.status_code == 422
    assert longest.status_code == 200, longest.text
    assert len(fake_cohere.requests) == 1
    assert fake_cohere.requests[0].messages[-1] == {"role": "user", "content": "a" * 4000}
    [message, _] = stored_messages(chat_api, user, longest.json()["conversation_id"])
    assert message["content"] == "a" * 4000


def test_invalid_chat_bodies_and_ids_are_422(chat_api, fake_cohere, user):
    # Given bodies and paths that break the contract
    bodies = {
        "unknown-field": {"message": "Hello", "user_id": "someone-else"},
        "bad-uuid": {"message": "Hello", "conversation_id": "not-a-uuid"},
        "missing-message": {"conversation_id": None},
        "message-not-text": {"message": 42},
        "control-character": {"message": "Hello\x00"},
    }
    headers = {**user.headers, "content-type": "application/json"}

    # When they are sent
    statuses = {
        label: chat_api.post(f"/api/{user.id}/chat", json=body, headers=user.headers).status_code
        for label, body in bodies.items()
    }
    statuses["not-json"] = chat_api.post(
        f"/api/{user.id}/chat", content="{not json", headers=headers
    ).status_code
    statuses["messages-bad-uuid"] = chat_api.get(
        f"/api/{user.id}/conversations/not-a-uuid/messages", headers=user.headers
    ).status_code
    statuses["delete-bad-uuid"] = chat_api.delete(
        f"/api/{user.id}/conversations/not-a-uuid", headers=user.headers
    ).status_code

    # Then each is a validation error, and nothing reached the model or the database
    assert statuses == dict.fromkeys(statuses, 422)
    assert fake_cohere.requests == []
    assert conversations_page(chat_api, user)["total"] == 0


def test_null_conversation_id_starts_a_new_conversation(chat_api, fake_cohere, user):
    # Given an existing conversation
    fake_cohere.script(text_reply("One."), text_reply("Two."))
    existing = chat_ok(chat_api, user, "First")["conversation_id"]

    # When the user sends a message with conversation_id null, and multi-line text
    response = chat_api.post(
        f"/api/{user.id}/chat",
        json={"message": "Second\n\tline", "conversation_id": None},
        headers=user.headers,
    )

    # Then a new conversation starts, and the model saw no earlier history
    assert response.status_code == 200, response.text
    assert response.json()["conversation_id"] != existing
    assert [m["role"] for m in fake_cohere.requests[1].messages] == ["system", "user"]
    assert fake_cohere.requests[1].messages[1]["content"] == "Second\n\tline"
    assert conversations_page(chat_api, user)["total"] == 2
