"""The five tools the model may call: their Cohere v2 definitions and their execution.

Each tool is a thin wrapper over the task service and acts for the authenticated user only: no
tool takes a user id. A failure is returned to the model as `{"error": ...}`, never raised.
"""

import json
from collections.abc import Callable
from typing import Any

from pydantic import Field, ValidationError

from todo_backend.core.db import Database, DatabaseUnavailableError
from todo_backend.core.errors import NotFoundError
from todo_backend.core.observability import logger
from todo_backend.tasks import service as tasks
from todo_backend.tasks.models import (
    Description,
    DueDate,
    Priority,
    SearchText,
    StrictModel,
    Tag,
    Tags,
    TaskCreate,
    TaskListQuery,
    TaskPublic,
    TaskStatus,
    TaskUpdate,
    Title,
)

LIST_LIMIT_MAX = 50
_PRIORITY = {"type": "string", "enum": [p.value for p in Priority]}
_DUE_DATE = {
    "type": "string",
    "description": "ISO 8601 date or date-time; without an offset it is UTC.",
}
_TAGS = {"type": "array", "items": {"type": "string"}, "description": "Short labels, at most 10."}
_TASK_ID = {"type": "integer", "description": "The id of the task, as list_tasks returns it."}


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


TOOL_DEFINITIONS: list[dict[str, Any]] = [
    _tool(
        "add_task",
        "Create a task for the user.",
        {
            "title": {"type": "string", "description": "What to do, 1-200 characters."},
            "description": {"type": "string", "description": "Optional details."},
            "priority": _PRIORITY,
            "due_date": _DUE_DATE,
            "tags": _TAGS,
        },
        ["title"],
    ),
    _tool(
        "list_tasks",
        "List the user's tasks, newest first, with optional filters. Use it to find a task's id.",
        {
            "status": {"type": "string", "enum": [s.value for s in TaskStatus]},
            "priority": _PRIORITY,
            "tag": {"type": "string"},
            "q": {"type": "string", "description": "Text to look for in title or description."},
            "overdue": {"type": "boolean", "description": "Only tasks past due and not done."},
            "limit": {"type": "integer", "description": f"At most {LIST_LIMIT_MAX} (default 20)."},
        },
        [],
    ),
    _tool(
        "complete_task",
        "Mark a task as completed, or as pending again with completed=false.",
        {"task_id": _TASK_ID, "completed": {"type": "boolean", "description": "Default true."}},
        ["task_id"],
    ),
    _tool("delete_task", "Delete a task permanently.", {"task_id": _TASK_ID}, ["task_id"]),
    _tool(
        "update_task",
        "Change a task's title, description, priority, due date or tags.",
        {
            "task_id": _TASK_ID,
            "title": {"type": "string"},
            "description": {"type": "string"},
            "priority": _PRIORITY,
            "due_date": _DUE_DATE,
            "tags": _TAGS,
        },
        ["task_id"],
    ),
]


class AddTaskArguments(StrictModel):
    title: Title
    description: Description | None = None
    priority: Priority = Priority.medium
    due_date: DueDate | None = None
    tags: Tags = Field(default_factory=list)


class ListTasksArguments(StrictModel):
    status: TaskStatus = TaskStatus.all
    priority: Priority | None = None
    tag: Tag | None = None
    q: SearchText | None = None
    overdue: bool | None = None
    limit: int = Field(default=20, ge=1, le=LIST_LIMIT_MAX)


class TaskIdArguments(StrictModel):
    task_id: int = Field(ge=1, le=2**63 - 1)


class CompleteTaskArguments(TaskIdArguments):
    completed: bool = True


class UpdateTaskArguments(TaskIdArguments):
    title: Title | None = None
    description: Description | None = None
    priority: Priority | None = None
    due_date: DueDate | None = None
    tags: Tags | None = None


SUMMARY_FIELDS = {"title", "description", "priority", "due_date", "tags", "completed"}


def _summary(task: TaskPublic, status: str) -> dict[str, Any]:
    """The task as the REST API shows it (same JSON, e.g. dates in UTC with `Z`)."""
    return {
        "task_id": task.id,
        "status": status,
        **task.model_dump(mode="json", include=SUMMARY_FIELDS),
    }


def _listed(task: TaskPublic) -> dict[str, Any]:
    return _summary(task, "completed" if task.completed else "pending")


def add_task(db: Database, user_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    parsed = AddTaskArguments.model_validate(arguments)
    task, _ = tasks.create_task(db, user_id, TaskCreate(**parsed.model_dump()))
    return _summary(task, "created")


def list_tasks(db: Database, user_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    parsed = ListTasksArguments.model_validate(arguments)
    page = tasks.list_tasks(db, user_id, TaskListQuery(**parsed.model_dump()))
    return {"tasks": [_listed(task) for task in page.items], "total": page.total}


def complete_task(db: Database, user_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    parsed = CompleteTaskArguments.model_validate(arguments)
    task = tasks.set_completion(db, user_id, parsed.task_id, parsed.completed)
    return {
        "task_id": task.id,
        "status": "completed" if task.completed else "pending",
        "title": task.title,
    }


def delete_task(db: Database, user_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    parsed = TaskIdArguments.model_validate(arguments)
    task = tasks.delete_task(db, user_id, parsed.task_id)
    return {"task_id": task.id, "status": "deleted", "title": task.title}


def update_task(db: Database, user_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    parsed = UpdateTaskArguments.model_validate(arguments)
    changes = parsed.model_dump(exclude_unset=True, exclude={"task_id"})
    task = tasks.update_task(db, user_id, parsed.task_id, TaskUpdate(**changes))
    return _summary(task, "updated")


TOOLS: dict[str, Callable[[Database, str, dict[str, Any]], dict[str, Any]]] = {
    "add_task": add_task,
    "list_tasks": list_tasks,
    "complete_task": complete_task,
    "delete_task": delete_task,
    "update_task": update_task,
}


def _validation_message(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in issue['loc']) or 'arguments'}: {issue['msg']}"
        for issue in error.errors()
    )


def parse_arguments(raw: str | None) -> dict[str, Any] | None:
    """The model's JSON-string arguments as an object, or None when they are not one."""
    try:
        value = json.loads(raw or "{}")
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def execute_tool(
    db: Database, user_id: str, name: str, arguments: dict[str, Any] | None
) -> dict[str, Any]:
    """Run one tool call for `user_id`; every failure becomes `{"error": ...}`."""
    tool = TOOLS.get(name)
    if tool is None:
        return {"error": f"unknown tool {name!r}; available: {', '.join(TOOLS)}"}
    if arguments is None:
        return {"error": "arguments must be a JSON object"}
    # Models often send null for parameters they mean to leave out.
    present = {key: value for key, value in arguments.items() if value is not None}
    try:
        return tool(db, user_id, present)
    except ValidationError as error:
        return {"error": f"invalid arguments: {_validation_message(error)}"}
    except NotFoundError as error:
        return {"error": f"{error.detail}: it does not exist; call list_tasks to find ids"}
    except DatabaseUnavailableError:
        return {"error": "the task database is unavailable right now"}
    except Exception:
        # The contract: a tool never raises to the model. Logged (without arguments) to be fixed.
        logger.exception("tool failed", extra={"tool": name})
        return {"error": "the tool failed unexpectedly"}
