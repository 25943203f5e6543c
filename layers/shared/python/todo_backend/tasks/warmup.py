"""The task routes' SnapStart warm-up (see `todo_backend.core.snapstart`): every route, in both
path forms, the common list shapes and the error paths, for a synthetic user. The tasks it
creates it deletes again, and `forget_warm_up_events` (a `release` hook) deletes the task events
those writes queued in the outbox, so that publishing a version publishes no event for the
synthetic user."""

from todo_backend.core.observability import logger
from todo_backend.core.snapstart import WARM_UP_USER, WarmUpClient

LIST_QUERIES: tuple[dict[str, str], ...] = (
    {},
    {"status": "pending"},
    {"status": "completed"},
    {"sort": "due_date", "order": "asc"},
    {"tag": "warm-up", "q": "warm"},
)
LARGEST_ID = 2**63 - 1


def warm_task_routes(client: WarmUpClient) -> None:
    import uuid

    client.request("GET", "/api/health", authenticated=False)
    client.request("GET", "/api/tasks", authenticated=False)  # 401
    client.request("GET", f"/api/{client.user}-other/tasks")  # 403
    for query in LIST_QUERIES:
        client.request("GET", "/api/tasks", query=query)
    client.request("GET", f"/api/{client.user}/tasks")
    client.request("GET", "/api/tasks", query={"limit": "0"})  # 422
    client.request("POST", "/api/tasks", body={"title": ""})  # 422
    client.request("GET", f"/api/tasks/{LARGEST_ID}")  # 404

    body = {"title": "SnapStart warm-up", "tags": ["warm-up"], "due_date": "2030-01-01"}
    created: list[int] = []
    try:
        _, task = client.request("POST", "/api/tasks", body=body)
        created.append(task["id"])
        key = {"idempotency-key": f"snapstart-{uuid.uuid4()}"}
        _, keyed = client.request("POST", f"/api/{client.user}/tasks", body=body, headers=key)
        created.append(keyed["id"])
        client.request("POST", f"/api/{client.user}/tasks", body=body, headers=key)  # a repeat
        path = f"/api/tasks/{task['id']}"
        client.request("GET", path)
        client.request("PATCH", path, body={"priority": "high", "description": "warm"})
        client.request("PUT", path, body={"title": "SnapStart warm-up", "completed": True})
        client.request("PATCH", f"{path}/complete")
        client.request("PATCH", f"{path}/complete", body={"completed": True})
        client.request("GET", f"/api/{client.user}/tasks/{keyed['id']}")
    finally:
        for task_id in created:
            client.request("DELETE", f"/api/tasks/{task_id}")


def forget_warm_up_events() -> int:
    """Delete the warm-up user's task events that are neither relayed nor leased by a relay run
    (one statement; rows a concurrent claim holds are skipped, not waited for: that run
    publishes them). How many were deleted."""
    from sqlalchemy import delete, func, or_, select

    from todo_backend.core.db import get_database
    from todo_backend.tasks.service import task_events

    unleased = (
        select(task_events.c.id)
        .where(
            task_events.c.user_id == WARM_UP_USER,
            task_events.c.relayed_at.is_(None),
            or_(task_events.c.claimed_until.is_(None), task_events.c.claimed_until < func.now()),
        )
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = delete(task_events).where(task_events.c.id.in_(unleased))
    deleted = int(get_database().run(lambda connection: connection.execute(statement).rowcount))
    logger.info("warm-up task events deleted", extra={"events": deleted})
    return deleted
