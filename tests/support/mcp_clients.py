"""The official MCP SDK client, pointed at the MCP function two ways: over HTTP at a uvicorn server
(as `make dev` serves it) and through the Lambda handler with payload 2.0 events.

The Lambda path is an httpx2 transport (the SDK's HTTP client library) that turns each request
into an API Gateway HTTP API event and calls `handler(event, context)` in one dedicated thread, one
invocation at a time, as a warm Lambda container does.
"""

import asyncio
import base64
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx2

from tests.support.lambda_events import LambdaContext, http_api_event

# The host API Gateway puts in `requestContext.domainName` (see http_api_event).
LAMBDA_BASE_URL = "https://api.example.test"


def run_async[T](scenario: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine in its own thread and event loop (the test thread's loop is Mangum's)."""
    with ThreadPoolExecutor(1) as runner:
        return runner.submit(asyncio.run, scenario()).result()  # type: ignore[arg-type]


def _own_event_loop() -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())


class LambdaTransport(httpx2.AsyncBaseTransport):
    """Each request becomes one invocation of `handler`, in one thread (a warm container).

    With `fresh_loop_per_invocation`, every invocation runs in a new event loop, as some Mangum
    versions and Lambda runtimes do: what a session manager started once per process cannot survive.
    """

    def __init__(self, handler: Any, *, fresh_loop_per_invocation: bool = False) -> None:
        self.handler = handler
        self.fresh_loop = fresh_loop_per_invocation
        self.invocations = 0
        # The loops that ran invocations (kept alive, so that each has its own id).
        self.loops: list[asyncio.AbstractEventLoop] = []
        self._container = ThreadPoolExecutor(1, initializer=_own_event_loop)

    def _invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        if self.fresh_loop:
            previous = asyncio.get_event_loop()
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                self.loops.append(loop)
                return self.handler(event, LambdaContext())  # type: ignore[no-any-return]
            finally:
                asyncio.set_event_loop(previous)
                loop.close()
        self.loops.append(asyncio.get_event_loop())
        return self.handler(event, LambdaContext())  # type: ignore[no-any-return]

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        headers: dict[str, str] = {}
        for name, value in request.headers.multi_items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        # API Gateway adds these; the URL's host is the API's own domain.
        headers.update({"x-forwarded-proto": "https", "x-forwarded-port": "443"})
        event = http_api_event(
            request.method,
            request.url.path,
            headers=headers,
            query=dict(request.url.params),
            body=body.decode() if body else None,
        )
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._container, self._invoke, event)
        self.invocations += 1
        content = (result.get("body") or "").encode()
        if result.get("isBase64Encoded"):
            content = base64.b64decode(content)
        return httpx2.Response(
            result["statusCode"],
            headers=result.get("headers") or {},
            content=content,
            request=request,
        )

    async def aclose(self) -> None:
        """The client is done; the container stays warm for the next one (see `shutdown`)."""

    @property
    def distinct_loops(self) -> int:
        return len({id(loop) for loop in self.loops})

    def shutdown(self) -> None:
        self._container.shutdown(wait=True)


def http_client(
    token: str | None,
    transport: httpx2.AsyncBaseTransport | None = None,
    statuses: list[int] | None = None,
) -> httpx2.AsyncClient:
    """The SDK's HTTP client with the bearer header; `statuses` collects each response's status."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}

    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    return httpx2.AsyncClient(
        headers=headers,
        transport=transport,
        timeout=30.0,
        event_hooks={"response": [record]},
    )


@asynccontextmanager
async def mcp_session(
    base_url: str,
    token: str | None,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    mode: str = "legacy",
    statuses: list[int] | None = None,
) -> AsyncIterator[Any]:
    """An initialised `mcp.Client` for `<base_url>/mcp` with the bearer token.

    mode "legacy" is the initialize handshake (what MCP Inspector and Cursor speak today); "auto"
    probes `server/discover` first (the 2026-07-28 stateless protocol).
    """
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with http_client(token, transport, statuses) as http:
        streams = streamable_http_client(f"{base_url}/mcp", http_client=http)
        async with Client(streams, mode=mode) as client:
            yield client


# --- a real HTTP server -------------------------------------------------------------------------


@contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
