"""PATCH /api/{user_id}/conversations/{id}: the user renames a conversation (1-200 characters)."""

import uuid

import pytest

from tests.fakes.cohere_server import text_reply
from tests.support.chat import chat_ok, conversations_page, fake_cohere_fixture  # noqa: F401


def rename(api, user, conversation_id, body):
    return api.patch(
        f"/api/{user.id}/conversations/{conversation_id}", json=body, headers=user.headers
    )


def test_a_conversation_is_renamed_with_up_to_200_characters(chat_api, fake_cohere, user):
    # Given a conversation, titled after its first message
    fake_cohere.script(text_reply("Hi."))
    conversation_id = chat_ok(chat_api, user, "Hello")["conversation_id"]

    # When the user renames it with a title of 200 characters
    title = "Groceries and errands " + "x" * 178
    response = rename(chat_api, user, conversation_id, {"title": title})

    # Then 200 with the conversation, and the list shows the new title
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["title"]) == (conversation_id, title)
    assert set(body) == {"id", "title", "created_at", "updated_at"}
    assert conversations_page(chat_api, user)["items"][0]["title"] == title


@pytest.mark.parametrize(
    "body",
    [{"title": ""}, {"title": "   "}, {"title": "x" * 201}, {}, {"title": "a", "extra": 1}],
    ids=["empty", "blank", "201-characters", "no-title", "unknown-field"],
)
def test_a_bad_title_is_a_422_and_changes_nothing(chat_api, fake_cohere, user, body):
    # Given a conversation
    fake_cohere.script(text_reply("Hi."))
    conversation_id = chat_ok(chat_api, user, "Hello")["conversation_id"]

    # When the user renames it with a bad body
    response = rename(chat_api, user, conversation_id, body)

    # Then 422, without echoing the title, and the title stays
    assert response.status_code == 422, response.text
    assert "x" * 201 not in response.text
    assert conversations_page(chat_api, user)["items"][0]["title"] == "Hello"


def test_another_users_conversation_is_404(chat_api, fake_cohere, user, other_user):
    # Given a conversation of the user's
    fake_cohere.script(text_reply("Hi."))
    conversation_id = chat_ok(chat_api, user, "Hello")["conversation_id"]

    # When another user renames it, or the user renames one that does not exist
    theirs = rename(chat_api, other_user, conversation_id, {"title": "Mine now"})
    unknown = rename(chat_api, user, uuid.uuid4(), {"title": "Nothing"})

    # Then both are 404, and the title stays
    assert theirs.status_code == 404, theirs.text
    assert unknown.status_code == 404, unknown.text
    assert conversations_page(chat_api, user)["items"][0]["title"] == "Hello"
