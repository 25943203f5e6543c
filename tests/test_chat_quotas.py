"""Quotas that hold under races: one running chat turn per user, a turn counted once whatever
races, and at most one turn's tokens billed past the daily limit.

Each race is made certain, not likely: every request claims while the user's usage row is locked
(`usage_row_locked`), so all of them take their snapshot before any can finish, and the model
(the fake Cohere) takes a moment to answer, so the first turn still runs when the others look.
Before this change, 8 retries of one failed turn counted it up to 6 times, and 8 turns with
CHAT_DAILY_TOKENS=1000 each billed 1,000 tokens all answered 200 (8,000 tokens).
"""

import os
import time
from typing import Any

import pytest
from sqlalchemy import text

from tests.fakes.cohere_server import error_reply, slow_reply, text_reply
from tests.support.chat import (
    ChatUser,
    chat,
    fake_cohere_fixture,  # noqa: F401
    in_thread,
    usage_row_locked,
)
from tests.support.lambda_events import LambdaClient

RUNNING = "Another chat turn is still running"


@pytest.fixture
def lambda_chat() -> LambdaClient:
    from functions.chat.app import handler

    return LambdaClient(handler)


def keyed(api: Any, user: ChatUser, message: str, key: str) -> Any:
    return api.post(
        f"/api/{user.id}/chat",
        json={"message": message},
        headers={**user.headers, "Idempotency-Key": key},
    )


def usage_of(api: Any, user: ChatUser) -> dict[str, Any]:
    response = api.get(f"/api/{user.id}/chat/usage", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_model_call(fake_cohere: Any, count: int = 1) -> None:
    deadline = time.monotonic() + 5
    while len(fake_cohere.requests) < count:
        assert time.monotonic() < deadline, "the model was never called"
        time.sleep(0.02)


def all_at_once(user: ChatUser, requests: list[Any]) -> list[Any]:
    """Run the requests concurrently, each claiming before any can finish; their responses."""
    with usage_row_locked(os.environ["DATABASE_URL"], user.id, waiters=len(requests)):
        started = [in_thread(request) for request in requests]
    for thread, _ in started:
        thread.join()
    for _, outcome in started:
        assert "error" not in outcome, outcome
    return [outcome["value"] for _, outcome in started]


def test_a_second_turn_while_one_runs_is_429_and_a_repeat_of_the_running_one_409(
    lambda_chat, fake_cohere, configure
):
    # Given a turn whose model takes a second to answer
    configure(DB_POOL_SIZE="2")
    user = ChatUser()
    fake_cohere.script(slow_reply(1.0, then=text_reply("Slow answer.")), text_reply("Next."))
    thread, outcome = in_thread(lambda: keyed(lambda_chat, user, "Hello", "key-first"))
    wait_for_model_call(fake_cohere)

    # When the user sends another message meanwhile
    second = keyed(lambda_chat, user, "Something else", "key-second")

    # Then it is a 429 saying so, with a Retry-After within the running turn's budget (3 s)
    assert second.status_code == 429, second.text
    assert second.json() == {"detail": RUNNING}
    assert 1 <= int(second.headers["retry-after"]) <= 3
    # And a repeat of the running turn itself is still a 409
    assert keyed(lambda_chat, user, "Hello", "key-first").status_code == 409
    # And neither counted nor reached the model
    assert usage_of(lambda_chat, user)["turns"] == 1
    assert len(fake_cohere.requests) == 1

    # When the first is done, the second goes through with its key
    thread.join()
    assert outcome["value"].status_code == 200
    again = keyed(lambda_chat, user, "Something else", "key-second")
    assert again.status_code == 200, again.text
    assert usage_of(lambda_chat, user)["turns"] == 2
    # And another user was never held up by any of this
    other = ChatUser()
    fake_cohere.script(text_reply("Yours."))
    assert chat(lambda_chat, other, "Mine").status_code == 200


def test_eight_concurrent_retries_of_a_failed_turn_count_it_once(
    lambda_chat, fake_cohere, configure
):
    # Given a turn that failed at Cohere (one turn used)
    configure(DB_POOL_SIZE="8")
    user = ChatUser()
    fake_cohere.script(error_reply(400))
    assert keyed(lambda_chat, user, "Hello", "key-failed").status_code == 502

    # When the client retries it eight times at once
    fake_cohere.script(slow_reply(0.5, then=text_reply("Hello.")))
    responses = all_at_once(
        user, [lambda: keyed(lambda_chat, user, "Hello", "key-failed") for _ in range(8)]
    )

    # Then one retry resumed the turn and the others were told it runs (409)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, *[409] * 7], statuses
    assert len(fake_cohere.requests) == 2
    # And the quota counts the turn's two attempts, not one per retry
    assert usage_of(lambda_chat, user)["turns"] == 2


def test_eight_concurrent_turns_bill_at_most_one_turn_past_the_token_limit(
    lambda_chat, fake_cohere, configure
):
    # Given 1,000 tokens a day, and eight turns sent at once whose replies bill 1,000 each
    configure(CHAT_DAILY_TOKENS="1000", DB_POOL_SIZE="8")
    user = ChatUser()
    billed = {"billed_units": {"input_tokens": 900, "output_tokens": 100}}
    fake_cohere.script(*[slow_reply(0.5, then=text_reply("Hi.", usage=billed))] * 8)

    responses = all_at_once(
        user, [lambda n=n: chat(lambda_chat, user, f"Hi {n}") for n in range(8)]
    )

    # Then one turn ran; the others were refused before the model
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, *[429] * 7], statuses
    assert {r.json()["detail"] for r in responses if r.status_code == 429} == {RUNNING}
    assert len(fake_cohere.requests) == 1
    # And after it, the day's tokens are used up: the next turn is over the quota
    late = chat(lambda_chat, user, "One more")
    assert late.status_code == 429
    assert late.json()["detail"] != RUNNING
    usage = usage_of(lambda_chat, user)
    assert usage["tokens"] == 1000
    assert usage["turns"] == 1


def test_a_crashed_turn_holds_the_lease_until_it_expires(
    lambda_chat, fake_cohere, database, configure
):
    # Given a turn claimed by a function that died before finishing it
    configure()
    from todo_backend.chat import turns
    from todo_backend.core.settings import get_settings

    user = ChatUser()
    crashed = turns.claim(database, get_settings(), user.id, None, "Lost", "key-crashed")
    assert crashed.turn_id is not None

    # When the user chats meanwhile, Then another turn is still running
    fake_cohere.script(text_reply("Back."), text_reply("Resumed."))
    assert chat(lambda_chat, user, "Hello?").status_code == 429

    # When the dead turn's lease has run out (its budget and margin: made to have passed)
    database.fetch_one(
        text(
            "UPDATE chat_leases SET until = now() - interval '1 second' "
            "WHERE user_id = :u RETURNING user_id"
        ).bindparams(u=user.id)
    )
    database.fetch_one(
        text(
            "UPDATE chat_turns SET started_at = started_at - interval '10 minutes' "
            "WHERE id = :t RETURNING id"
        ).bindparams(t=crashed.turn_id)
    )

    # Then the user can chat again, and the dead turn can be resumed with its key
    response = chat(lambda_chat, user, "Hello?")
    assert response.status_code == 200, response.text
    resumed = keyed(lambda_chat, user, "Lost", "key-crashed")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["response"] == "Resumed."
