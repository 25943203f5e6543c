"""Real API Gateway HTTP API (payload format 2.0) events, and a client that sends them to a
Mangum `handler` the way Lambda does."""

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode


@dataclass
class LambdaContext:
    function_name: str = "todo-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:todo-test"
    log_group_name: str = "/aws/lambda/todo-test"
    log_stream_name: str = "2026/11/24/[$LATEST]test"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def http_api_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    query: dict[str, Any] | None = None,
    body: str | bytes | None = None,
) -> dict[str, Any]:
    """An event as API Gateway HTTP API sends it with payload format version 2.0."""
    header_map = {"host": "api.example.test", "user-agent": "pytest"}
    header_map.update({key.lower(): value for key, value in (headers or {}).items()})
    # A list value repeats its name (`?tag=a&tag=b`), as httpx's `params` do.
    pairs = [
        (key, str(value).lower() if isinstance(value, bool) else str(value))
        for key, values in (query or {}).items()
        for value in (values if isinstance(values, list) else [values])
        if value is not None
    ]
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": urlencode(pairs),
        "headers": header_map,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "testapi",
            "domainName": "api.example.test",
            "domainPrefix": "api",
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "requestId": uuid.uuid4().hex[:16],
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if pairs:
        event["queryStringParameters"] = dict(pairs)
    if body is not None:
        if isinstance(body, bytes):
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
        else:
            event["body"] = body
    return event


class Headers(dict[str, str]):
    """Case-insensitive response headers."""

    def __init__(self, raw: dict[str, str]) -> None:
        super().__init__({key.lower(): value for key, value in raw.items()})

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(str(key).lower())


@dataclass
class ApiResponse:
    status_code: int
    headers: Headers
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class LambdaClient:
    """Sends requests through `handler(event, context)` as API Gateway and Lambda would."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: str | bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> ApiResponse:
        headers = dict(headers or {})
        body = content
        if json is not None:
            body = _json_dumps(json)
            headers.setdefault("content-type", "application/json")
        event = http_api_event(method, path, headers=headers, query=params, body=body)
        result = self.handler(event, LambdaContext())
        text = result.get("body") or ""
        if result.get("isBase64Encoded"):
            text = base64.b64decode(text).decode()
        return ApiResponse(result["statusCode"], Headers(result.get("headers") or {}), text)

    def get(self, path: str, **kwargs: Any) -> ApiResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> ApiResponse:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> ApiResponse:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> ApiResponse:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> ApiResponse:
        return self.request("DELETE", path, **kwargs)


def _json_dumps(value: Any) -> str:
    return json.dumps(value)
