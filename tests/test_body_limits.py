"""Bounded input and bounded errors (issue 9 item 1; API.md "Authentication and input"): a body over
1 MiB is a 413 before anything parses it, in ASGI and in the Lambda handler (base64 too); a 422 is
at most 16 KiB whatever the input, and cheap to produce."""

import base64
import json
import time
from typing import Any

import pytest

from tests.support.lambda_events import LambdaContext, http_api_event

MIB = 1024 * 1024
MAX_422 = 16 * 1024


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with trailing whitespace to exactly `size` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def post_raw(api: Any, user: Any, path: str, content: bytes, method: str = "POST") -> Any:
    headers = {**user.headers, "Content-Type": "application/json"}
    return api.request(method, path, content=content, headers=headers)


def assert_too_large(response: Any) -> None:
    assert response.status_code == 413, response.text[:300]
    assert response.json() == {"detail": "Request body too large (at most 1 MiB)"}


# --- 413 --------------------------------------------------------------------------------------


def test_a_body_of_exactly_1_mib_is_accepted(tasks_api, user):
    response = post_raw(tasks_api, user, "/api/tasks", padded({"title": "Fits"}, MIB))
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "Fits"


@pytest.mark.parametrize(("method", "suffix"), [("POST", ""), ("PUT", "/{id}"), ("PATCH", "/{id}")])
def test_a_body_over_1_mib_is_413_and_changes_nothing(
    tasks_api, user, task_factory, method, suffix
):
    # Given a task
    task = task_factory(user, "Before")
    # When a body one byte over 1 MiB is sent to a route that takes a body, in either path form
    for prefix in ("/api", f"/api/{user.id}"):
        path = f"{prefix}/tasks" + suffix.format(id=task.id)
        response = post_raw(tasks_api, user, path, padded({"title": "After"}, MIB + 1), method)
        # Then it is refused with 413 and a JSON detail
        assert_too_large(response)
    # And nothing changed
    listed = tasks_api.get("/api/tasks", headers=user.headers).json()
    assert [item["title"] for item in listed["items"]] == ["Before"]


def test_the_complete_route_refuses_a_large_body_too(tasks_api, user, task_factory):
    task = task_factory(user, "Before")
    body = padded({"completed": True}, MIB + 1)
    response = post_raw(tasks_api, user, f"/api/tasks/{task.id}/complete", body, "PATCH")
    assert_too_large(response)
    assert tasks_api.get(f"/api/tasks/{task.id}", headers=user.headers).json()["completed"] is False


def test_chat_refuses_a_large_body(chat_api, user):
    body = padded({"message": "hi"}, 2 * MIB)
    assert_too_large(post_raw(chat_api, user, f"/api/{user.id}/chat", body))


def test_a_streamed_body_without_content_length_is_counted(user):
    # Given the ASGI app, and a body sent in chunks without a Content-Length header
    from fastapi.testclient import TestClient

    from functions.tasks.app import app

    client = TestClient(app, raise_server_exceptions=False)

    def chunks() -> Any:
        yield b'{"title": "x", "description": "'
        for _ in range(20):
            yield b"a" * 65536
        yield b'"}'

    headers = {**user.headers, "Content-Type": "application/json"}
    response = client.post("/api/tasks", content=chunks(), headers=headers)
    # Then the bytes actually received are counted: 413
    assert_too_large(response)


def test_the_lambda_handler_refuses_before_decoding(user):
    # Given the tasks function's Lambda handler
    from functions.tasks.app import handler

    headers = {**user.headers, "content-type": "application/json"}
    cases = {
        "plain": http_api_event(
            "POST", "/api/tasks", headers=headers, body=padded({"title": "x"}, MIB + 1).decode()
        ),
        "base64": http_api_event(
            "POST", "/api/tasks", headers=headers, body=padded({"title": "x"}, MIB + 1)
        ),
        "multi-byte characters": http_api_event(
            "POST",
            "/api/tasks",
            headers=headers,
            body=json.dumps({"title": "x", "description": "é" * (MIB // 2)}),
        ),
        # An event whose base64 text is over 1 MiB but decodes to less is not refused early.
    }
    for case, event in cases.items():
        result = handler(event, LambdaContext())
        assert result["statusCode"] == 413, case
        assert json.loads(result["body"]) == {"detail": "Request body too large (at most 1 MiB)"}
    fits = http_api_event(
        "POST", "/api/tasks", headers=headers, body=padded({"title": "Fits"}, MIB)
    )
    assert len(fits["body"]) > MIB  # base64 is larger than the body it encodes
    assert handler(fits, LambdaContext())["statusCode"] == 201


def test_event_body_size_is_the_decoded_size():
    from todo_backend.core.limits import event_body_bytes

    for raw in (b"", b"a", b"ab", b"abc", b"abcd", bytes(range(256)) * 3):
        encoded = base64.b64encode(raw).decode()
        assert event_body_bytes({"body": encoded, "isBase64Encoded": True}) == len(raw)
    assert event_body_bytes({"body": "é€", "isBase64Encoded": False}) == 5
    assert event_body_bytes({"body": None}) == 0
    assert event_body_bytes({}) == 0


# --- bounded 422 --------------------------------------------------------------------------------


def amplification_cases() -> dict[str, bytes]:
    """Bodies just under 1 MiB that used to be echoed back many times over."""
    return {
        "250k empty tags": json.dumps({"title": "x", "tags": [""] * 200_000}).encode(),
        "many bad tags": json.dumps({"title": "x", "tags": ["\x00"] * 100_000}).encode(),
        "many unknown keys": json.dumps(
            {"title": "x", **{f"k{i}": 0 for i in range(80_000)}}
        ).encode(),
        "one huge unknown key": json.dumps({"title": "x", "k" * 900_000: 1}).encode(),
        "huge title": json.dumps({"title": "t" * 1_000_000}).encode(),
        "huge wrongly typed value": json.dumps({"title": ["t" * 100] * 9000}).encode(),
        "huge nested list": json.dumps({"title": "x", "priority": [[1] * 100] * 2000}).encode(),
        "huge lone-surrogate text": b'{"title": "' + b"\\ud800" * 170_000 + b'"}',
        "deep nesting": b'{"title": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        "huge malformed JSON": b'{"title": "' + b"x" * 1_000_000,
        "many errors everywhere": json.dumps(
            {
                "title": "",
                "description": 5,
                "priority": "urgent",
                "tags": [1] * 99,
                "due_date": "soon",
                "completed": "maybe",
            }
        ).encode(),
    }


def test_a_422_is_at_most_16_kib_and_cheap_whatever_the_input(tasks_api, user, task_factory):
    task = task_factory(user, "Mine")
    for case, body in amplification_cases().items():
        assert len(body) <= MIB, case
        for method, path in (
            ("POST", "/api/tasks"),
            ("PUT", f"/api/tasks/{task.id}"),
            ("PATCH", f"/api/tasks/{task.id}"),
        ):
            started = time.perf_counter()
            response = post_raw(tasks_api, user, path, body, method)
            elapsed = time.perf_counter() - started
            assert response.status_code == 422, (case, method, response.text[:300])
            assert len(response.text.encode()) <= MAX_422, (case, method, len(response.text))
            assert elapsed < 2.5, (case, method, elapsed)
            if response.status_code == 422:
                detail = response.json()["detail"]
                assert isinstance(detail, list) and detail, case
                assert all({"type", "loc", "msg"} <= set(error) for error in detail), case
    # And the task is untouched
    assert tasks_api.get(f"/api/tasks/{task.id}", headers=user.headers).json()["title"] == "Mine"


def test_a_huge_tags_list_is_one_error_naming_the_field(tasks_api, user):
    response = tasks_api.post(
        "/api/tasks", json={"title": "x", "tags": ["a"] * 5000}, headers=user.headers
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == 1
    assert detail[0]["loc"] == ["body", "tags"]
    assert "at most 10 tags" in detail[0]["msg"]


def test_duplicated_tags_are_accepted_up_to_ten_items_as_the_document_says(tasks_api, user):
    # Given tags with duplicates, ten items and eleven (the document's maxItems is 10)
    ten = tasks_api.post(
        "/api/tasks", json={"title": "x", "tags": ["home", "Home "] * 5}, headers=user.headers
    )
    eleven = tasks_api.post(
        "/api/tasks", json={"title": "x", "tags": ["home"] * 11}, headers=user.headers
    )
    # Then ten are stored once each, and eleven are one error naming the field
    assert ten.status_code == 201, ten.text
    assert ten.json()["tags"] == ["home"]
    assert eleven.status_code == 422
    assert [error["loc"] for error in eleven.json()["detail"]] == [["body", "tags"]]


def test_many_unknown_keys_are_one_error(tasks_api, user):
    body = {"title": "x", **{f"field{i}": i for i in range(1000)}}
    response = tasks_api.post("/api/tasks", json=body, headers=user.headers)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == 1
    assert "too many fields" in detail[0]["msg"]


def test_small_inputs_are_still_echoed_and_errors_named(tasks_api, user):
    # A small mistake keeps FastAPI's full error, input included: clients rely on it.
    response = tasks_api.post(
        "/api/tasks", json={"title": "x", "priority": "urgent"}, headers=user.headers
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "priority"]
    assert error["input"] == "urgent"
    assert error["type"] == "enum"


def test_large_inputs_are_not_echoed(tasks_api, user):
    title = "t" * 5000
    response = tasks_api.post("/api/tasks", json={"title": title}, headers=user.headers)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "title"]
    assert "input" not in error
    assert title[:300] not in response.text


def test_the_number_of_errors_shown_is_capped_with_a_count_of_the_rest(tasks_api, user):
    body = {"title": "x", **{f"unknown{i}": i for i in range(31)}}
    response = tasks_api.post("/api/tasks", json=body, headers=user.headers)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == 21
    assert detail[-1] == {"type": "too_many_errors", "loc": [], "msg": "11 more errors not shown"}
