"""Both functions behind one ASGI app, routed by path as API Gateway routes them."""

import re
from typing import Any

from functions.chat.app import app as chat_app
from functions.tasks.app import app as tasks_app

CHAT_PATH = re.compile(r"^/api/[^/]+/(chat|conversations)(/|$)")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    target = chat_app if CHAT_PATH.match(scope.get("path", "")) else tasks_app
    await target(scope, receive, send)
