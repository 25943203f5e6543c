"""Lambda function `chat`: the assistant and its conversations. Routing only.

As in the tasks function, the short database routes are `async def` (no worker-thread hop). The
chat turn stays a plain `def`: it waits seconds on Cohere, and locally (uvicorn) must not block
the event loop that serves everything else.
"""

import gc

gc.disable()  # while the function initialises; register_snapstart (last) enables it

import uuid
from typing import Annotated

from fastapi import Header, Query, status
from mangum import Mangum

from todo_backend.chat import actions, conversations, turns, undo
from todo_backend.chat.assistant import run_turn
from todo_backend.chat.models import (
    ActionOutcome,
    ChatRequest,
    ChatResponse,
    ChatUsagePublic,
    ConversationPage,
    ConversationPublic,
    ConversationRename,
    MessagePage,
    UndoResponse,
)
from todo_backend.chat.warmup import prepare_cohere, release_cohere, warm_chat_routes
from todo_backend.core.api import (
    DatabaseDep,
    ErrorBody,
    PathUser,
    create_app,
    deferred_router,
    errors,
    include_deferred_routes,
)
from todo_backend.core.observability import instrumented
from todo_backend.core.settings import get_settings
from todo_backend.core.snapstart import register as register_snapstart
from todo_backend.tasks.models import IdempotencyKey

app = create_app("Todo assistant API", "Manage your tasks in plain language.")
router = deferred_router(app)


CHAT_ERRORS = {
    **errors(403, 404, 429, 502, 504),
    409: {
        "model": ErrorBody,
        "description": "A turn with this Idempotency-Key is still running (`Retry-After`)",
    },
    429: {
        "model": ErrorBody,
        "description": "Daily chat quota used up, another turn of the user is still running, "
        "or the model provider is rate limiting (`Retry-After`)",
    },
}


@router.post("/api/{user_id}/chat", responses=CHAT_ERRORS)
def chat(
    user: PathUser,
    db: DatabaseDep,
    body: ChatRequest,
    idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
) -> ChatResponse:
    return run_turn(db, user, body, idempotency_key)


ACTION_ERRORS = {
    **errors(403, 404),
    409: {
        "model": ErrorBody,
        "description": "The action expired (15 minutes), or was settled the other way",
    },
}


@router.post("/api/{user_id}/chat/actions/{action_id}/confirm", responses=ACTION_ERRORS)
async def confirm_action(user: PathUser, db: DatabaseDep, action_id: uuid.UUID) -> ActionOutcome:
    """Run an action the assistant asked for (e.g. a delete), exactly once: a repeat returns the
    same body."""
    return ActionOutcome.model_validate(actions.confirm(db, user, action_id))


@router.post(
    "/api/{user_id}/chat/actions/{action_id}/cancel",
    responses=ACTION_ERRORS,
    response_model_exclude_none=True,
)
async def cancel_action(user: PathUser, db: DatabaseDep, action_id: uuid.UUID) -> ActionOutcome:
    """Cancel an action the assistant asked for; nothing is changed."""
    return ActionOutcome.model_validate(actions.cancel(db, user, action_id))


UNDO_ERRORS = {
    **errors(403, 404),
    409: {
        "model": ErrorBody,
        "description": "Tasks the turn changed have changed since (named); nothing was undone",
    },
    410: {"model": ErrorBody, "description": "The turn is more than 24 hours old"},
}


@router.post("/api/{user_id}/chat/turns/{turn_id}/undo", responses=UNDO_ERRORS)
async def undo_turn(user: PathUser, db: DatabaseDep, turn_id: uuid.UUID) -> UndoResponse:
    """Revert every task change of a turn (and of its confirmed actions), exactly once."""
    return UndoResponse.model_validate(undo.undo(db, user, turn_id))


@router.get("/api/{user_id}/chat/usage", responses=errors(403))
async def chat_usage(user: PathUser, db: DatabaseDep) -> ChatUsagePublic:
    return turns.usage(db, get_settings(), user)


@router.get("/api/{user_id}/conversations", responses=errors(403))
async def list_conversations(
    user: PathUser,
    db: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> ConversationPage:
    return conversations.list_conversations(db, user, limit, offset)


@router.get("/api/{user_id}/conversations/{conversation_id}/messages", responses=errors(403, 404))
async def list_messages(
    user: PathUser,
    db: DatabaseDep,
    conversation_id: uuid.UUID,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> MessagePage:
    return conversations.list_messages(db, user, conversation_id, limit, offset)


@router.patch("/api/{user_id}/conversations/{conversation_id}", responses=errors(403, 404))
async def rename_conversation(
    user: PathUser, db: DatabaseDep, conversation_id: uuid.UUID, body: ConversationRename
) -> ConversationPublic:
    return conversations.rename_conversation(db, user, conversation_id, body.title)


@router.delete(
    "/api/{user_id}/conversations/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(403, 404),
)
async def delete_conversation(user: PathUser, db: DatabaseDep, conversation_id: uuid.UUID) -> None:
    conversations.delete_conversation(db, user, conversation_id)


include_deferred_routes(app, router)

handler = instrumented(Mangum(app, lifespan="off"))
register_snapstart(app, warm_chat_routes, prepare=[prepare_cohere], release=[release_cohere])
