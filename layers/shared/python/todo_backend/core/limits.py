"""Size limits of what the API accepts and answers, and the Lambda-side body check.

A request body over `MAX_BODY_BYTES` is refused with 413 before anything parses it: in Lambda by
`oversized_body_response` (from the event's body length, before Mangum decodes it), and in ASGI by
`todo_backend.core.api.BodyLimitMiddleware` (the Content-Length header, then the bytes actually
received).
"""

import json
from typing import Any

MAX_BODY_BYTES = 1024 * 1024
# A 422 body never exceeds this, whatever the input (it names what is wrong, it does not echo).
MAX_ERROR_BODY_BYTES = 16 * 1024
TOO_LARGE_DETAIL = "Request body too large (at most 1 MiB)"


def event_body_bytes(event: dict[str, Any]) -> int:
    """The size of an API Gateway event's body once decoded, without decoding it."""
    body = event.get("body")
    if not isinstance(body, str) or not body:
        return 0
    if event.get("isBase64Encoded"):
        padding = len(body) - len(body.rstrip("="))
        return len(body) * 3 // 4 - padding
    if len(body) > MAX_BODY_BYTES:
        return len(body)  # at least one byte per character: too large either way
    return len(body.encode("utf-8", "surrogatepass"))


def oversized_body_response(event: dict[str, Any]) -> dict[str, Any] | None:
    """A 413 API Gateway response when the event's body is over the limit, else None."""
    if event_body_bytes(event) <= MAX_BODY_BYTES:
        return None
    return {
        "statusCode": 413,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"detail": TOO_LARGE_DETAIL}),
        "isBase64Encoded": False,
    }
