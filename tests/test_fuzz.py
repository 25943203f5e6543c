"""Property-based fuzzing of both functions against their own OpenAPI schemas (schemathesis 4).

Every operation of the tasks and chat apps gets schema-driven requests, valid ones and invalid
ones, and each response must

- never be a server error (`not_a_server_error`),
- conform to the schema when its status code is documented (`response_schema_conformance`,
  `content_type_conformance`),
- carry a status code that the schema documents or that API.md promises (see `contract_status`),
- be FastAPI's error shape `{"detail": ...}` when it is an error.

Why not schemathesis' `status_code_conformance` here: each function's own document lists its
routes' 401, 403, 404, 415 and 503, but not the 405 of a method a path lacks; tests/test_contract.py
runs every schemathesis check against the whole API's document. `contract_status`
below allows exactly the codes API.md promises per operation instead (`UNDOCUMENTED_CONTRACT`
lists them; they are what `responses=` on the routes should declare).

The same operations are also fuzzed without a usable token (missing, garbage, expired, wrongly
signed, `alg: none`, HS512, no `exp`, no or blank `sub`, not yet valid, Basic): 401 with
`WWW-Authenticate: Bearer` everywhere but `/api/health`.

Runs are bounded and reproducible: fixed example counts, `derandomize=True`, no example database,
no deadline. The requests reach the apps in process through schemathesis' ASGI transport, and a
smaller run goes through the Lambda handler (API Gateway payload 2.0 events, Mangum).
"""

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import hypothesis
import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from functions.chat.app import app as chat_app
from functions.chat.app import handler as chat_handler
from functions.tasks.app import app as tasks_app
from functions.tasks.app import handler as tasks_handler
from tests.support.fuzz_lambda import prepare, send_through_lambda
from tests.support.tokens import TEST_SECRET, make_token, new_user_id

pytestmark = pytest.mark.filterwarnings(
    # HS512 with the 39-byte test secret is one of the refused tokens; PyJWT warns about its length.
    "ignore::jwt.warnings.InsecureKeyLengthWarning",
    "ignore:No application metrics to publish:UserWarning",
)

EXAMPLES = 25
LAMBDA_EXAMPLES = 12
BAD_TOKEN_EXAMPLES = 12

SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)

# Status codes that API.md promises but `/openapi.json` does not document (per operation label).
# With a valid token for the path's own user, 401 and 403 never apply.
UNDOCUMENTED_CONTRACT: dict[str, frozenset[int]] = {
    "GET /api/health": frozenset(),
    "GET /api/tasks": frozenset(),
    "POST /api/tasks": frozenset(),
    "GET /api/tasks/{task_id}": frozenset({404}),
    "PUT /api/tasks/{task_id}": frozenset({404}),
    "PATCH /api/tasks/{task_id}": frozenset({404}),
    "PATCH /api/tasks/{task_id}/complete": frozenset({404}),
    "DELETE /api/tasks/{task_id}": frozenset({404}),
    "GET /api/tags": frozenset(),
    "GET /api/stats": frozenset(),
    "GET /api/reminders": frozenset(),
    "GET /api/export": frozenset(),
    "DELETE /api/data": frozenset(),
    # No Cohere key is configured in the test session: every valid chat request is a 503.
    "POST /api/{user_id}/chat": frozenset({503}),
    "GET /api/{user_id}/conversations": frozenset(),
    "GET /api/{user_id}/conversations/{conversation_id}/messages": frozenset({404}),
    "DELETE /api/{user_id}/conversations/{conversation_id}": frozenset({404}),
    "GET /api/{user_id}/chat/usage": frozenset(),
    "POST /api/{user_id}/chat/actions/{action_id}/confirm": frozenset({404}),
    "POST /api/{user_id}/chat/actions/{action_id}/cancel": frozenset({404}),
    "POST /api/{user_id}/chat/turns/{turn_id}/undo": frozenset({404}),
    "PATCH /api/{user_id}/conversations/{conversation_id}": frozenset({404}),
}
# Every task route is also served as /api/{user_id}/tasks... (403 is documented there).
UNDOCUMENTED_CONTRACT |= {
    label.replace(f" /api/{resource}", f" /api/{{user_id}}/{resource}"): codes
    for label, codes in UNDOCUMENTED_CONTRACT.items()
    for resource in ("tasks", "tags", "stats", "reminders", "export", "data")
    if f" /api/{resource}" in label
}


def load_schema(app: Any, *, phases: list[str], modes: list[GenerationMode]) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.phases.update(phases=phases)
    schema.config.generation.update(modes=modes, max_examples=EXAMPLES)
    # The coverage phase sends each operation's boundary values (longest title, largest id,
    # limit=100, ...); its negative half is several hundred 422s, left to the fuzzing phase.
    schema.config.phases.coverage.generation.update(modes=[GenerationMode.POSITIVE])
    return schema


BOTH_MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
TASKS = load_schema(tasks_app, phases=["coverage", "fuzzing"], modes=BOTH_MODES)
CHAT = load_schema(chat_app, phases=["coverage", "fuzzing"], modes=BOTH_MODES)
TASKS_FUZZ = load_schema(tasks_app, phases=["fuzzing"], modes=BOTH_MODES)
CHAT_FUZZ = load_schema(chat_app, phases=["fuzzing"], modes=BOTH_MODES)


# --- checks --------------------------------------------------------------------------------------


def json_body(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        raise AssertionError(f"not JSON: {response.content[:200]!r}") from None


def contract_status(ctx: Any, response: Any, case: Any) -> None:
    """The status code is documented in the schema or promised by API.md for this operation."""
    status = response.status_code
    label = case.operation.label
    documented = {int(code) for code in case.operation.responses.status_codes if code.isdigit()}
    allowed = documented | UNDOCUMENTED_CONTRACT[label]
    if case.method.upper() != case.operation.method.upper():
        # schemathesis' coverage phase also tries methods the path does not have.
        allowed = allowed | {405}
    assert status in allowed, (
        f"{label}: status {status} is neither documented nor in API.md ({sorted(allowed)})"
    )


def error_has_detail(ctx: Any, response: Any, case: Any) -> None:
    """Errors use FastAPI's shape: a JSON object with `detail` (a list of errors for 422)."""
    if response.status_code < 400:
        return
    body = json_body(response)
    assert isinstance(body, dict), body
    assert set(body) == {"detail"}, body
    if response.status_code == 422:
        assert isinstance(body["detail"], list), body
    else:
        assert isinstance(body["detail"], str) and body["detail"], body


CHAT_NOT_CONFIGURED = {"detail": "Chat is not configured (no Cohere API key)"}


def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    """`not_a_server_error`, but the chat's 503 "not configured" is the contract here, not a bug."""
    if (
        case.operation.label == "POST /api/{user_id}/chat"
        and response.status_code == 503
        and json_body(response) == CHAT_NOT_CONFIGURED
    ):
        return
    not_a_server_error(ctx, response, case)


CHECKS = [
    no_server_error,
    response_schema_conformance,
    content_type_conformance,
    contract_status,
    error_has_detail,
]


def unparsable_body(response: Any) -> bool:
    """A body that is not JSON at all, refused (422 `json_invalid`)."""
    if response.status_code == 422:
        errors = json_body(response)["detail"]
        return bool(errors) and all(error["type"] == "json_invalid" for error in errors)
    return False


def unauthorized(ctx: Any, response: Any, case: Any) -> None:
    """A request without a usable token: 401 with `WWW-Authenticate: Bearer` (health excepted)."""
    if case.operation.label == "GET /api/health":
        assert response.status_code == 200, response.status_code
        return
    if unparsable_body(response):
        return
    assert response.status_code == 401, (response.status_code, response.content[:300])
    assert response.headers.get("www-authenticate") == ["Bearer"], response.headers
    assert isinstance(json_body(response)["detail"], str)


BAD_TOKEN_CHECKS = [not_a_server_error, content_type_conformance, error_has_detail, unauthorized]


# --- requests ------------------------------------------------------------------------------------


def set_authorization(case: Any, value: str | None) -> None:
    """Replace whatever `authorization` header was generated (the schema lists it as optional)."""
    headers = {
        name: header
        for name, header in (case.headers or {}).items()
        if name.lower() != "authorization"
    }
    if value is not None:
        headers["Authorization"] = value
    case.headers = headers


def aim_at_existing(case: Any, task_ids: list[int], conversation_ids: list[uuid.UUID]) -> None:
    """Point about two thirds of the valid ids at the user's own records (the rest stay random,
    which covers unknown ids), so handlers get past their 404s."""
    parameters = case.path_parameters or {}
    task_id = parameters.get("task_id")
    if task_ids and type(task_id) is int and task_id % 3:
        parameters["task_id"] = task_ids[task_id % len(task_ids)]
    conversation_id = parameters.get("conversation_id")
    if conversation_ids and isinstance(conversation_id, str):
        try:
            number = uuid.UUID(conversation_id).int
        except ValueError:
            return
        if number % 3:
            parameters["conversation_id"] = str(conversation_ids[number % len(conversation_ids)])


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def seeded(
    user: Any, task_factory: Callable[..., Any], database: Any
) -> tuple[Any, list[int], list[uuid.UUID]]:
    """A user who owns a few tasks and one conversation with a tool call."""
    from tests.support.chat import seed_turn

    tasks = [
        task_factory(user, "Buy milk"),
        task_factory(
            user,
            "File taxes",
            description="Before the deadline",
            priority="high",
            tags=["Admin", "home"],
            due_date="2026-04-30T17:00:00Z",
        ),
        task_factory(user, "Done already", completed=True, due_date="2020-01-01"),
    ]
    conversation_id = seed_turn(
        database,
        user.id,
        "Add buy milk",
        "Added it.",
        [
            {
                "id": "call-1",
                "name": "add_task",
                "arguments": {"title": "Buy milk"},
                "result": {"task_id": tasks[0].id, "status": "created", "title": "Buy milk"},
                "step": 0,
            }
        ],
        ["I will add the task."],
    )
    return user, [task.id for task in tasks], [conversation_id]


# --- valid token ---------------------------------------------------------------------------------


@TASKS.parametrize()
@SETTINGS
def test_tasks_api_with_a_valid_token(case, seeded):
    # Given a user with a valid token who owns a few tasks
    user, task_ids, _ = seeded
    set_authorization(case, f"Bearer {make_token(user.id)}")
    aim_at_existing(case, task_ids, [])
    # When any schema-shaped (or deliberately invalid) request is sent
    # Then no server error, and the response is documented or promised, and conforms
    case.call_and_validate(checks=CHECKS)


@CHAT.parametrize()
@SETTINGS
def test_chat_api_with_a_valid_token_for_the_path_user(case, seeded):
    # Given a user with a valid token and a stored conversation, and no Cohere key configured
    user, _, conversation_ids = seeded
    set_authorization(case, f"Bearer {make_token(user.id)}")
    if "user_id" in (case.path_parameters or {}):
        case.path_parameters["user_id"] = user.id
    aim_at_existing(case, [], conversation_ids)
    # When any request for the user's own path is sent
    # Then no server error (chat itself is a clean 503), documented or promised, conforming
    case.call_and_validate(checks=CHECKS)


def route_not_found(response: Any) -> bool:
    return response.status_code == 404 and json_body(response) == {"detail": "Not Found"}


def user_id_as_sent(case: Any) -> str:
    """The `{user_id}` segment as the server will decode it (schemathesis sends a generated
    "%3A" as is, which the server reads as ":")."""
    segments = urlsplit(prepare(case).url or "").path.split("/")
    return unquote(segments[2]) if len(segments) > 2 else ""


@CHAT_FUZZ.parametrize()
@SETTINGS
def test_chat_api_for_any_subject_that_matches_the_path(case):
    # Given a token whose `sub` is whatever user id schemathesis generated for the path
    user_id = user_id_as_sent(case)
    set_authorization(case, f"Bearer {make_token(user_id)}")
    # When the request is sent
    response = case.call()
    # Then the router may not match odd ids ("", "a/b", ".."), and a blank `sub` is refused;
    # otherwise the user is who the path says: no server error, never a 403
    if route_not_found(response):
        return
    if not user_id.strip() and response.status_code == 401:
        return
    assert response.status_code != 403, (user_id, response.content)
    case.validate_response(response, checks=CHECKS)


# --- through the Lambda handler ------------------------------------------------------------------


@TASKS_FUZZ.parametrize()
@hypothesis.settings(SETTINGS, max_examples=LAMBDA_EXAMPLES)
def test_tasks_handler_with_a_valid_token(case, seeded):
    # Given a user with a valid token and tasks, and the function behind API Gateway and Lambda
    user, task_ids, _ = seeded
    set_authorization(case, f"Bearer {make_token(user.id)}")
    aim_at_existing(case, task_ids, [])
    # When the request arrives as a payload 2.0 event
    response = send_through_lambda(case, tasks_handler)
    # Then the handler answers as the ASGI app would
    case.validate_response(response, checks=CHECKS)


@CHAT_FUZZ.parametrize()
@hypothesis.settings(SETTINGS, max_examples=LAMBDA_EXAMPLES)
def test_chat_handler_with_a_valid_token(case, seeded):
    # Given a user with a valid token and a conversation, behind API Gateway and Lambda
    user, _, conversation_ids = seeded
    set_authorization(case, f"Bearer {make_token(user.id)}")
    if "user_id" in (case.path_parameters or {}):
        case.path_parameters["user_id"] = user.id
    aim_at_existing(case, [], conversation_ids)
    # When the request arrives as a payload 2.0 event
    response = send_through_lambda(case, chat_handler)
    # Then the handler answers as the ASGI app would
    case.validate_response(response, checks=CHECKS)


# --- no usable token -----------------------------------------------------------------------------


WRONG_SECRET = "another-secret-that-is-32-bytes-long!"


def _unsigned(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def bad_authorization(kind: str, sub: str) -> str | None:
    """An Authorization header value that must not authenticate anyone (None: no header)."""
    now = int(time.time())
    claims = {"sub": sub, "exp": now + 600}
    tokens: dict[str, Callable[[], str | None]] = {
        "missing": lambda: None,
        "garbage": lambda: "Bearer not-a-jwt",
        "empty": lambda: "Bearer ",
        "basic": lambda: "Basic dXNlcjpwYXNzd29yZA==",
        "expired": lambda: f"Bearer {make_token(sub, expires_in=-3600)}",
        "wrong-secret": lambda: f"Bearer {make_token(sub, secret=WRONG_SECRET)}",
        "alg-none": lambda: f"Bearer {_unsigned(claims)}",
        "hs512": lambda: f"Bearer {jwt.encode(claims, TEST_SECRET, algorithm='HS512')}",
        "no-exp": lambda: f"Bearer {jwt.encode({'sub': sub}, TEST_SECRET, algorithm='HS256')}",
        "no-sub": lambda: f"Bearer {make_token(None)}",
        "blank-sub": lambda: f"Bearer {make_token('   ')}",
        "not-yet-valid": lambda: f"Bearer {make_token(sub, nbf=now + 3600)}",
    }
    return tokens[kind]()


BAD_KINDS = st.sampled_from(
    [
        "missing",
        "garbage",
        "empty",
        "basic",
        "expired",
        "wrong-secret",
        "alg-none",
        "hs512",
        "no-exp",
        "no-sub",
        "blank-sub",
        "not-yet-valid",
    ]
)


def send_with_bad_token(case: Any, kind: str, send: Callable[[Any], Any]) -> None:
    user_id = new_user_id()
    if "user_id" in (case.path_parameters or {}):
        case.path_parameters["user_id"] = user_id
    set_authorization(case, bad_authorization(kind, user_id))
    response = send(case)
    case.validate_response(response, checks=BAD_TOKEN_CHECKS)


@TASKS_FUZZ.parametrize()
@TASKS_FUZZ.given(kind=BAD_KINDS)
@hypothesis.settings(SETTINGS, max_examples=BAD_TOKEN_EXAMPLES)
def test_tasks_api_refuses_requests_without_a_usable_token(case, kind):
    # Given any request (valid or not) with a missing, malformed, expired or badly signed token
    # When it is sent
    # Then it is a 401 with `WWW-Authenticate: Bearer` everywhere but the health check
    send_with_bad_token(case, kind, lambda c: c.call())


@CHAT_FUZZ.parametrize()
@CHAT_FUZZ.given(kind=BAD_KINDS)
@hypothesis.settings(SETTINGS, max_examples=BAD_TOKEN_EXAMPLES)
def test_chat_api_refuses_requests_without_a_usable_token(case, kind):
    # Given any request for a user's path with no usable token for anyone
    # When it is sent
    # Then it is a 401 with `WWW-Authenticate: Bearer`
    send_with_bad_token(case, kind, lambda c: c.call())


@TASKS_FUZZ.parametrize()
@TASKS_FUZZ.given(kind=BAD_KINDS)
@hypothesis.settings(SETTINGS, max_examples=BAD_TOKEN_EXAMPLES // 2)
def test_tasks_handler_refuses_requests_without_a_usable_token(case, kind):
    # Given a request with no usable token, arriving as a payload 2.0 event
    # When the Lambda handler runs
    # Then it is a 401 with `WWW-Authenticate: Bearer` everywhere but the health check
    send_with_bad_token(case, kind, lambda c: send_through_lambda(c, tasks_handler))
