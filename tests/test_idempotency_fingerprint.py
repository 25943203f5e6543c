"""Idempotency-Key bound to the request body (issue 9 item 4; API.md "Authentication and input"):
the first create stores a fingerprint of its body; a repeat with the same key and the same body
returns the first task, with another body it is a 422 and nothing is created."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text, update

THREADS = 6


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


def post(api: Any, user: Any, key: str, body: Any, prefix: str = "/api") -> Any:
    headers = {**user.headers, "Idempotency-Key": key}
    if isinstance(body, str):
        headers["Content-Type"] = "application/json"
        return api.post(f"{prefix}/tasks", content=body, headers=headers)
    return api.post(f"{prefix}/tasks", json=body, headers=headers)


def titles(api: Any, user: Any) -> list[str]:
    listed = api.get("/api/tasks", params={"sort": "title", "order": "asc"}, headers=user.headers)
    return [item["title"] for item in listed.json()["items"]]


def test_the_same_task_spelled_differently_is_a_repeat(tasks_api, user):
    # Given a create with a key
    key = new_key()
    first = post(tasks_api, user, key, {"title": "Buy milk", "tags": ["Home", "home"]})
    assert first.status_code == 201, first.text
    # When it is repeated with the same meaning: other key order, spacing, defaults spelled out,
    # title padding and tag case that validation normalises
    repeats = [
        '{"tags": ["home"],   "title": "Buy milk"}',
        {"title": "  Buy milk ", "tags": ["HOME"], "priority": "medium", "completed": False},
        {
            "title": "Buy milk",
            "tags": ["home"],
            "description": None,
            "due_date": None,
        },
    ]
    # Then each returns the first task (200), and only one exists
    for body in repeats:
        response = post(tasks_api, user, key, body)
        assert response.status_code == 200, (body, response.text)
        assert response.json() == first.json()
    assert titles(tasks_api, user) == ["Buy milk"]


def test_every_different_body_is_refused_in_both_path_forms(tasks_api, user):
    key = new_key()
    first = post(tasks_api, user, key, {"title": "Buy milk", "priority": "high"})
    assert first.status_code == 201
    different = [
        {"title": "Buy oat milk", "priority": "high"},
        {"title": "Buy milk"},
        {"title": "Buy milk", "priority": "high", "description": ""},
        {"title": "Buy milk", "priority": "high", "completed": True},
        {"title": "Buy milk", "priority": "high", "due_date": "2030-01-01"},
        {"title": "Buy milk", "priority": "high", "tags": ["x"]},
    ]
    for prefix in ("/api", f"/api/{user.id}"):
        for body in different:
            response = post(tasks_api, user, key, body, prefix)
            assert response.status_code == 422, (prefix, body, response.text)
            [error] = response.json()["detail"]
            assert error["loc"] == ["header", "idempotency-key"], body
            assert "different request body" in error["msg"]
        # And the same body still repeats in this path form
        same = post(tasks_api, user, key, {"title": "Buy milk", "priority": "high"}, prefix)
        assert same.status_code == 200
        assert same.json()["id"] == first.json()["id"]
    assert titles(tasks_api, user) == ["Buy milk"]


def test_racing_creates_with_one_key_and_different_bodies(user, configure):
    # Given the app with a pool that serves requests in parallel
    from fastapi.testclient import TestClient

    from functions.tasks.app import app

    configure(DB_POOL_SIZE=str(THREADS))
    clients = [TestClient(app, raise_server_exceptions=False) for _ in range(THREADS)]
    key = new_key()
    headers = {**user.headers, "Idempotency-Key": key}
    barrier = threading.Barrier(THREADS)

    def send(index: int) -> Any:
        barrier.wait(timeout=10)
        body = {"title": "Same" if index % 2 else f"Different {index}"}
        return index, clients[index].post("/api/tasks", json=body, headers=headers)

    # When THREADS clients send a create with the same key at once, half with one body
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(send, range(THREADS)))
    # Then exactly one created a task; the others got it back (same body) or a 422 (another one)
    created = [(index, r) for index, r in results if r.status_code == 201]
    assert len(created) == 1, [(i, r.status_code, r.text) for i, r in results]
    winner_index, winner = created[0]
    for index, response in results:
        if index == winner_index:
            continue
        same_body = (index % 2 == 1) and (winner_index % 2 == 1)
        assert response.status_code == (200 if same_body else 422), (index, response.text)
        if same_body:
            assert response.json()["id"] == winner.json()["id"]
    assert titles(clients[0], user) == [winner.json()["title"]]


def test_a_key_stored_before_fingerprints_existed_repeats_with_any_body(tasks_api, user, database):
    # Given a task created with a key before the fingerprint column (it holds NULL)
    from todo_backend.tasks.service import tasks

    key = new_key()
    first = post(tasks_api, user, key, {"title": "Old"})
    database.run(
        lambda connection: connection.execute(
            update(tasks)
            .where(tasks.c.id == first.json()["id"])
            .values(idempotency_fingerprint=None)
        )
    )
    # When the key is repeated with another body
    response = post(tasks_api, user, key, {"title": "New"})
    # Then the first task is returned, as before fingerprints
    assert response.status_code == 200
    assert response.json()["id"] == first.json()["id"]


def test_the_fingerprint_is_stored_only_with_a_key(tasks_api, user, database):
    with_key = post(tasks_api, user, new_key(), {"title": "Keyed"}).json()
    without = tasks_api.post("/api/tasks", json={"title": "Plain"}, headers=user.headers).json()
    rows = database.fetch_all(
        text(
            "SELECT id, idempotency_fingerprint AS fingerprint FROM tasks WHERE id IN (:a, :b)"
        ).bindparams(a=with_key["id"], b=without["id"])
    )
    fingerprints = {row["id"]: row["fingerprint"] for row in rows}
    assert len(fingerprints[with_key["id"]]) == 64
    assert fingerprints[without["id"]] is None
