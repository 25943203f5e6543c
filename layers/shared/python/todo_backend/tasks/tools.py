"""The task tools, defined once and served to both the chat model (Cohere v2) and MCP clients.

A `Tool` is a name, a description, a pydantic model of its arguments (the JSON schema is derived
from it) and the function that runs it. Each acts for `ToolContext.user_id`, the token's subject:
no tool takes a user id. A failure is returned as `{"error": ...}`, never raised.
"""

import json
from collections.abc import Callable, Sequence
from functools import cache
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, Field, ValidationError, WithJsonSchema

from todo_backend.core.db import Database, DatabaseUnavailableError
from todo_backend.core.errors import DomainError, InvalidInputError, NotFoundError
from todo_backend.core.observability import logger
from todo_backend.tasks import service as tasks
from todo_backend.tasks.models import (
    LIST_CURSOR_MAX,
    Description,
    DueDate,
    DueFilter,
    Priority,
    Recurrence,
    SearchText,
    StrictModel,
    Tag,
    Tags,
    TaskCreate,
    TaskListQuery,
    TaskPublic,
    TaskStats,
    TaskStatus,
    TaskUpdate,
    Title,
)
from todo_backend.tasks.service import ChangeHook

LIST_LIMIT_MAX = 50
# get_stats' one parameter, for Cohere only (strict mode needs a required parameter).
STATS_SCOPE = {"type": "string", "enum": ["all"], "description": 'Always "all".'}
DUE_DATE_HELP = (
    "ISO 8601 date-time, without an offset in the user's local time (e.g. 2026-12-01T17:00:00); "
    "a bare date (2026-12-01) makes an all-day task."
)
ALL_DAY_HELP = "true: due all day on the due date's local date (a bare date is all-day anyway)."
DUE_FILTER_HELP = (
    "Only tasks due on the user's local day(s): today, tomorrow, next_7_days (today and the six "
    "days after), overdue, or none (no due date)."
)
CURSOR_HELP = (
    "For the next page: the next_cursor of a previous list_tasks result, with the same filters."
)
TAGS_HELP = "Short labels, at most 10."
TASK_ID_HELP = "The id of the task, as list_tasks returns it."
RECURRENCE_HELP = (
    "Makes the task repeat: an RFC 5545 RRULE with FREQ=DAILY|WEEKLY|MONTHLY|YEARLY and optional "
    "INTERVAL, BYDAY (weekly, e.g. MO,WE), BYMONTHDAY (monthly), COUNT or UNTIL. Needs a due_date "
    "(the first occurrence). Completing the task creates the next occurrence."
)
REMIND_AT_HELP = (
    "When to remind the user: ISO 8601 date-time (the user's local time without an offset), e.g. "
    "one hour before the due date."
)
# A bare date is accepted too, which JSON schema's "date-time" format would deny.
ToolDueDate = Annotated[DueDate, WithJsonSchema({"type": "string", "description": DUE_DATE_HELP})]
ToolRemindAt = Annotated[DueDate, WithJsonSchema({"type": "string", "description": REMIND_AT_HELP})]
ToolRecurrence = Annotated[
    Recurrence, WithJsonSchema({"type": "string", "description": RECURRENCE_HELP})
]


class ToolContext(NamedTuple):
    """Who a tool acts for, and what must commit with each task change it makes."""

    db: Database
    user_id: str
    hooks: Sequence[ChangeHook] = ()


# --- arguments ----------------------------------------------------------------------------------


class AddTaskArguments(StrictModel):
    title: Title = Field(description="What to do, 1-200 characters.")
    description: Description | None = Field(default=None, description="Optional details.")
    priority: Priority = Priority.medium
    due_date: ToolDueDate | None = None
    tags: Tags = Field(default_factory=list, description=TAGS_HELP)
    recurrence: ToolRecurrence | None = None
    remind_at: ToolRemindAt | None = None
    all_day: bool | None = Field(default=None, description=ALL_DAY_HELP)


class ListTasksArguments(StrictModel):
    status: TaskStatus = TaskStatus.all
    priority: Priority | None = None
    tag: Tag | None = None
    q: SearchText | None = Field(
        default=None, description="Text to look for in title or description."
    )
    overdue: bool | None = Field(default=None, description="Only tasks past due and not done.")
    due: DueFilter | None = Field(default=None, description=DUE_FILTER_HELP)
    limit: int = Field(
        default=20, ge=1, le=LIST_LIMIT_MAX, description=f"At most {LIST_LIMIT_MAX} (default 20)."
    )
    cursor: str | None = Field(default=None, max_length=LIST_CURSOR_MAX, description=CURSOR_HELP)


class TaskIdArguments(StrictModel):
    task_id: int = Field(ge=1, le=2**63 - 1, description=TASK_ID_HELP)


class CompleteTaskArguments(TaskIdArguments):
    completed: bool = Field(default=True, description="Default true.")


class UpdateTaskArguments(TaskIdArguments):
    title: Title | None = None
    description: Description | None = None
    priority: Priority | None = None
    due_date: ToolDueDate | None = None
    tags: Tags | None = Field(default=None, description=TAGS_HELP)
    recurrence: ToolRecurrence | None = None
    remind_at: ToolRemindAt | None = None
    all_day: bool | None = Field(default=None, description=ALL_DAY_HELP)


class NoArguments(StrictModel):
    pass


# --- execution ------------------------------------------------------------------------------------

SUMMARY_FIELDS = {
    "title",
    "description",
    "priority",
    "due_date",
    "tags",
    "completed",
    "recurrence",
    "remind_at",
    "all_day",
}


def _summary(task: TaskPublic, status: str) -> dict[str, Any]:
    """The task as the REST API shows it (same JSON, e.g. dates in UTC with `Z`)."""
    return {
        "task_id": task.id,
        "status": status,
        **task.model_dump(mode="json", include=SUMMARY_FIELDS),
    }


def _listed(task: TaskPublic) -> dict[str, Any]:
    return _summary(task, "completed" if task.completed else "pending")


def add_task(context: ToolContext, arguments: AddTaskArguments) -> dict[str, Any]:
    task, _ = tasks.create_task(
        context.db,
        context.user_id,
        TaskCreate(**arguments.model_dump()),
        hooks=context.hooks,
    )
    return _summary(task, "created")


def list_tasks(context: ToolContext, arguments: ListTasksArguments) -> dict[str, Any]:
    try:
        page = tasks.list_tasks(
            context.db, context.user_id, TaskListQuery(**arguments.model_dump())
        )
    except InvalidInputError as error:  # a cursor the tool did not return: name the argument
        return {"error": f"invalid arguments: {error.loc[-1]}: {error.detail}"}
    return {
        "tasks": [_listed(task) for task in page.items],
        "total": page.total,
        "next_cursor": page.next_cursor,
    }


def complete_task(context: ToolContext, arguments: CompleteTaskArguments) -> dict[str, Any]:
    task = tasks.set_completion(
        context.db, context.user_id, arguments.task_id, arguments.completed, hooks=context.hooks
    )
    result: dict[str, Any] = {
        "task_id": task.id,
        "status": "completed" if task.completed else "pending",
        "title": task.title,
    }
    if task.completed and task.next_task_id is not None:
        result["next_task_id"] = task.next_task_id  # the next occurrence of a recurring task
    return result


def delete_task(context: ToolContext, arguments: TaskIdArguments) -> dict[str, Any]:
    task = tasks.delete_task(context.db, context.user_id, arguments.task_id, hooks=context.hooks)
    return {"task_id": task.id, "status": "deleted", "title": task.title}


def update_task(context: ToolContext, arguments: UpdateTaskArguments) -> dict[str, Any]:
    changes = arguments.model_dump(exclude_unset=True, exclude={"task_id"})
    task = tasks.update_task(
        context.db, context.user_id, arguments.task_id, TaskUpdate(**changes), hooks=context.hooks
    )
    return _summary(task, "updated")


def get_stats(context: ToolContext, arguments: NoArguments) -> dict[str, Any]:
    return tasks.task_stats(context.db, context.user_id).model_dump(mode="json")


# --- the registry ---------------------------------------------------------------------------------


# OAuth scopes of MCP access tokens (a token without a `scope` claim may do everything).
READ_SCOPE = "tasks:read"
WRITE_SCOPE = "tasks:write"
SCOPES = (READ_SCOPE, WRITE_SCOPE)


class Tool(NamedTuple):
    name: str
    description: str
    arguments: type[BaseModel]
    run: Callable[[ToolContext, Any], dict[str, Any]]
    # Whether a call can change a task (and so must be recorded with its change).
    changes_tasks: bool = True
    # For MCP clients: a human-readable name, and whether a call may destroy something (clients
    # ask their user first) or may be repeated with no further effect.
    title: str = ""
    destructive: bool = False
    idempotent: bool = False
    # The JSON schema of a successful result (its `structuredContent` over MCP).
    output: Callable[[], dict[str, Any]] = lambda: {"type": "object"}
    # Cohere's strict mode (`strict_tools`) refuses a tool without a required parameter. These
    # parameters are required in the Cohere declaration only (MCP's schema is `input_schema`).
    cohere_required: tuple[str, ...] = ()
    # Parameters declared to Cohere only, to give a tool without any a required one; a call's
    # value for them is dropped before the arguments are validated.
    cohere_only: tuple[tuple[str, dict[str, Any]], ...] = ()

    @property
    def input_schema(self) -> dict[str, Any]:
        return _input_schema(self.arguments)

    @property
    def output_schema(self) -> dict[str, Any]:
        return self.output()

    @property
    def scope(self) -> str:
        """The OAuth scope a call needs."""
        return WRITE_SCOPE if self.changes_tasks else READ_SCOPE

    def cohere_definition(self) -> dict[str, Any]:
        """The tool as a Cohere v2 function tool, shaped for strict mode."""
        schema = self.input_schema
        extra = dict(self.cohere_only)
        required = [
            *schema["required"],
            *(name for name in self.cohere_required if name not in schema["required"]),
            *extra,
        ]
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    **schema,
                    "properties": {**schema["properties"], **extra},
                    "required": required,
                },
            },
        }


# --- result schemas (built when first asked for: only MCP's tools/list needs them) -------------


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its references inlined and pydantic's titles dropped (a
    nullable value stays `anyOf` with null: a result may hold null)."""
    definitions = schema.get("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
        return {
            # Under "properties" the keys are field names (a field may be called "title").
            key: {k: inline(v) for k, v in value.items()} if key == "properties" else inline(value)
            for key, value in node.items()
            if key not in {"title", "$defs", "default"}
        }

    return inline(schema)  # type: ignore[no-any-return]


@cache
def _task_fields() -> dict[str, Any]:
    return _inlined(TaskPublic.model_json_schema(mode="serialization"))["properties"]  # type: ignore[no-any-return]


def _summary_schema(*statuses: str) -> dict[str, Any]:
    """A task as `_summary` shows it: its id, what the call did, and the fields of the task."""
    fields = {name: field for name, field in _task_fields().items() if name in SUMMARY_FIELDS}
    return {
        "type": "object",
        "properties": {
            "task_id": {"type": "integer"},
            "status": {"type": "string", "enum": list(statuses)},
            **fields,
        },
        "required": ["task_id", "status", *fields],
    }


def _changed_task_schema(*statuses: str, more: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "task_id": {"type": "integer"},
            "status": {"type": "string", "enum": list(statuses)},
            "title": {"type": "string"},
            **(more or {}),
        },
        "required": ["task_id", "status", "title"],
    }


def _list_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "tasks": {"type": "array", "items": _summary_schema("pending", "completed")},
            "total": {"type": "integer", "minimum": 0},
            "next_cursor": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "description": "Pass it as cursor for the next page; null on the last.",
            },
        },
        "required": ["tasks", "total", "next_cursor"],
    }


def _stats_schema() -> dict[str, Any]:
    return _inlined(TaskStats.model_json_schema(mode="serialization"))


def _completion_schema() -> dict[str, Any]:
    next_task = {"type": "integer", "description": "The next occurrence of a recurring task."}
    return _changed_task_schema("completed", "pending", more={"next_task_id": next_task})


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "add_task",
            "Create a task for the user.",
            AddTaskArguments,
            add_task,
            title="Add a task",
            output=lambda: _summary_schema("created"),
        ),
        Tool(
            "list_tasks",
            "List the user's tasks, newest first, with optional filters. "
            "Use it to find a task's id. A result's next_cursor, when not null, lists the next "
            "page.",
            ListTasksArguments,
            list_tasks,
            changes_tasks=False,
            title="List tasks",
            idempotent=True,
            output=_list_schema,
            cohere_required=("status",),
        ),
        Tool(
            "complete_task",
            "Mark a task as completed, or as pending again with completed=false.",
            CompleteTaskArguments,
            complete_task,
            title="Complete a task",
            idempotent=True,
            output=_completion_schema,
        ),
        Tool(
            "delete_task",
            "Delete a task permanently.",
            TaskIdArguments,
            delete_task,
            title="Delete a task",
            destructive=True,
            output=lambda: _changed_task_schema("deleted"),
        ),
        Tool(
            "update_task",
            "Change a task's title, description, priority, due date, tags, recurrence or "
            "reminder time.",
            UpdateTaskArguments,
            update_task,
            title="Update a task",
            # Overwrites what it is given: the fields it replaces are lost (e.g. a description).
            destructive=True,
            idempotent=True,
            output=lambda: _summary_schema("updated"),
        ),
        Tool(
            "get_stats",
            "Counts of the user's tasks: total, pending, completed, overdue, due today (local), "
            "pending by priority, completed in the last 7 days.",
            NoArguments,
            get_stats,
            changes_tasks=False,
            title="Task statistics",
            idempotent=True,
            output=_stats_schema,
            cohere_only=(("scope", STATS_SCOPE),),
        ),
    )
}


@cache
def _input_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The arguments' JSON schema in the plain form both Cohere and MCP clients read: references
    inlined, an optional value shown as its type (leaving it out means "no value")."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def simplify(node: Any) -> Any:
        if isinstance(node, list):
            return [simplify(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return simplify(definitions[node["$ref"].rsplit("/", 1)[-1]])
        options = node.get("anyOf")
        if options and len(options) == 2 and {"type": "null"} in options:
            merged = {k: v for k, v in node.items() if k not in {"anyOf", "default"}}
            return simplify({**next(o for o in options if o != {"type": "null"}), **merged})
        return {
            key: simplify(value)
            for key, value in node.items()
            if key != "title" and not (key == "default" and value is None)
        }

    properties = {name: simplify(value) for name, value in schema["properties"].items()}
    return {
        "type": "object",
        "properties": properties,
        "required": list(schema.get("required", [])),
    }


@cache
def _cohere_tool_definitions() -> tuple[dict[str, Any], ...]:
    return tuple(tool.cohere_definition() for tool in TOOLS.values())


def cohere_tool_definitions() -> list[dict[str, Any]]:
    return list(_cohere_tool_definitions())


def _validation_message(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in issue['loc']) or 'arguments'}: {issue['msg']}"
        for issue in error.errors()
    )


def parse_arguments(raw: str | None) -> dict[str, Any] | None:
    """The model's JSON-string arguments as an object, or None when they are not one."""
    try:
        value = json.loads(raw or "{}")
    except (json.JSONDecodeError, TypeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def validated_arguments(name: str, arguments: dict[str, Any]) -> BaseModel | dict[str, Any]:
    """A known tool's arguments, validated as `execute_tool` validates them; else the error
    result."""
    tool = TOOLS[name]
    present = {key: value for key, value in arguments.items() if value is not None}
    try:
        return tool.arguments.model_validate(present)
    except ValidationError as error:
        return {"error": f"invalid arguments: {_validation_message(error)}"}


def execute_tool(
    context: ToolContext, name: str, arguments: dict[str, Any] | None
) -> dict[str, Any]:
    """Run one tool call for `context.user_id`; every failure becomes `{"error": ...}`."""
    tool = TOOLS.get(name)
    if tool is None:
        return {"error": f"unknown tool {name!r}; available: {', '.join(TOOLS)}"}
    if arguments is None:
        return {"error": "arguments must be a JSON object"}
    # Models often send null for parameters they mean to leave out.
    dropped = {name for name, _ in tool.cohere_only}
    present = {
        key: value for key, value in arguments.items() if value is not None and key not in dropped
    }
    try:
        return tool.run(context, tool.arguments.model_validate(present))
    except ValidationError as error:
        return {"error": f"invalid arguments: {_validation_message(error)}"}
    except NotFoundError as error:
        return {"error": f"{error.detail}: it does not exist; call list_tasks to find ids"}
    except DomainError as error:  # e.g. a recurrence without a due date
        return {"error": str(error)}
    except DatabaseUnavailableError:
        return {"error": "the task database is unavailable right now"}
    except Exception:
        # The contract: a tool never raises to the model. Logged (without arguments) to be fixed.
        logger.exception("tool failed", extra={"tool": name})
        return {"error": "the tool failed unexpectedly"}
