"""Lambda SnapStart: warm a function up before its snapshot, and make the restored copies safe.

With SnapStart, Lambda runs a function's initialisation once, when a version is published, takes
a snapshot of the microVM, and starts new execution environments from that snapshot instead of
cold-starting them. Each handler module calls `register(app, warm_up)`; the runtime hooks
(`snapshot_restore_py`, part of Lambda's Python managed runtimes) then do:

Before the snapshot
    * run `prepare` callables (the chat function imports the Cohere SDK and builds its client);
    * build every route the app defers to its first request (`core.api.DeferredRoute`), those
      the warm-up does not reach too;
    * send `warm_up`'s requests through the inner ASGI app (a plain Mangum handler, not the
      instrumented one, so Powertools' cold-start flag and metric stay for the first real
      invocation): every hot code path is imported and run, SQLAlchemy's compiled statements
      and the list statement cache are filled, the TLS context exists. The requests are
      authenticated by a token minted for `WARM_UP_USER` with the configured HS256 secret and
      the issuer/audience the verifier expects, so the JWT path is warm too, and whatever they
      create they delete (`release` hooks also delete the task events those writes queued).
      Without an HS256 secret (keys only from a JWKS URL) the warm-up stops at its first
      authenticated request, with one log line;
    * drop the metrics the requests added, close every socket (the database pool, the AWS SDK
      clients that fetched the secrets, `release` callables such as the Cohere HTTP pool).

After a restore
    * reseed `random` (every restored copy would otherwise draw the same numbers), drop the
      JWKS key set (fetched at a time that is now arbitrarily far in the past), run `restore`
      callables.

A failing warm-up is logged and never fails the snapshot: the function is only less warm.
Outside Lambda (no `snapshot_restore_py`, e.g. in the built function tests) `register` does
nothing; `before_snapshot` and `after_restore` can also be called directly (tests, benchmarks).
"""

# Only what `register` needs is imported here: the rest runs once, before the snapshot, and
# must not add to a cold start without SnapStart.
import gc
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from todo_backend.core.observability import logger, metrics

# The synthetic subject of the warm-up requests: not a Better Auth user id (those are random).
WARM_UP_USER = "snapstart-warm-up"
WARM_UP_TOKEN_SECONDS = 300

Hook = Callable[[], None]
AsgiHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


class WarmUpError(RuntimeError):
    """A warm-up request answered with a server error."""


class NoWarmUpToken(RuntimeError):
    """An authenticated warm-up request, but no token could be minted (no HS256 secret): the
    warm-up stops there, so warm-ups send their unauthenticated requests first."""


class WarmUpContext:
    """The Lambda context the warm-up requests carry."""

    function_name = "snapstart-warm-up"
    function_version = "$LATEST"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:snapstart-warm-up"
    log_group_name = "/aws/lambda/snapstart-warm-up"
    log_stream_name = "snapstart-warm-up"

    def __init__(self) -> None:
        import uuid

        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


class WarmUpClient:
    """Sends API Gateway HTTP API (payload 2.0) events to the inner handler."""

    def __init__(self, handler: AsgiHandler, token: str | None, user: str = WARM_UP_USER) -> None:
        self.handler = handler
        self.token = token
        self.user = user
        self.sent: list[tuple[str, str, int]] = []

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        authenticated: bool = True,
    ) -> tuple[int, Any]:
        """Status and decoded JSON body (None when empty); a 5xx raises `WarmUpError`, an
        authenticated request without a token `NoWarmUpToken`."""
        import base64
        import json
        import uuid
        from urllib.parse import urlencode

        headers = {
            "host": "snapstart.invalid",
            "user-agent": "snapstart-warm-up",
            **(headers or {}),
        }
        if body is not None:
            headers["content-type"] = "application/json"
        if authenticated:
            if self.token is None:
                raise NoWarmUpToken(f"{method} {path} needs a token")
            headers["authorization"] = f"Bearer {self.token}"
        event = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": urlencode(query or {}),
            "headers": headers,
            "requestContext": {
                "accountId": "000000000000",
                "apiId": "snapstart",
                "domainName": "snapstart.invalid",
                "domainPrefix": "snapstart",
                "http": {
                    "method": method,
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": "snapstart-warm-up",
                },
                "requestId": uuid.uuid4().hex,
                "routeKey": "$default",
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
                "timeEpoch": int(time.time() * 1000),
            },
            "body": None if body is None else json.dumps(body),
            "isBase64Encoded": False,
        }
        response = self.handler(event, WarmUpContext())
        status = int(response["statusCode"])
        self.sent.append((method, path, status))
        if status >= 500:
            raise WarmUpError(f"{method} {path} answered {status}")
        payload = response.get("body") or ""
        if response.get("isBase64Encoded"):
            payload = base64.b64decode(payload).decode()
        return status, json.loads(payload) if payload else None


def warm_up_token() -> str | None:
    """A short-lived HS256 token for `WARM_UP_USER`, as Better Auth would issue it (the `iss` and
    `aud` the verifier expects, see `core.auth.expected_claims`); None without an HS256 secret
    (keys only from a JWKS URL): nothing here can sign a token the function would accept."""
    import jwt

    from todo_backend.core.auth import expected_claims
    from todo_backend.core.settings import get_settings

    settings = get_settings()
    if settings.better_auth_secret is None:
        return None
    now = int(time.time())
    claims: dict[str, Any] = {"sub": WARM_UP_USER, "iat": now, "exp": now + WARM_UP_TOKEN_SECONDS}
    claims.update(expected_claims(settings).as_claims())
    return jwt.encode(claims, settings.better_auth_secret.get_secret_value(), algorithm="HS256")


def close_connections() -> None:
    """Close every socket this process holds open: the database pool, the AWS SDK clients
    Powertools Parameters kept after fetching the secrets, and the outbox relay's EventBridge
    client when one was built (it is built again, after the restore, on its next use)."""
    import gc

    from todo_backend.core.db import get_database

    if get_database.cache_info().currsize:
        get_database().engine.dispose()
    relay = sys.modules.get("todo_backend.events.relay")
    events_client = getattr(relay, "events_client", None)
    if events_client is not None and events_client.cache_info().currsize:
        events_client().close()
        events_client.cache_clear()
    parameters = sys.modules.get("aws_lambda_powertools.utilities.parameters.base")
    providers: dict[str, Any] = getattr(parameters, "DEFAULT_PROVIDERS", {})
    for provider in providers.values():
        client = getattr(provider, "client", None)
        if client is not None and hasattr(client, "close"):
            client.close()
    providers.clear()
    gc.collect()  # sockets of connections nothing refers to any more


def _warm(client: WarmUpClient, warm_up: Callable[[WarmUpClient], None]) -> None:
    client.token = warm_up_token()
    if client.token is None:
        logger.info(
            "snapshot warm-up without authenticated requests: no BETTER_AUTH_SECRET to sign "
            "an HS256 token (unauthenticated requests still warm the function)"
        )
    from contextlib import suppress

    with suppress(NoWarmUpToken):  # the authenticated part is skipped, as logged above
        warm_up(client)


def before_snapshot(
    app: Any,
    warm_up: Callable[[WarmUpClient], None] | None,
    prepare: Sequence[Hook] = (),
    release: Sequence[Hook] = (),
) -> WarmUpClient | None:
    """Warm the function up, then close every socket. Never raises: a failed warm-up only
    leaves the snapshot less warm."""
    from mangum import Mangum

    from todo_backend.core.api import build_deferred_routes
    from todo_backend.core.db import get_database

    started = time.perf_counter()
    client: WarmUpClient | None = None
    steps: list[Callable[[], Any]] = [get_database, *prepare]
    if app is not None:
        steps.append(partial(build_deferred_routes, app))
    if warm_up is not None:
        client = WarmUpClient(Mangum(app, lifespan="off"), token="")
        steps.append(partial(_warm, client, warm_up))
    try:
        for step in steps:  # each step on its own: one failing does not skip the others
            try:
                step()
            except Exception as error:  # logged: the snapshot is still taken
                logger.warning(
                    "snapshot warm-up incomplete",
                    extra={"error": type(error).__name__, "detail": str(error)[:200]},
                )
    finally:
        # Metrics the warm-up added (TasksCreated, ...) describe no user's request.
        metrics.clear_metrics()
        for hook in release:
            try:
                hook()
            except Exception as error:
                logger.warning("snapshot release hook failed", extra={"error": repr(error)})
        close_connections()
    logger.info(
        "snapshot prepared",
        extra={
            "warm_up_requests": len(client.sent) if client else 0,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return client


def after_restore(restore: Sequence[Hook] = ()) -> None:
    """Make a restored copy unique and current."""
    import random

    from todo_backend.core.auth import get_token_verifier

    random.seed()  # from os.urandom: each restored copy draws its own numbers
    get_token_verifier.cache_clear()  # the JWKS key set and its fetch times
    for hook in restore:
        hook()


def register(
    app: Any,
    warm_up: Callable[[WarmUpClient], None] | None = None,
    *,
    prepare: Sequence[Hook] = (),
    release: Sequence[Hook] = (),
    restore: Sequence[Hook] = (),
) -> bool:
    """Register the SnapStart runtime hooks of a function whose ASGI app is `app`; False when
    the runtime has no `snapshot_restore_py` (not in Lambda).

    The last statement of a handler module, so it also ends the initialisation: the handler
    module turns the cyclic garbage collector off while it imports (it would scan the import's
    hundreds of thousands of objects over and over, ~9% of a cold start), and this freezes
    what exists (moved out of the collector's reach, as before a fork: the first collections
    of the first request do not rescan it) and turns it on again."""
    gc.freeze()
    gc.enable()
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(before_snapshot, app, warm_up, tuple(prepare), tuple(release))
    register_after_restore(after_restore, tuple(restore))
    return True
