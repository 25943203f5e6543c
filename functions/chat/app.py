"""Lambda function `chat`: the assistant and its conversations. Routing only.

As in the tasks function, the short database routes are `async def` (no worker-thread hop). The
chat turn stays a plain `def`: it waits seconds on Cohere, and locally (uvicorn) must not block
the event loop that serves everything else.
"""

import uuid
from typing import Annotated

from fastapi import Query, status
from mangum import Mangum

from todo_backend.chat import conversations
from todo_backend.chat.assistant import run_turn
from todo_backend.chat.models import (
    ChatRequest,
    ChatResponse,
    ConversationPage,
    MessageList,
)
from todo_backend.chat.warmup import prepare_cohere, release_cohere, warm_chat_routes
from todo_backend.core.api import DatabaseDep, PathUser, create_app, errors
from todo_backend.core.observability import instrumented
from todo_backend.core.snapstart import register as register_snapstart

app = create_app("Todo assistant API", "Manage your tasks in plain language.")


@app.post("/api/{user_id}/chat", responses=errors(403, 404, 429, 502, 504))
def chat(user: PathUser, db: DatabaseDep, body: ChatRequest) -> ChatResponse:
    return run_turn(db, user, body)


@app.get("/api/{user_id}/conversations", responses=errors(403))
async def list_conversations(
    user: PathUser,
    db: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> ConversationPage:
    return conversations.list_conversations(db, user, limit, offset)


@app.get("/api/{user_id}/conversations/{conversation_id}/messages", responses=errors(403, 404))
async def list_messages(user: PathUser, db: DatabaseDep, conversation_id: uuid.UUID) -> MessageList:
    return conversations.list_messages(db, user, conversation_id)


@app.delete(
    "/api/{user_id}/conversations/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(403, 404),
)
async def delete_conversation(user: PathUser, db: DatabaseDep, conversation_id: uuid.UUID) -> None:
    conversations.delete_conversation(db, user, conversation_id)


handler = instrumented(Mangum(app, lifespan="off"))
register_snapstart(app, warm_chat_routes, prepare=[prepare_cohere], release=[release_cohere])
