"""The chat function's SnapStart warm-up (see `todo_backend.core.snapstart`).

Before the snapshot: the Cohere SDK is imported and the container's client built (with its TLS
context), and one tool-call exchange runs through the SDK against an in-process transport (no
socket, no Cohere tokens spent), so that request building and reply parsing are warm; the
conversation routes and the chat route's validation run for a synthetic user. Nothing is
written: a real turn would store a conversation and spend tokens.
"""

from typing import Any

from todo_backend.core.settings import get_settings
from todo_backend.core.snapstart import WarmUpClient


def _scripted_reply(request: Any) -> Any:
    """Cohere's v2 chat answer: a tool call first, then (once a tool result is sent) text."""
    import json
    import uuid

    import httpx

    messages = json.loads(request.content)["messages"]
    if messages[-1]["role"] == "tool":
        message: dict[str, Any] = {
            "role": "assistant",
            "content": [{"type": "text", "text": "You have no pending tasks."}],
        }
        finish = "COMPLETE"
    else:
        call = {
            "id": "list_tasks_warmup0001",
            "type": "function",
            "function": {"name": "list_tasks", "arguments": json.dumps({"status": "pending"})},
        }
        message = {"role": "assistant", "tool_plan": "I will list the tasks.", "tool_calls": [call]}
        finish = "TOOL_CALL"
    usage = {"billed_units": {"input_tokens": 1, "output_tokens": 1}, "tokens": {}}
    body = {"id": str(uuid.uuid4()), "message": message, "finish_reason": finish, "usage": usage}
    return httpx.Response(200, json=body)


def prepare_cohere() -> None:
    """Import the SDK, build the container's client, and run one exchange in-process."""
    settings = get_settings()
    if settings.co_api_key is None:
        return  # chat answers 503 without a key: nothing of the SDK is ever needed
    import httpx

    from todo_backend.chat.assistant import build_cohere_client, get_cohere_client
    from todo_backend.tasks.tools import cohere_tool_definitions

    get_cohere_client()
    with httpx.Client(transport=httpx.MockTransport(_scripted_reply)) as transport:
        rehearsal = build_cohere_client(
            api_key="snapstart-warm-up",
            base_url="https://snapstart.invalid",
            timeout=settings.chat_turn_budget_seconds,
            httpx_client=transport,
        )
        messages: list[Any] = [
            {"role": "system", "content": "You manage the user's tasks."},
            {"role": "user", "content": "What is pending?"},
        ]
        tools = cohere_tool_definitions()
        first = rehearsal.chat(
            model=settings.cohere_model, messages=messages, tools=tools, strict_tools=True
        )
        calls = first.message.tool_calls or []
        messages.append(
            {"role": "assistant", "tool_plan": first.message.tool_plan, "tool_calls": calls}
        )
        for call in calls:
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": [{"type": "document", "document": {"data": "[]"}}],
                }
            )
        rehearsal.chat(
            model=settings.cohere_model, messages=messages, tools=tools, strict_tools=True
        )


def release_cohere() -> None:
    """Close the pooled connections of the container's Cohere client (it stays usable)."""
    if get_settings().co_api_key is None:
        return
    from todo_backend.chat.assistant import get_cohere_client

    if not get_cohere_client.cache_info().currsize:
        return
    wrapper = getattr(get_cohere_client(), "_client_wrapper", None)
    http = getattr(getattr(wrapper, "httpx_client", None), "httpx_client", None)
    transports = [getattr(http, "_transport", None), *getattr(http, "_mounts", {}).values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if pool is not None:
            pool.close()


def warm_chat_routes(client: WarmUpClient) -> None:
    import uuid

    base = f"/api/{client.user}"
    client.request("GET", f"{base}/conversations", authenticated=False)  # 401
    client.request("GET", f"{base}-other/conversations")  # 403
    client.request("GET", f"{base}/conversations")
    client.request("GET", f"{base}/conversations", query={"limit": "5", "offset": "0"})
    missing = uuid.uuid4()
    client.request("GET", f"{base}/conversations/{missing}/messages")  # 404
    client.request("DELETE", f"{base}/conversations/{missing}")  # 404
    client.request("PATCH", f"{base}/conversations/{missing}", body={"title": "Renamed"})  # 404
    client.request("POST", f"{base}/chat/actions/{missing}/confirm")  # 404
    client.request("POST", f"{base}/chat/actions/{missing}/cancel")  # 404
    client.request("POST", f"{base}/chat/turns/{missing}/undo")  # 404
    client.request("POST", f"{base}/chat", body={"message": ""})  # 422
