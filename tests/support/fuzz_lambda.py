"""Send a schemathesis `Case` through a Mangum `handler` as API Gateway (HTTP API, payload 2.0)
would deliver it, and hand back a schemathesis `Response` that its checks can validate."""

import base64
import contextlib
import http.client
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import requests
import schemathesis

from tests.support.lambda_events import LambdaContext, http_api_event

REQUEST_ARGUMENTS = ("method", "url", "headers", "params", "data", "json", "files", "cookies")


def prepare(case: Any) -> requests.PreparedRequest:
    """The HTTP request schemathesis would send for `case` (method, URL, headers, body bytes)."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    return requests.Request(
        **{name: kwargs[name] for name in REQUEST_ARGUMENTS if name in kwargs}
    ).prepare()


def to_event(request: requests.PreparedRequest) -> dict[str, Any]:
    """API Gateway's view of the request: lower-case headers, a decoded path, the raw query."""
    parts = urlsplit(request.url or "")
    body = request.body
    if isinstance(body, bytes):
        # Not UTF-8: it stays bytes, which http_api_event base64-encodes as API Gateway does.
        with contextlib.suppress(UnicodeDecodeError):
            body = body.decode()
    headers = {name: value for name, value in request.headers.items() if name.lower() != "host"}
    event = http_api_event(request.method or "GET", unquote(parts.path), headers=headers, body=body)
    event["rawPath"] = parts.path
    event["rawQueryString"] = parts.query
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if pairs:
        joined: dict[str, str] = {}
        for name, value in pairs:
            # API Gateway joins repeated query parameters with commas.
            joined[name] = f"{joined[name]},{value}" if name in joined else value
        event["queryStringParameters"] = joined
    return event


def send_through_lambda(case: Any, handler: Any) -> schemathesis.Response:
    request = prepare(case)
    started = time.perf_counter()
    result = handler(to_event(request), LambdaContext())
    elapsed = time.perf_counter() - started
    body = result.get("body") or ""
    content = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    headers = {name.lower(): [value] for name, value in (result.get("headers") or {}).items()}
    status = result["statusCode"]
    return schemathesis.Response(
        status_code=status,
        headers=headers,
        content=content,
        request=request,
        elapsed=elapsed,
        verify=True,
        message=http.client.responses.get(status, ""),
        encoding="utf-8",
    )
