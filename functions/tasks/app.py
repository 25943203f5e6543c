"""Lambda function `tasks`: the task REST API. Routing only; the logic is in the shared layer.

Routes are `async def` although the database calls block: a Lambda container serves one request
at a time, so FastAPI's worker-thread hop for sync routes would be pure per-request overhead.
"""

import gc
import importlib

gc.disable()  # while the function initialises; register_snapstart (last) enables it

from typing import Annotated

from fastapi import Body, Depends, Header, Path, Query, Request, Response, status
from mangum import Mangum

from todo_backend.core.api import (
    CurrentUser,
    DatabaseDep,
    QueryModel,
    create_app,
    errors,
    include_user_routes,
    lazy_model_response,
    location_of,
    user_router,
)
from todo_backend.core.db import get_database
from todo_backend.core.observability import instrumented
from todo_backend.core.snapstart import register as register_snapstart
from todo_backend.tasks import reminders
from todo_backend.tasks import service as tasks
from todo_backend.tasks.models import (
    IdempotencyKey,
    ReminderList,
    TagList,
    TaskCompletion,
    TaskCreate,
    TaskListQuery,
    TaskPage,
    TaskPublic,
    TaskStats,
    TaskUpdate,
)
from todo_backend.tasks.warmup import forget_warm_up_events, warm_task_routes
from todo_backend.users import service as users
from todo_backend.users.models import SettingsUpdate, UserSettings

app = create_app("Todo tasks API", "Create, list, update and delete your tasks.")

router = user_router(app)

TaskId = Annotated[int, Path(ge=1, le=2**63 - 1)]
TaskListQueryDep = Annotated[TaskListQuery, Depends(QueryModel(TaskListQuery))]


async def time_zone_header(
    request: Request,
    time_zone: Annotated[
        str | None,
        Header(
            description="The user's IANA time zone, stored when none is yet (then ignored);"
            " an unknown name is ignored"
        ),
    ] = None,
) -> None:
    """Stores a `Time-Zone` header's zone for a user without one (once per container and user:
    the statements that follow bring the zone along).

    Every route with this dependency also depends on `CurrentUser`: `AuthenticatedRoute` has
    set `request.state.user` before FastAPI solves anything. Reading it (and the container's
    database) here rather than depending on `CurrentUser` and `DatabaseDep` again saves FastAPI
    three more dependency solves per request (cached ones are still walked: ~25 us each)."""
    if time_zone is not None:
        users.request_zone(get_database(), request.state.user, time_zone)


# A route's dependency: the task statements read the user's zone themselves.
ZoneHeader = Annotated[None, Depends(time_zone_header)]


@app.get("/api/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/tasks", responses=errors())
async def list_tasks(
    user: CurrentUser, db: DatabaseDep, query: TaskListQueryDep, _zone: ZoneHeader
) -> TaskPage:
    return tasks.list_tasks(db, user, query)


@router.post(
    "/tasks",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": TaskPublic, "description": "Repeat of an idempotent create"},
        **errors(),
    },
)
async def create_task(
    request: Request,
    user: CurrentUser,
    db: DatabaseDep,
    body: TaskCreate,
    response: Response,
    _zone: ZoneHeader,
    idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
) -> TaskPublic:
    task, created = tasks.create_task(db, user, body, idempotency_key)
    response.headers["Location"] = location_of(request, task.id)
    if not created:
        response.status_code = status.HTTP_200_OK
    return task


@router.get("/tasks/{task_id}", responses=errors(404))
async def get_task(
    user: CurrentUser, db: DatabaseDep, task_id: TaskId, _zone: ZoneHeader
) -> TaskPublic:
    return tasks.get_task(db, user, task_id)


@router.put("/tasks/{task_id}", responses=errors(404))
async def replace_task(
    user: CurrentUser, db: DatabaseDep, task_id: TaskId, body: TaskCreate, _zone: ZoneHeader
) -> TaskPublic:
    return tasks.replace_task(db, user, task_id, body)


@router.patch("/tasks/{task_id}", responses=errors(404))
async def update_task(
    user: CurrentUser, db: DatabaseDep, task_id: TaskId, body: TaskUpdate, _zone: ZoneHeader
) -> TaskPublic:
    return tasks.update_task(db, user, task_id, body)


@router.patch("/tasks/{task_id}/complete", responses=errors(404))
async def complete_task(
    user: CurrentUser,
    db: DatabaseDep,
    task_id: TaskId,
    _zone: ZoneHeader,
    body: Annotated[TaskCompletion | None, Body()] = None,
) -> TaskPublic:
    return tasks.set_completion(db, user, task_id, body.completed if body else None)


@router.delete("/tasks/{task_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404))
async def delete_task(
    user: CurrentUser, db: DatabaseDep, task_id: TaskId, _zone: ZoneHeader
) -> None:
    tasks.delete_task(db, user, task_id)


@router.get("/tags", responses=errors())
async def list_tags(user: CurrentUser, db: DatabaseDep) -> TagList:
    return tasks.list_tags(db, user)


@router.get("/stats", responses=errors())
async def task_stats(user: CurrentUser, db: DatabaseDep, _zone: ZoneHeader) -> TaskStats:
    return tasks.task_stats(db, user)


@router.get("/reminders", responses=errors())
async def due_reminders(user: CurrentUser, db: DatabaseDep, _zone: ZoneHeader) -> ReminderList:
    return reminders.due_reminders(db, user)


@router.get("/settings", responses=errors())
async def get_settings(
    user: CurrentUser,
    db: DatabaseDep,
    time_zone: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> UserSettings:
    return users.get_settings(db, user, time_zone)


@router.put("/settings", responses=errors())
async def put_settings(user: CurrentUser, db: DatabaseDep, body: SettingsUpdate) -> UserSettings:
    """Set the user's time zone: all-day dates and every instant stay as they are."""
    return users.put_settings(db, user, body.timezone)


@router.get(
    "/export",
    response_model=None,
    responses={
        200: lazy_model_response(
            "UserDataExport",
            lambda: importlib.import_module("todo_backend.userdata.models").UserDataExport,
            "A page of the user's data (at most 5 MB; `next_cursor` for the next)",
        ),
        **errors(),
    },
)
async def export_user_data(
    user: CurrentUser,
    db: DatabaseDep,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    # Imported when first asked for: a rare route stays out of every cold start.
    from todo_backend.userdata.export import export_page

    return Response(export_page(db, user, cursor), media_type="application/json")


@router.delete("/data", status_code=status.HTTP_204_NO_CONTENT, responses=errors())
async def erase_user_data(user: CurrentUser, db: DatabaseDep) -> None:
    from todo_backend.userdata.erase import erase_user_data

    erase_user_data(db, user)


include_user_routes(app, router)

handler = instrumented(Mangum(app, lifespan="off"))
register_snapstart(app, warm_task_routes, release=[forget_warm_up_events])
