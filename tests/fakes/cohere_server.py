"""A local fake of Cohere's ``POST /v2/chat`` endpoint (non-streaming).

The fake speaks the same wire format as ``https://api.cohere.com/v2/chat`` so the real
``cohere`` SDK (``cohere.ClientV2``) can be pointed at it::

    with FakeCohere() as fake:
        fake.script(tool_calls_reply(("list_todos", {})), text_reply("You have 2 todos."))
        client = cohere.ClientV2(api_key="test", base_url=fake.base_url, timeout=0.5)
        ...
        assert fake.requests[0].messages[-1] == {"role": "user", "content": "..."}

The SDK joins ``base_url`` and ``"v2/chat"`` itself, so ``base_url`` is the bare origin
(``http://127.0.0.1:<port>``) without any ``/v1`` or ``/v2`` suffix.

Scripted replies are consumed in order, one per ``POST /v2/chat`` request. A request that
arrives when the script is empty gets ``500 {"message": "unscripted request ..."}`` so a test
fails loudly instead of hanging. Any other path gets ``404``.

With ``strict=True`` (the default) the fake also rejects, with ``400`` like the real API,
request bodies that are structurally invalid: a missing ``model``, an empty or malformed
``messages`` list, or a ``tool`` message whose ``tool_call_id`` does not answer a tool call of
an earlier assistant message. Such requests do not consume a scripted reply. With
``strict_tools: true`` it also applies the real API's rules for strict mode: every tool needs at
least one required parameter (each one declared), and all tools together at most 200 fields.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import string
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "CHAT_PATH",
    "FakeCohere",
    "RecordedRequest",
    "ScriptedReply",
    "error_reply",
    "raw_reply",
    "slow_reply",
    "text_reply",
    "tool_calls_reply",
]

CHAT_PATH = "/v2/chat"

# Default error messages, worded like the ones the real API returns.
_DEFAULT_ERROR_MESSAGES: dict[int, str] = {
    400: "invalid request: the request body is not valid",
    401: "invalid api token",
    403: "forbidden",
    404: "not found",
    422: "unprocessable entity",
    429: (
        "You are using a Trial key, which is limited to 10 API calls / minute. "
        "You can continue to use the Trial key for free or upgrade to a Production key "
        "with higher rate limits at 'https://dashboard.cohere.com/api-keys'."
    ),
    500: "internal server error, this has been reported to our developers",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}

_ID_ALPHABET = string.ascii_lowercase + string.digits
# Strict mode (`strict_tools: true`) accepts at most this many fields across all tools.
STRICT_TOOLS_MAX_FIELDS = 200


# --------------------------------------------------------------------------------------------
# Scripted replies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptedReply:
    """One canned HTTP response. Build it with the ``*_reply`` helpers below."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @property
    def json(self) -> Any:
        """The body decoded as JSON (raises ``ValueError`` for raw non-JSON bodies)."""
        return json.loads(self.body)


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> ScriptedReply:
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    return ScriptedReply(
        status=status, body=json.dumps(payload).encode("utf-8"), headers=all_headers
    )


def _approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    # Shape of the real API's `usage` object. `tokens` includes the prompt template overhead
    # that is not billed, so it is larger than `billed_units`.
    return {
        "billed_units": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        "tokens": {"input_tokens": input_tokens + 64, "output_tokens": output_tokens + 2},
    }


def _tool_call_id(name: str) -> str:
    # The real API uses ids like "search_docs_9b0nr4kg58a8": the tool name, "_", 12 chars.
    suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
    return f"{name}_{suffix}"


def text_reply(
    text: str,
    *,
    finish_reason: str = "COMPLETE",
    response_id: str | None = None,
    usage: dict[str, Any] | None = None,
) -> ScriptedReply:
    """A ``200`` chat response whose assistant message holds one text content block."""
    payload = {
        "id": response_id or str(uuid.uuid4()),
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "finish_reason": finish_reason,
        "usage": usage if usage is not None else _usage(12, _approx_tokens(text)),
    }
    return _json_reply(200, payload)


def tool_calls_reply(
    *calls: tuple[str, Any] | tuple[str, Any, str],
    tool_plan: str = "I will call the requested tools to answer the user's question.",
    response_id: str | None = None,
    usage: dict[str, Any] | None = None,
) -> ScriptedReply:
    """A ``200`` chat response with ``finish_reason: "TOOL_CALL"`` and ``message.tool_calls``.

    Each call is ``(name, arguments)`` or ``(name, arguments, call_id)``. ``arguments`` that is
    not a ``str`` is sent as ``json.dumps(arguments)`` (the API sends a JSON *string*); a ``str``
    is sent verbatim, which lets tests feed malformed JSON. Without ``call_id`` a unique id in
    the API's style (``"<name>_<12 chars>"``) is generated.
    """
    if not calls:
        raise ValueError("tool_calls_reply() needs at least one (name, arguments) call")
    tool_calls = []
    for call in calls:
        if len(call) == 2:
            name, arguments = call  # type: ignore[misc]
            call_id = _tool_call_id(name)
        elif len(call) == 3:
            name, arguments, call_id = call  # type: ignore[misc]
        else:
            raise ValueError(f"a tool call is (name, arguments[, id]), got {call!r}")
        encoded = arguments if isinstance(arguments, str) else json.dumps(arguments)
        tool_calls.append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": encoded},
            }
        )
    payload = {
        "id": response_id or str(uuid.uuid4()),
        "message": {"role": "assistant", "tool_plan": tool_plan, "tool_calls": tool_calls},
        "finish_reason": "TOOL_CALL",
        "usage": usage if usage is not None else _usage(48, 12 * len(tool_calls)),
    }
    return _json_reply(200, payload)


def error_reply(
    status: int,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> ScriptedReply:
    """An error response with the API's JSON error body ``{"id": ..., "message": ...}``.

    Pass e.g. ``headers={"Retry-After": "7"}`` for a 429. Note the SDK retries 408, 409, 429
    and every 5xx (twice by default) before raising, so tests of those statuses should use
    ``max_retries=0`` or script one reply per attempt.
    """
    if message is None:
        message = _DEFAULT_ERROR_MESSAGES.get(status, f"error {status}")
    return _json_reply(status, {"id": str(uuid.uuid4()), "message": message}, headers)


def raw_reply(
    status: int,
    body: str | bytes,
    *,
    content_type: str = "text/html; charset=utf-8",
    headers: dict[str, str] | None = None,
) -> ScriptedReply:
    """A response with an arbitrary body, e.g. a proxy's HTML error page or truncated JSON."""
    all_headers = {"Content-Type": content_type}
    all_headers.update(headers or {})
    data = body.encode("utf-8") if isinstance(body, str) else body
    return ScriptedReply(status=status, body=data, headers=all_headers)


def slow_reply(seconds: float, then: ScriptedReply | None = None) -> ScriptedReply:
    """Wait ``seconds`` before answering with ``then`` (default: a short text reply).

    Use it to trigger client timeouts. ``FakeCohere.stop()`` interrupts the wait.
    """
    base = then if then is not None else text_reply("(slow reply)")
    return ScriptedReply(
        status=base.status, body=base.body, headers=dict(base.headers), delay=float(seconds)
    )


# --------------------------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """What the client sent. ``headers`` keys are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The parsed JSON body (``None`` when the body is empty)."""
        return json.loads(self.body) if self.body else None

    @property
    def model(self) -> str | None:
        return (self.json or {}).get("model")

    @property
    def messages(self) -> list[dict[str, Any]]:
        return (self.json or {}).get("messages") or []

    @property
    def tools(self) -> list[dict[str, Any]]:
        return (self.json or {}).get("tools") or []

    @property
    def tool_names(self) -> list[str]:
        return [t.get("function", {}).get("name") for t in self.tools]

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


def _count_fields(schema: Any) -> int:
    """The properties of a JSON schema, nested ones included (strict mode's "fields")."""
    if isinstance(schema, list):
        return sum(_count_fields(item) for item in schema)
    if not isinstance(schema, dict):
        return 0
    properties = schema.get("properties")
    own = len(properties) if isinstance(properties, dict) else 0
    nested = sum(_count_fields(value) for key, value in schema.items() if key != "properties")
    if isinstance(properties, dict):
        nested += sum(_count_fields(value) for value in properties.values())
    return own + nested


def _validate_strict_tools(tools: Any) -> str | None:
    """Strict mode's rules for the tools, as the real API applies them."""
    if not isinstance(tools, list) or not tools:
        return None
    fields = 0
    for tool in tools:
        function = (tool or {}).get("function") or {}
        name = function.get("name")
        parameters = function.get("parameters") or {}
        required = parameters.get("required") or []
        properties = parameters.get("properties") or {}
        if not required:
            return (
                f"invalid request: strict_tools requires at least one required parameter "
                f"for tool {name!r}"
            )
        if any(parameter not in properties for parameter in required):
            return f"invalid request: tool {name!r} requires a parameter it does not declare"
        fields += _count_fields(parameters)
    if fields > STRICT_TOOLS_MAX_FIELDS:
        return (
            f"invalid request: strict_tools supports at most {STRICT_TOOLS_MAX_FIELDS} fields "
            f"across all tools, got {fields}"
        )
    return None


def _validate_chat_body(body: Any) -> str | None:
    """Return an error message for a structurally invalid chat request, else ``None``."""
    if not isinstance(body, dict):
        return "invalid request: body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "invalid request: model must be specified"
    if body.get("stream") is True:
        return "invalid request: the fake only supports non-streaming chat (stream=false)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "invalid request: messages must be a non-empty list"
    if body.get("strict_tools") is True:
        problem = _validate_strict_tools(body.get("tools"))
        if problem is not None:
            return problem
    known_call_ids: set[str] = set()
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"invalid request: messages[{index}] must be an object"
        role = message.get("role")
        if role not in ("user", "assistant", "system", "tool"):
            return f"invalid request: messages[{index}].role {role!r} is not supported"
        if role in ("user", "system") and message.get("content") in (None, "", []):
            return f"invalid request: messages[{index}].content must not be empty"
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                if not isinstance(function.get("arguments", ""), str):
                    return (
                        f"invalid request: messages[{index}] tool call arguments must be a string"
                    )
                known_call_ids.add(call.get("id"))
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not call_id:
                return f"invalid request: messages[{index}].tool_call_id is required"
            if message.get("content") is None:
                return f"invalid request: messages[{index}].content is required"
            if call_id not in known_call_ids:
                return (
                    f"invalid request: tool message messages[{index}] has tool_call_id "
                    f"{call_id!r} that does not match any previous tool call"
                )
    return None


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, fake: FakeCohere) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self._connections_lock:
            self._connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every reply, which a real API does not.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        fake = self.server.fake
        body = self._read_body()
        recorded = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        fake._record(recorded)
        path = self.path.split("?", 1)[0]
        if self.command != "POST" or path != CHAT_PATH:
            reply = error_reply(404, f"{self.command} {path} is not served by FakeCohere")
        else:
            reply = None
            if fake.strict:
                try:
                    problem = _validate_chat_body(json.loads(body or b"null"))
                except ValueError:
                    problem = "invalid request: body is not valid JSON"
                if problem is not None:
                    reply = error_reply(400, problem)
            if reply is None:
                reply = fake._next_reply()
        if reply.delay > 0 and fake._stopping.wait(reply.delay):
            self.close_connection = True  # server is stopping; drop the connection unanswered
            return
        self._send(reply)

    def _send(self, reply: ScriptedReply) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("X-Debug-Trace-Id", uuid.uuid4().hex)
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True  # the client gave up (e.g. it timed out)

    do_POST = _handle
    do_GET = _handle
    do_PUT = _handle
    do_DELETE = _handle
    do_PATCH = _handle


class FakeCohere:
    """A fake Cohere API server on ``127.0.0.1:<random port>``.

    Use as a context manager or call ``start()`` / ``stop()``.
    """

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict
        self.requests: list[RecordedRequest] = []
        self._script: deque[ScriptedReply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeCohere:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="FakeCohere",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in slow_reply()
        server.shutdown()
        server.close_all_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeCohere:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addressing --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeCohere is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """Pass this as ``cohere.ClientV2(base_url=...)``; the SDK appends ``/v2/chat``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def chat_url(self) -> str:
        return self.base_url + CHAT_PATH

    # -- scripting ---------------------------------------------------------------------------

    def script(self, *responses: ScriptedReply) -> FakeCohere:
        """Enqueue replies; each ``POST /v2/chat`` consumes the next one in order."""
        for response in responses:
            if not isinstance(response, ScriptedReply):
                raise TypeError(f"script() takes ScriptedReply objects, got {response!r}")
        with self._lock:
            self._script.extend(responses)
        return self

    @property
    def pending(self) -> int:
        """How many scripted replies have not been consumed yet."""
        with self._lock:
            return len(self._script)

    def assert_all_consumed(self) -> None:
        left = self.pending
        assert left == 0, f"{left} scripted Cohere replies were never requested"

    def reset(self) -> None:
        """Forget recorded requests and drop unconsumed scripted replies."""
        with self._lock:
            self._script.clear()
            self.requests.clear()

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self.requests:
                raise AssertionError("FakeCohere has received no requests")
            return self.requests[-1]

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == CHAT_PATH]

    # -- internals used by the handler -------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_reply(self) -> ScriptedReply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return error_reply(
            500, "unscripted request: FakeCohere has no scripted reply left for POST /v2/chat"
        )
