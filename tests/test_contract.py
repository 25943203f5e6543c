"""The published document is the API: schemathesis, with every one of its checks, against the
whole API as `make dev` serves it (scripts/local_app.py, whose /openapi.json is the committed
openapi.json), so that the document and the code cannot drift apart.

What `schemathesis run <api>/openapi.json --checks all` does against `make dev`, in process and
bounded: the coverage phase (each operation's boundary values, valid and not) and the fuzzing
phase, with every check (a schema-valid request is accepted, a schema-violating one refused, every
status and header documented, `Allow` on a 405 complete, no server error, auth not ignored).
The chat turn (POST /api/{user_id}/chat) is left out: it calls the model provider.

Reproducible and bounded: hypothesis derandomized (a fixed seed), a fixed number of examples per
operation, no example database. tests/test_fuzz.py fuzzes each function with its own
project-specific checks; this file holds the document to what schemathesis itself checks.
"""

import uuid
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from pydantic import BaseModel, ValidationError
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from scripts import local_app
from tests.support.tokens import make_token, new_user_id
from todo_backend.tasks.models import IdempotencyKey

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

EXAMPLES = 5
CHAT_TURN = "POST /api/{user_id}/chat"

# What `schemathesis run` reads from the repository (unknown query parameters are ignored).
CONFIG = SchemathesisConfig.from_path(str(Path(__file__).parents[1] / "schemathesis.toml"))
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", local_app.app, config=CONFIG).exclude(
    method="POST", path="/api/{user_id}/chat"
)
SCHEMA.config.phases.update(phases=["coverage", "fuzzing"])
SCHEMA.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
)

SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)

USER = new_user_id()
EXPORT_CURSOR_MAX = 300


def _valid_idempotency_key(value: Any) -> bool:
    try:
        IdempotencyKeyModel.model_validate({"key": value})
    except ValidationError:
        return False
    return True


class IdempotencyKeyModel(BaseModel):
    key: IdempotencyKey


def for_the_path_user(case: Any) -> dict[str, str]:
    """The headers for `case`: a valid token, for the user the path names (else every
    `/api/{user_id}` request is a 403, and nothing past the token check would be tested). Given
    at call time, as `schemathesis run -H` gives them: the cases that test a missing or invalid
    token keep theirs."""
    if "user_id" in (case.path_parameters or {}):
        case.path_parameters["user_id"] = USER
    # The cases reuse their example Idempotency-Key with other bodies, which is refused (422,
    # as documented): a valid key is made unique, so each create is a new one.
    key = next((k for k in (case.headers or {}) if k.lower() == "idempotency-key"), None)
    if key is not None and _valid_idempotency_key(case.headers[key]):
        case.headers[key] = f"contract-{uuid.uuid4()}"
    # Clearing the due date of a task that the cases made recurring is refused (422, as
    # documented: it depends on stored state); clearing the recurrence with it is always valid.
    body = case.body if isinstance(getattr(case, "body", None), dict) else None
    if (
        case.method.upper() in {"PATCH", "PUT"}
        and "/tasks/" in case.path
        and body is not None
        and "due_date" in body
        and body["due_date"] is None
        and "recurrence" not in body
    ):
        body["recurrence"] = None
    # An export cursor is opaque: one the API never returned is a 422 whatever its form (like a
    # reused Idempotency-Key, state the document cannot express). A schema-valid one is left out.
    cursor = (case.query or {}).get("cursor")
    if isinstance(cursor, str) and len(cursor) <= EXPORT_CURSOR_MAX:
        del case.query["cursor"]
    # A Host that the MCP endpoint's DNS-rebinding check allows (as `make dev`'s own).
    return {"Authorization": f"Bearer {make_token(USER)}", "Host": "127.0.0.1:8000"}


def test_the_chat_turn_is_the_only_operation_left_out():
    # Given the whole published document, when the contract's operations are listed
    tested = {result.ok().label for result in SCHEMA.get_all_operations()}
    everything = {
        result.ok().label
        for result in schemathesis.openapi.from_asgi(
            "/openapi.json", local_app.app, config=CONFIG
        ).get_all_operations()
    }
    # Then every operation but the chat turn is checked
    assert everything - tested == {CHAT_TURN}


@SCHEMA.parametrize()
@SETTINGS
def test_the_api_is_what_its_document_says(case):
    # Given a request that schemathesis built from the published document, valid or not,
    # sent with a valid token for the path's user
    headers = for_the_path_user(case)
    # When it is sent to the API as `make dev` serves it
    # Then every schemathesis check passes
    case.call_and_validate(headers=headers)
