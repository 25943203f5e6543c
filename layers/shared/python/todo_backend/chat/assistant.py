"""One chat turn with Cohere's Command model, using the task tools for the authenticated user.

The turn is stateless: history comes from the database, and no connection is held while Cohere
is called (each database step checks a connection out and back in). Every Cohere call shares one
time budget so the whole turn answers within API Gateway's 29 seconds.
"""

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from todo_backend.chat import conversations
from todo_backend.chat.conversations import encodable
from todo_backend.chat.models import ChatRequest, ChatResponse, ToolCallPublic
from todo_backend.core.db import Database
from todo_backend.core.errors import ServiceUnavailableError, UpstreamError
from todo_backend.core.observability import count, logger, milliseconds
from todo_backend.core.settings import Settings, get_settings
from todo_backend.tasks.tools import (
    TOOLS,
    ToolContext,
    cohere_tool_definitions,
    execute_tool,
    parse_arguments,
)

if TYPE_CHECKING:
    import cohere

COHERE_DEFAULT_URL = "https://api.cohere.com"
# One retry of a transient upstream failure, only while this much of the budget is left.
RETRY_MIN_REMAINING_SECONDS = 8.0
RETRY_PAUSE_SECONDS = 0.5
MIN_CALL_SECONDS = 1.0
FAILED_TURN_NOTE = (
    "Sorry, the assistant service failed before I could finish replying. "
    "Any actions listed here were already carried out."
)
NO_TEXT_REPLY = "(no text reply)"
STEP_LIMIT_NOTE = "I had to stop before finishing that request; please check your tasks."

SYSTEM_PROMPT = """You are a helpful assistant that manages the user's to-do list.
Today's date is {today} (UTC).

Rules:
- Use the tools for every change to tasks; never claim a change you did not make with a tool.
- Before acting on a task named in words (not by id), call list_tasks to find it; never invent ids.
- If several tasks match, or the request is ambiguous, ask the user which one they mean.
- Resolve relative dates ("tomorrow", "next Friday") from today's date; send ISO 8601 dates.
- Repeating tasks: set recurrence to an RRULE and due_date to the first occurrence. "Every
  Monday" is FREQ=WEEKLY;BYDAY=MO, "every weekday" FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR, "every 2
  weeks" FREQ=WEEKLY;INTERVAL=2, "on the 1st of every month" FREQ=MONTHLY;BYMONTHDAY=1, "daily
  for 10 days" FREQ=DAILY;COUNT=10. Completing one creates the next automatically.
- Reminders: set remind_at to the moment to remind; "remind me an hour before" is the due_date
  minus one hour (e.g. due 2026-12-01T17:00:00Z gives remind_at 2026-12-01T16:00:00Z).
- For counts and progress ("how am I doing?"), call get_stats.
- After acting, confirm briefly what was done, naming the tasks.
- If a tool returns an error, explain it plainly and suggest what to do next."""


@dataclass
class TurnState:
    """What the turn has done so far; stored even when the turn fails."""

    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_plans: list[str] = field(default_factory=list)


@cache
def get_cohere_client() -> "cohere.ClientV2":
    """One client (and HTTP connection pool) per container."""
    # Imported on first use: the SDK costs import time that only chat turns need.
    import cohere

    settings = get_settings()
    assert settings.co_api_key is not None
    return cohere.ClientV2(
        api_key=settings.co_api_key.get_secret_value(),
        base_url=str(settings.co_api_url or COHERE_DEFAULT_URL).rstrip("/"),
        timeout=settings.chat_turn_budget_seconds,
        max_retries=0,
        client_name="todo-backend",
    )


def system_prompt(now: datetime | None = None) -> str:
    today = (now or datetime.now(UTC)).strftime("%A, %Y-%m-%d")
    return SYSTEM_PROMPT.format(today=today)


def replay(history: list[Any]) -> list[dict[str, Any]]:
    """Earlier messages in Cohere's v2 format, with the tool calls and results they carried."""
    messages: list[dict[str, Any]] = []
    for row in history:
        if row["role"] == "user":
            messages.append({"role": "user", "content": row["content"]})
            continue
        calls = row["tool_calls"] or []
        plans = row["tool_plans"] or []
        for step in sorted({call.get("step", 0) for call in calls}):
            step_calls = [call for call in calls if call.get("step", 0) == step]
            messages.append(
                {
                    "role": "assistant",
                    "tool_plan": plans[step] if step < len(plans) else "",
                    "tool_calls": [_wire_call(call) for call in step_calls],
                }
            )
            messages.extend(
                {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(call["result"])}
                for call in step_calls
            )
        messages.append({"role": "assistant", "content": row["content"] or NO_TEXT_REPLY})
    return messages


def _wire_call(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
    }


class Turn:
    """Runs the model/tool loop of one turn against a deadline."""

    def __init__(
        self, db: Database, settings: Settings, user_id: str, state: TurnState, deadline: float
    ) -> None:
        self.db = db
        self.settings = settings
        self.user_id = user_id
        self.state = state
        self.deadline = deadline

    def run(self, messages: list[dict[str, Any]]) -> str:
        for step in range(self.settings.chat_max_steps):
            reply = self._chat(messages)
            if not reply.calls:
                return reply.text
            self.state.tool_plans.append(reply.tool_plan)
            messages.append(
                {
                    "role": "assistant",
                    "tool_plan": reply.tool_plan,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.raw_arguments},
                        }
                        for call in reply.calls
                    ],
                }
            )
            for call in reply.calls:
                result = self._execute(call, step)
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
                )
        return STEP_LIMIT_NOTE

    def _execute(self, call: "ModelCall", step: int) -> dict[str, Any]:
        raw_arguments = encodable(call.raw_arguments)
        # JSON escapes can decode to a lone surrogate, which nothing downstream can encode.
        arguments = encodable(parse_arguments(call.raw_arguments))
        result = execute_tool(ToolContext(self.db, self.user_id), call.name, arguments)
        count("ToolCalls", tool=call.name if call.name in TOOLS else "unknown")
        logger.info("tool call", extra={"tool": call.name, "ok": "error" not in result})
        self.state.tool_calls.append(
            {
                "id": call.id,
                "name": call.name,
                "arguments": arguments if arguments is not None else {"raw": raw_arguments},
                "result": result,
                "step": step,
            }
        )
        return result

    def _chat(self, messages: list[dict[str, Any]]) -> "ModelReply":
        import cohere
        import httpx
        from cohere.core.api_error import ApiError

        for attempt in (1, 2):
            remaining = self.deadline - time.monotonic()
            if remaining < MIN_CALL_SECONDS:
                raise UpstreamError("The assistant took too long to answer", 504)
            started = time.perf_counter()
            try:
                response = get_cohere_client().chat(
                    model=self.settings.cohere_model,
                    messages=messages,  # type: ignore[arg-type]
                    tools=cohere_tool_definitions(),  # type: ignore[arg-type]
                    request_options={"timeout": remaining, "max_retries": 0},
                )
            except cohere.errors.TooManyRequestsError as error:
                raise UpstreamError(
                    "The assistant is rate limited, try again shortly",
                    429,
                    retry_after=(error.headers or {}).get("retry-after"),
                ) from error
            except httpx.TimeoutException as error:
                raise UpstreamError("The assistant took too long to answer", 504) from error
            except (AttributeError, TypeError, ValueError) as error:
                # The SDK parses replies without validating them: a malformed 200 fails here.
                raise _unreadable_reply() from error
            except (ApiError, httpx.TransportError) as error:
                status = getattr(error, "status_code", None)
                if status == 504:
                    raise UpstreamError("The assistant took too long to answer", 504) from error
                transient = status is None or status >= 500
                left = self.deadline - time.monotonic()
                if attempt == 1 and transient and left > RETRY_MIN_REMAINING_SECONDS:
                    logger.warning("cohere transient error, retrying", extra={"status": status})
                    time.sleep(RETRY_PAUSE_SECONDS)
                    continue
                logger.error("cohere error", extra={"status": status})
                raise UpstreamError("The assistant service failed", 502) from error
            finally:
                milliseconds("CohereLatency", (time.perf_counter() - started) * 1000)
            try:
                return ModelReply.from_message(response.message)
            except (AttributeError, TypeError, ValueError) as error:
                raise _unreadable_reply() from error
        raise AssertionError("unreachable")


def _unreadable_reply() -> UpstreamError:
    logger.error("cohere sent a malformed reply")
    return UpstreamError("The assistant service sent an unreadable reply", 502)


@dataclass(frozen=True)
class ModelCall:
    """One tool call as the model asked for it; the id is settled once, here."""

    id: str
    name: str
    raw_arguments: str


@dataclass(frozen=True)
class ModelReply:
    text: str
    tool_plan: str
    calls: list[ModelCall]

    @classmethod
    def from_message(cls, message: Any) -> "ModelReply":
        if message is None:
            raise ValueError("no message in the reply")
        calls = []
        for call in message.tool_calls or []:
            function = call.function
            if function is None:
                raise ValueError("a tool call without a function")
            arguments = function.arguments
            calls.append(
                ModelCall(
                    id=str(call.id or f"call_{uuid.uuid4().hex[:12]}"),
                    name=encodable(str(function.name or "")),
                    raw_arguments=arguments if isinstance(arguments, str) else "{}",
                )
            )
        text = "".join(
            part.text
            for part in (message.content or [])
            if getattr(part, "type", None) == "text" and isinstance(part.text, str)
        ).strip()
        return cls(
            text=encodable(text), tool_plan=encodable(str(message.tool_plan or "")), calls=calls
        )


def run_turn(db: Database, user_id: str, request: ChatRequest) -> ChatResponse:
    """Store the user's message, let the model act with the tools, store and return its reply."""
    settings = get_settings()
    if settings.co_api_key is None:
        raise ServiceUnavailableError("Chat is not configured (no Cohere API key)")
    # The budget covers the whole turn (database steps and the first turn's SDK import too), so
    # the answer, stored, leaves before the function's timeout.
    deadline = time.monotonic() + settings.chat_turn_budget_seconds
    conversation_id, history = conversations.start_turn(
        db, user_id, request.conversation_id, request.message
    )
    state = TurnState()
    get_cohere_client()
    messages = [
        {"role": "system", "content": system_prompt()},
        *replay(history),
        {"role": "user", "content": request.message},
    ]
    count("ChatTurns")
    try:
        response = Turn(db, settings, user_id, state, deadline).run(messages)
    except Exception as error:
        if isinstance(error, UpstreamError):
            count("CohereErrors")
        # Whatever failed, the tool calls that already ran are kept with their results.
        if state.tool_calls:
            conversations.finish_turn(
                db, conversation_id, FAILED_TURN_NOTE, state.tool_calls, state.tool_plans
            )
        raise
    conversations.finish_turn(db, conversation_id, response, state.tool_calls, state.tool_plans)
    return ChatResponse(
        conversation_id=conversation_id,
        response=response,
        tool_calls=[
            ToolCallPublic(name=c["name"], arguments=c["arguments"], result=c["result"])
            for c in state.tool_calls
        ],
    )
