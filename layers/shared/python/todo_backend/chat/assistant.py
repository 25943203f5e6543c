"""One chat turn with Cohere's Command model, using the task tools for the authenticated user.

The turn is stateless: history comes from the database, and no connection is held while Cohere
is called (each database step checks a connection out and back in). Every Cohere call shares one
time budget so the whole turn answers within API Gateway's 29 seconds.
"""

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy.exc import IntegrityError

from todo_backend.chat import actions, turns
from todo_backend.chat.bounds import TOOL_NAME_MAX, arguments_problem, bounded_result
from todo_backend.chat.conversations import (
    FAILED_TURN_NOTE,
    ConversationNotFoundError,
    encodable,
    settled,
)
from todo_backend.chat.models import (
    ChatRequest,
    ChatResponse,
    PendingActionPublic,
    ToolCallPublic,
)
from todo_backend.core.db import Database, DatabaseUnavailableError, WriteOutcomeUnknownError
from todo_backend.core.errors import (
    DomainError,
    InvalidInputError,
    ServiceUnavailableError,
    UpstreamError,
)
from todo_backend.core.observability import count, logger, metrics, milliseconds
from todo_backend.core.settings import Settings, get_settings
from todo_backend.tasks.tools import (
    TOOLS,
    ToolContext,
    cohere_tool_definitions,
    execute_tool,
    parse_arguments,
    validated_arguments,
)

if TYPE_CHECKING:
    import httpx
    from cohere.v2.client import V2Client

COHERE_DEFAULT_URL = "https://api.cohere.com"
# One retry of a transient upstream failure, only while this much of the budget is left.
RETRY_MIN_REMAINING_SECONDS = 8.0
RETRY_PAUSE_SECONDS = 0.5
MIN_CALL_SECONDS = 1.0
NO_TEXT_REPLY = "(no text reply)"
STEP_LIMIT_NOTE = "I had to stop before finishing that request; please check your tasks."
# A tool call starts only with this much of the budget left (the statement, then the reply).
TOOL_CALL_RESERVE_SECONDS = 0.5
CALL_ID_MAX = 200
# Tools that the model only proposes: they run once the user confirms (chat/actions.py). Over
# MCP they run at once (MCP clients ask their user, guided by `destructiveHint`).
CONFIRMED_TOOLS = frozenset({"delete_task"})

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
- delete_task does not delete: it asks the user to confirm in the app. Until they do, the task
  still exists; say that the deletion waits for their confirmation, never that it is done.
- After acting, confirm briefly what was done, naming the tasks.
- If a tool returns an error, explain it plainly and suggest what to do next."""


class TurnInProgressError(DomainError):
    """The turn with this idempotency key is still running."""

    status_code = 409

    def __init__(self, retry_after: int | None) -> None:
        super().__init__("A turn with this Idempotency-Key is still running; retry shortly")
        self.headers = {"Retry-After": str(retry_after or 1)}


class AnotherTurnRunningError(DomainError):
    """Another turn of the user is still running: one at a time."""

    status_code = 429

    def __init__(self, retry_after: int | None) -> None:
        super().__init__("Another chat turn is still running")
        self.headers = {"Retry-After": str(retry_after or 1)}


class IdempotencyKeyReusedError(InvalidInputError):
    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used with a different message or conversation;"
            " use a new key for a new turn",
            loc=("header", "idempotency-key"),
            error_type="idempotency_key_reused",
        )


class ChatQuotaExceededError(DomainError):
    status_code = 429

    def __init__(self) -> None:
        super().__init__("Daily chat limit reached (turns or tokens); it resets at 00:00 UTC")
        now = datetime.now(UTC)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        self.headers = {"Retry-After": str(max(1, int((midnight - now).total_seconds()) + 1))}


@cache
def get_cohere_client() -> "V2Client":
    """One client (and HTTP connection pool) per container."""
    settings = get_settings()
    assert settings.co_api_key is not None
    return build_cohere_client(
        api_key=settings.co_api_key.get_secret_value(),
        base_url=str(settings.co_api_url or COHERE_DEFAULT_URL),
        timeout=settings.chat_turn_budget_seconds,
    )


def build_cohere_client(
    *, api_key: str, base_url: str, timeout: float, httpx_client: "httpx.Client | None" = None
) -> "V2Client":
    """Cohere's v2 client, built as `cohere.ClientV2` builds it but without the v1 `Client`.

    `ClientV2` extends the v1 client, whose module imports `tokenizers`, `requests` and
    `fastavro` (about 100 ms of CPU on a cold start, 12 MB in the build); the v2 chat endpoint
    needs none of them. Imported here, on first use: only chat turns need the SDK.
    """
    import httpx
    from cohere.core.client_wrapper import SyncClientWrapper
    from cohere.core.http_client import get_keepalive_proxy_mounts, get_keepalive_socket_options
    from cohere.v2.client import V2Client

    keepalive = {"idle": 60, "intvl": 30, "cnt": 5}  # BaseCohere's settings
    if httpx_client is None:
        httpx_client = httpx.Client(
            timeout=timeout,
            follow_redirects=True,
            transport=httpx.HTTPTransport(socket_options=get_keepalive_socket_options(**keepalive)),
            mounts=get_keepalive_proxy_mounts(**keepalive),
        )
    base_url = base_url.rstrip("/")
    if "cohere.com" in base_url or "cohere.ai" in base_url:
        base_url = base_url.replace("/v1", "")  # as cohere.client.fix_base_url
    wrapper = SyncClientWrapper(
        base_url=base_url,
        client_name="todo-backend",
        token=api_key,
        httpx_client=httpx_client,
        timeout=timeout,
        max_retries=0,
    )
    return V2Client(client_wrapper=wrapper)


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
        messages.extend(replay_calls(row["tool_calls"] or [], row["tool_plans"] or []))
        messages.append({"role": "assistant", "content": row["content"] or NO_TEXT_REPLY})
    return messages


def replay_calls(calls: list[dict[str, Any]], plans: list[str]) -> list[dict[str, Any]]:
    """Stored calls as the assistant's tool-call steps, each followed by its results."""
    messages: list[dict[str, Any]] = []
    calls = [settled(call) for call in calls]
    for step in sorted({call.get("step", 0) for call in calls}):
        step_calls = [call for call in calls if call.get("step", 0) == step]
        plan = plans[step] if step < len(plans) else step_calls[0].get("plan") or ""
        messages.append(
            {
                "role": "assistant",
                "tool_plan": plan,
                "tool_calls": [_wire_call(call) for call in step_calls],
            }
        )
        messages.extend(
            {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(call["result"])}
            for call in step_calls
        )
    return messages


def _wire_call(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
    }


class Turn:
    """Runs the model/tool loop of one turn against a deadline and a tool call allowance.

    `records` are the calls an earlier attempt of this turn already made (a retried turn): they
    are replayed to the model, never run again.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        user_id: str,
        turn_id: uuid.UUID,
        deadline: float,
        records: list[dict[str, Any]],
    ) -> None:
        self.db = db
        self.settings = settings
        self.user_id = user_id
        self.turn_id = turn_id
        self.deadline = deadline
        self.calls: list[dict[str, Any]] = [
            {**settled(record), "recorded": True} for record in records
        ]
        self.next_seq = max((call["seq"] for call in self.calls), default=-1) + 1
        self.first_step = max((call["step"] for call in self.calls), default=-1) + 1
        self.plans: list[str] = [""] * self.first_step
        for call in self.calls:
            self.plans[call["step"]] = call.get("plan") or ""
        self.input_tokens = 0
        self.output_tokens = 0

    @property
    def executed(self) -> int:
        return sum(1 for call in self.calls if call.get("ran", True))

    def resumed_messages(self) -> list[dict[str, Any]]:
        return replay_calls(self.calls, self.plans)

    def run(self, messages: list[dict[str, Any]]) -> str:
        last_step = max(self.settings.chat_max_steps, self.first_step + 1)
        for step in range(self.first_step, last_step):
            reply = self._chat(messages)
            if not reply.calls:
                return reply.text
            self.plans.append(reply.tool_plan)
            allowance = max(0, self.settings.chat_max_tool_calls - self.executed)
            # Calls beyond the allowance do not run; the first of them says so for all the rest,
            # and the others are not sent back (a reply of thousands of calls stays small).
            answered = reply.calls[: allowance + 1]
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
                        for call in answered
                    ],
                }
            )
            for index, call in enumerate(answered):
                if index >= allowance:
                    skipped = len(reply.calls) - allowance
                    result = self._refuse(
                        call,
                        step,
                        reply.tool_plan,
                        f"not run: at most {self.settings.chat_max_tool_calls} tool calls per "
                        f"turn; this call and {skipped - 1} more after it were not run",
                    )
                elif self.deadline - time.monotonic() < TOOL_CALL_RESERVE_SECONDS:
                    result = self._refuse(
                        call, step, reply.tool_plan, "not run: the turn ran out of time"
                    )
                else:
                    result = self._execute(call, step, reply.tool_plan)
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
                )
        return STEP_LIMIT_NOTE

    def _entry(self, call: "ModelCall", step: int, plan: str) -> dict[str, Any]:
        seq = self.next_seq
        self.next_seq += 1
        return {
            "seq": seq,
            "id": call.id,
            "name": call.name[:TOOL_NAME_MAX],
            "step": step,
            "plan": plan,
        }

    def _refuse(self, call: "ModelCall", step: int, plan: str, reason: str) -> dict[str, Any]:
        entry = self._entry(call, step, plan)
        result = {"error": reason}
        self.calls.append({**entry, "arguments": {}, "result": result, "ran": False})
        return result

    def _execute(self, call: "ModelCall", step: int, plan: str) -> dict[str, Any]:
        entry = self._entry(call, step, plan)
        raw_arguments = encodable(call.raw_arguments)
        problem = arguments_problem(raw_arguments, None)
        # JSON escapes can decode to a lone surrogate, which nothing downstream can encode.
        arguments = None if problem else encodable(parse_arguments(raw_arguments))
        problem = problem or arguments_problem(raw_arguments, arguments)
        tool = TOOLS.get(entry["name"])
        if problem is not None:
            entry["arguments"] = {"omitted": problem}
            result = {"error": f"invalid arguments: {problem}"}
        else:
            entry["arguments"] = arguments if arguments is not None else {"raw": raw_arguments}
            if entry["name"] in CONFIRMED_TOOLS and arguments is not None:
                result = self._propose(entry, arguments)
            elif tool is not None and tool.changes_tasks and arguments is not None:
                result = self._change(entry, arguments)
            else:
                result = execute_tool(ToolContext(self.db, self.user_id), entry["name"], arguments)
        result = bounded_result(result)
        count("ToolCalls", tool=entry["name"] if tool is not None else "unknown")
        logger.info("tool call", extra={"tool": entry["name"], "ok": "error" not in result})
        self.calls.append({**entry, "result": result})
        return result

    def _change(self, entry: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
        """Run a call that may change a task, recorded in the same statement as the change.

        If the reply of that statement is lost, the change may or may not have committed: the
        record says. Without a record the statement runs again: it applies once, or fails on the
        record's key (rolled back whole) or finds nothing to change, because a first attempt
        still in flight committed meanwhile; the record then says what that attempt did. A
        change that committed is never reported to the model as a failure.
        """
        hook = turns.record_hook(self.turn_id, entry["seq"], entry["step"], entry)
        for attempt in (1, 2):
            db = turns.WatchedDatabase(self.db)
            result = execute_tool(
                ToolContext(db, self.user_id, hooks=(hook,)), entry["name"], arguments
            )
            if db.failure is None and ("error" not in result or attempt == 1):
                entry["recorded"] = "error" not in result
                return result
            record = turns.read_record(self.db, self.turn_id, entry["seq"])
            if record is not None:
                entry["recorded"] = True
                return settled(dict(record))["result"]
            if not isinstance(db.failure, DatabaseUnavailableError):
                return result
            logger.warning("tool statement lost before its reply; running it again")
        # The retry with the same Idempotency-Key settles it (the record is read then).
        raise WriteOutcomeUnknownError("the outcome of a tool call is unknown")

    def _propose(self, entry: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
        """A destructive call: store it as a pending action for the user to confirm (nothing is
        changed), with its record, in one statement. A lost reply is settled as in `_change`."""
        parsed = validated_arguments(entry["name"], arguments)
        if isinstance(parsed, dict):
            return parsed
        task_id = parsed.model_dump()["task_id"]
        for attempt in (1, 2):
            try:
                result = actions.propose(self.db, self.user_id, self.turn_id, entry, task_id)
            except (IntegrityError, DatabaseUnavailableError) as failure:
                # A first attempt whose reply was lost may have committed (the retry then fails
                # on the record's key): the record says.
                record = turns.read_record(self.db, self.turn_id, entry["seq"])
                if record is not None:
                    entry["recorded"] = True
                    return settled(dict(record))["result"]
                if attempt == 2 or not isinstance(failure, DatabaseUnavailableError):
                    raise
                logger.warning("pending action statement lost before its reply; running it again")
                continue
            if result is None:
                return {
                    "error": f"Task {task_id} not found: it does not exist; "
                    "call list_tasks to find ids"
                }
            entry["recorded"] = True
            return dict(result)
        raise AssertionError("unreachable")

    def _chat(self, messages: list[dict[str, Any]]) -> "ModelReply":
        import httpx
        from cohere.core.api_error import ApiError
        from cohere.errors import TooManyRequestsError

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
                    # The model's arguments follow the schemas (the declarations are shaped for
                    # strict mode's rules: tasks/tools.py).
                    strict_tools=True,
                    request_options={"timeout": remaining, "max_retries": 0},
                )
            except TooManyRequestsError as error:
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
            self._count_tokens(response)
            try:
                return ModelReply.from_message(response.message)
            except (AttributeError, TypeError, ValueError) as error:
                raise _unreadable_reply() from error
        raise AssertionError("unreachable")

    def _count_tokens(self, response: Any) -> None:
        """Add the tokens Cohere billed for this call (input and output)."""
        units = getattr(getattr(response, "usage", None), "billed_units", None)
        self.input_tokens += _billed(units, "input_tokens")
        self.output_tokens += _billed(units, "output_tokens")


def _billed(units: Any, name: str) -> int:
    value = getattr(units, name, None)
    return int(value) if isinstance(value, int | float) and value > 0 else 0


def _unreadable_reply() -> UpstreamError:
    logger.error("cohere sent a malformed reply")
    return UpstreamError("The assistant service sent an unreadable reply", 502)


class ModelCall(NamedTuple):
    """One tool call as the model asked for it; the id is settled once, here."""

    id: str
    name: str
    raw_arguments: str


class ModelReply(NamedTuple):
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
            call_id = str(call.id or "")
            calls.append(
                ModelCall(
                    # Ours when absent or unreasonably long (it is stored and sent back).
                    id=call_id
                    if 0 < len(call_id) <= CALL_ID_MAX
                    else f"call_{uuid.uuid4().hex[:12]}",
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


def run_turn(
    db: Database, user_id: str, request: ChatRequest, idempotency_key: str | None = None
) -> ChatResponse:
    """Claim the turn, let the model act with the tools, store and return its reply.

    With an idempotency key, a repeat returns the stored response (no model, no tool), a repeat
    while the first runs is a 409, and a repeat of a failed turn resumes it.
    """
    settings = get_settings()
    if settings.co_api_key is None:
        raise ServiceUnavailableError("Chat is not configured (no Cohere API key)")
    # The budget covers the whole turn (database steps and the first turn's SDK import too), so
    # the answer, stored, leaves before the function's timeout.
    deadline = time.monotonic() + settings.chat_turn_budget_seconds
    claim = turns.claim(
        db, settings, user_id, request.conversation_id, request.message, idempotency_key
    )
    if claim.action == "unknown":
        raise ConversationNotFoundError()
    if claim.action == "mismatch":
        raise IdempotencyKeyReusedError()
    if claim.action == "replay":
        count("ChatTurnsReplayed")
        return ChatResponse.model_validate(claim.response)
    if claim.action == "busy":
        raise TurnInProgressError(claim.busy_seconds)
    if claim.action == "quota":
        count("ChatQuotaExceeded")
        raise ChatQuotaExceededError()
    if claim.action == "occupied":
        count("ChatTurnsRefusedWhileRunning")
        raise AnotherTurnRunningError(claim.lease_seconds)
    if claim.turn_id is None or claim.conversation_id is None:
        raise TurnInProgressError(int(settings.chat_turn_budget_seconds))
    turn = Turn(db, settings, user_id, claim.turn_id, deadline, claim.records)
    get_cohere_client()
    history = list(claim.history)
    # The bound may have cut a turn in half: replay starts with a user message.
    while history and history[0]["role"] != "user":
        history.pop(0)
    messages = [
        {"role": "system", "content": system_prompt()},
        *replay(history),
        {"role": "user", "content": request.message},
        *turn.resumed_messages(),
    ]
    count("ChatTurns")
    try:
        text = turn.run(messages)
    except Exception as error:
        if isinstance(error, UpstreamError):
            count("CohereErrors")
        # Whatever failed, the calls that already ran are kept with their results, and the turn
        # may be retried with its key.
        _finish(db, turn, claim, FAILED_TURN_NOTE, succeeded=False)
        raise
    return _finish(db, turn, claim, text, succeeded=True)


def _finish(
    db: Database, turn: Turn, claim: turns.Claim, text: str, *, succeeded: bool
) -> ChatResponse:
    assert claim.conversation_id is not None
    response = ChatResponse(
        conversation_id=claim.conversation_id,
        turn_id=turn.turn_id,
        response=text,
        tool_calls=[
            ToolCallPublic(name=c["name"], arguments=c["arguments"], result=c["result"])
            for c in turn.calls
        ],
        pending_actions=[
            PendingActionPublic(
                id=c["result"]["action_id"],
                name=c["name"],
                arguments=c["arguments"],
                summary=c["result"]["summary"],
            )
            for c in turn.calls
            if c["result"].get("status") == actions.PENDING_STATUS and "action_id" in c["result"]
        ],
    )
    stored = [
        {key: call[key] for key in ("id", "name", "arguments", "result", "step")}
        for call in turn.calls
    ]
    unrecorded = [
        {key: call[key] for key in ("seq", "step", "id", "name", "arguments", "plan", "result")}
        for call in turn.calls
        if not call.get("recorded")
    ]
    recorded = [
        {"seq": call["seq"], "result": call["result"]}
        for call in turn.calls
        if call.get("recorded")
    ]
    tokens = turn.input_tokens + turn.output_tokens
    if tokens:
        metrics.add_metric(name="CohereTokens", unit="Count", value=tokens)
    try:
        turns.finish(
            db,
            turn.turn_id,
            user_id=turn.user_id,
            attempt_id=claim.attempt_id,
            succeeded=succeeded,
            content=text,
            tool_calls=stored,
            tool_plans=turn.plans,
            unrecorded=unrecorded,
            recorded=recorded,
            response=response.model_dump(mode="json") if succeeded else None,
            input_tokens=turn.input_tokens,
            output_tokens=turn.output_tokens,
        )
    except DatabaseUnavailableError:
        if succeeded:
            raise
        # The turn failed already; its changes are recorded, and it is retried after a while.
        logger.warning("the failed turn could not be marked failed")
    return response
