"""What the route handlers of the functions depend on: the app skeleton, routes built when first
reached, and `Annotated` aliases."""

import copy
import importlib.util
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.constants import REF_PREFIX
from fastapi.openapi.utils import (
    get_openapi,
    validation_error_definition,
    validation_error_response_definition,
)
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, compile_path, get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from todo_backend.core.auth import SESSION_ROUTES, Principal, RouteAudience, get_token_verifier
from todo_backend.core.db import Database, get_database
from todo_backend.core.errors import (
    JSON_EXPECTED_DETAIL,
    AuthenticationError,
    PermissionDeniedError,
    UnsupportedMediaTypeError,
    install_error_handlers,
)
from todo_backend.core.limits import MAX_BODY_BYTES, TOO_LARGE_DETAIL
from todo_backend.core.settings import get_settings

# The Lambda build leaves out pydantic.v1 (scripts/lambda_build.py PRUNED), which FastAPI tries to
# import, inside try/except ImportError, for each route and response it checks for v1 models. A
# failed import is not remembered: each try would search the path again (~0.1 ms). None in
# sys.modules makes `import pydantic.v1` fail at once.
if importlib.util.find_spec("pydantic.v1") is None:
    sys.modules["pydantic.v1"] = None  # type: ignore[assignment]

# Characters a path segment may hold unencoded (RFC 3986 pchar, plus the separator).
URL_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class ErrorBody(BaseModel):
    detail: str


ERROR_DESCRIPTIONS = {
    401: "Missing, malformed, expired or badly signed token (`WWW-Authenticate: Bearer`)",
    403: "The path's user id is not the token's subject",
    404: "No such task or conversation for this user",
    415: "The body is not sent as JSON (`Content-Type: application/json`)",
    429: "The model provider is rate limiting (`Retry-After` when known)",
    502: "The model provider failed",
    503: "The database or the model provider is not available",
    504: "The model provider did not answer in time",
}


ERROR_BODY_REF = {"$ref": "#/components/schemas/ErrorBody"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer.

    They name ErrorBody by reference, not as a `model`: FastAPI builds a validator for every
    response model of every route (on the first request, for included routers) that only the
    OpenAPI document uses: three quarters of them here. `create_app` adds the schema."""
    return {
        code: {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"schema": ERROR_BODY_REF}},
        }
        for code in (401, 503, *codes)
    }


# Response models documented by reference and loaded only when the document is built: a route
# that writes its JSON itself (a rare one, whose models would cost every cold start their import).
_lazy_models: dict[str, Callable[[], type[BaseModel]]] = {}


def lazy_model_response(
    name: str, load: Callable[[], type[BaseModel]], description: str
) -> dict[str, Any]:
    """An OpenAPI response whose schema is the model `load()` returns, named `name`."""
    _lazy_models[name] = load
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"{REF_PREFIX}{name}"}}},
    }


def _add_lazy_models(document: dict[str, Any], schemas: dict[str, Any]) -> None:
    """The lazy models that the document's operations refer to (one process may build the
    documents of several functions: scripts/openapi.py)."""
    referenced = json.dumps(document.get("paths", {}))
    for name, load in _lazy_models.items():
        if f'"{REF_PREFIX}{name}"' not in referenced:
            continue
        schema = load().model_json_schema(
            mode="serialization",
            ref_template=f"{REF_PREFIX}{{model}}",
            schema_generator=_UnsortedJsonSchema,
        )
        for nested, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(nested, definition)
        schemas[name] = schema


# Marks an operation whose query string a QueryModel reads: `_documented` replaces the mark
# with the model's parameters when the document is built (their schemas cost ~2 ms to build, too
# much for every cold start).
QUERY_MODEL_MARK = "x-todo-query-model"
_query_models: dict[str, type[BaseModel]] = {}


class QueryModel[M: BaseModel]:
    """`Depends(QueryModel(Model))`: the query string read into `Model` in one validation.

    What FastAPI's query models (`Annotated[Model, Query()]`) accept and answer, for a fraction
    of the CPU: FastAPI inspects every field's annotation on every request (~75 us for a dozen
    fields, a twentieth of a warm list request) and builds a validator per field on the first.
    As there, the last value of a repeated name counts, names the model does not know follow its
    `extra` policy, and errors are located under `query`. `AuthenticatedRoute` documents the
    parameters."""

    def __init__(self, model: type[M]) -> None:
        self.model = model
        _query_models[model.__name__] = model

    async def __call__(self, request: Request) -> M:
        try:
            return self.model.model_validate(dict(request.query_params))
        except ValidationError as error:
            raise RequestValidationError(
                [
                    {**detail, "loc": ("query", *detail["loc"])}
                    for detail in error.errors(include_url=False)
                ]
            ) from None


def _query_model_of(dependant: Dependant) -> type[BaseModel] | None:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, QueryModel):
            return dependency.call.model
        if (found := _query_model_of(dependency)) is not None:
            return found
    return None


class _UnsortedJsonSchema(GenerateJsonSchema):
    """Keys in the order FastAPI writes its own parameters' schemas (pydantic sorts them)."""

    def sort(self, value: JsonSchemaValue, parent_key: str | None = None) -> JsonSchemaValue:
        return value


def _query_parameters(model: type[BaseModel]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """OpenAPI query parameters for the fields of `model`, and the schemas they refer to."""
    schema = model.model_json_schema(
        ref_template=f"{REF_PREFIX}{{model}}", schema_generator=_UnsortedJsonSchema
    )
    required = set(schema.get("required", ()))
    parameters = [
        {"name": name, "in": "query", "required": name in required, "schema": field}
        for name, field in schema["properties"].items()
    ]
    return parameters, schema.get("$defs", {})


def _document_query_model(
    operation: dict[str, Any], model: type[BaseModel], schemas: dict[str, Any]
) -> dict[str, Any]:
    """`operation` with the model's parameters after its own (path) ones, and the 422 that
    FastAPI documents for routes with parameters."""
    parameters, definitions = _query_parameters(model)
    schemas.update(definitions)
    schemas.setdefault("ValidationError", validation_error_definition)
    schemas.setdefault("HTTPValidationError", validation_error_response_definition)
    invalid = {"$ref": f"{REF_PREFIX}HTTPValidationError"}
    operation.get("responses", {}).setdefault(
        "422",
        {"description": "Validation Error", "content": {"application/json": {"schema": invalid}}},
    )
    # Where FastAPI puts parameters: before the body and the responses.
    later = {"parameters", "requestBody", "responses"}
    return {
        **{key: value for key, value in operation.items() if key not in later},
        "parameters": operation.get("parameters", []) + parameters,
        **{key: operation[key] for key in ("requestBody", "responses") if key in operation},
    }


def _documented(
    app: FastAPI, user_routes: "UserRouter | None" = None
) -> Callable[[], dict[str, Any]]:
    """`app.openapi`, with ErrorBody's schema among the components (`errors` refers to it), the
    `/api/{user_id}` form of `user_routes` and the parameters of query models."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            build_deferred_routes(app)  # FastAPI documents built routes only
            document = FastAPI.openapi(app)
            components = document.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            if user_routes is not None:
                more = get_openapi(
                    title=app.title,
                    version=app.version,
                    routes=user_routes.documented_user_path_routes(),
                )
                document.setdefault("paths", {}).update(more["paths"])
                for kind, entries in more.get("components", {}).items():
                    components.setdefault(kind, {}).update(entries)
            schemas["ErrorBody"] = ErrorBody.model_json_schema()
            _add_lazy_models(document, schemas)
            for path_item in document.get("paths", {}).values():
                for method, operation in path_item.items():
                    name = operation.pop(QUERY_MODEL_MARK, None)
                    if name is not None:
                        model = _query_models[name]
                        path_item[method] = _document_query_model(operation, model, schemas)
            components["schemas"] = dict(sorted(schemas.items()))
        return app.openapi_schema

    return openapi


class BodyLimitMiddleware:
    """Bodies over `MAX_BODY_BYTES`: 413 before anything parses them. A Content-Length over the
    limit is refused before the app runs; otherwise the bytes actually received are counted, and
    reading past the limit raises a 413 that the app's handlers answer (inside CORS)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > MAX_BODY_BYTES:
            response = JSONResponse({"detail": TOO_LARGE_DETAIL}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise HTTPException(status_code=413, detail=TOO_LARGE_DETAIL)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# CORS, the one list: the local app answers it with these, and in AWS API Gateway does, from the
# template's `x-amazon-apigateway-cors` (tests/test_cors.py fails when the two differ). Browser MCP
# clients send MCP-Protocol-Version after initialize, and read a 401's WWW-Authenticate.
CORS_ALLOW_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CORS_ALLOW_HEADERS = ("authorization", "content-type", "idempotency-key", "mcp-protocol-version")
CORS_EXPOSE_HEADERS = ("location", "retry-after", "www-authenticate")
CORS_MAX_AGE_SECONDS = 600


def create_app(title: str, description: str) -> FastAPI:
    """A FastAPI app with the shared error mapping and CORS; routes are added by the function."""
    settings = get_settings()
    # No /docs or /redoc here: FastAPI's pages load Swagger UI from a CDN, and API Gateway routes
    # neither; `make dev` serves the whole API's page with local assets (scripts/local_app.py).
    app = FastAPI(
        title=title, description=description, version="1.0.0", docs_url=None, redoc_url=None
    )
    app.router.route_class = AuthenticatedRoute
    app.openapi = _documented(app)  # type: ignore[method-assign]
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=list(CORS_ALLOW_METHODS),
            allow_headers=list(CORS_ALLOW_HEADERS),
            expose_headers=list(CORS_EXPOSE_HEADERS),
            max_age=CORS_MAX_AGE_SECONDS,
        )
    return app


def authenticate(authorization: str | None) -> str:
    """The token's `sub`; 401 with `WWW-Authenticate: Bearer` for anything else (a token issued
    for the MCP resource included)."""
    return authorize(authorization, SESSION_ROUTES).subject


def authorize(authorization: str | None, route: RouteAudience) -> Principal:
    """Who the bearer token speaks for at a route with these audience rules, and its scopes."""
    if authorization is None:
        raise AuthenticationError("Not authenticated")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Not authenticated")
    return get_token_verifier().authorize(token.strip(), route)


bearer = HTTPBearer(auto_error=False, description="A JWT issued by Better Auth")


# Dependencies are async: they do no I/O worth a worker thread (the JWKS fetch is rare and
# bounded by a timeout), and a thread hop per dependency is measurable on every request.
async def current_user(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The user that `AuthenticatedRoute` established (the bearer scheme documents it)."""
    user: str = request.state.user
    return user


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def _is_json(content_type: str) -> bool:
    """Whether FastAPI reads a body of this media type as JSON (`application/json`, `+json`)."""
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _json_body_read(
    handle: Callable[[Request], Coroutine[Any, Any, Response]],
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    """`handle`, refusing a body that is not JSON: 415 for another media type, and 422
    `json_invalid` for every malformed one. (FastAPI would validate a form or text body as if it
    were the JSON value, and answer 400 for invalid UTF-8 or nesting too deep to parse.) The body
    is parsed once: FastAPI reuses the request's parsed JSON."""

    async def json_only(request: Request) -> Response:
        if await request.body():
            content_type = request.headers.get("content-type")
            if content_type is not None and not _is_json(content_type):
                raise UnsupportedMediaTypeError(JSON_EXPECTED_DETAIL)
            try:
                await request.json()
            except json.JSONDecodeError:
                pass  # FastAPI reports it, with its position
            except (ValueError, RecursionError) as error:
                reason = "nested too deeply" if isinstance(error, RecursionError) else "not UTF-8"
                raise RequestValidationError(
                    [
                        {
                            "type": "json_invalid",
                            "loc": ("body",),
                            "msg": "JSON decode error",
                            "input": {},
                            "ctx": {"error": reason},
                        }
                    ]
                ) from None
        return await handle(request)

    return json_only


UNSUPPORTED_MEDIA_TYPE = errors(415)[415]


class AuthenticatedRoute(APIRoute):
    """Checks the token before FastAPI reads the body, for routes that depend on `current_user`:
    without a valid token the answer is 401 whatever the body (else a malformed body wins, 422).
    Refuses a body that is not JSON (`_json_body_read`). Marks a route that reads a QueryModel,
    for the document."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        model = _query_model_of(self.dependant)
        if model is not None:
            self.openapi_extra = {**(self.openapi_extra or {}), QUERY_MODEL_MARK: model.__name__}
        if self.body_field is not None:
            self.responses = {**self.responses, 415: UNSUPPORTED_MEDIA_TYPE}

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        if self.body_field is not None:
            handle = _json_body_read(handle)
        if not _depends_on(self.dependant, current_user):
            return handle

        async def authenticated(request: Request) -> Response:
            user = authenticate(request.headers.get("authorization"))
            # A `{user_id}` path segment must be the token's own subject: checked here, before
            # the body, so the answer is 403 whatever the body holds.
            claimed = request.path_params.get("user_id")
            if claimed is not None and claimed != user:
                raise PermissionDeniedError("Not allowed to act for another user")
            request.state.user = user
            return await handle(request)

        return authenticated


CurrentUser = Annotated[str, Depends(current_user)]


async def path_user(user_id: Annotated[str, Path()], subject: CurrentUser) -> str:
    """The user of a `/api/{user_id}/...` route: `AuthenticatedRoute` has already checked that
    `{user_id}` is the token's subject (this declares the parameter and the dependency)."""
    return subject


class DeferredRoute(BaseRoute):
    """An API route that FastAPI builds when a request first reaches it.

    Building a route (its dependencies' signatures, a validator for its body and its response)
    costs about 0.8 ms; a cold container serves one request, and needs one route. With SnapStart
    every route is built before the snapshot (`build_deferred_routes`). Before it is built the
    route matches on its path and methods alone, as the built one would."""

    def __init__(self, path: str, methods: set[str], build: Callable[[], APIRoute]) -> None:
        self.path = path
        self.path_regex, self.path_format, self.param_convertors = compile_path(path)
        self.methods = methods  # as FastAPI's: no HEAD for GET
        self._build = build
        self._built: APIRoute | None = None

    @property
    def route(self) -> APIRoute:
        if self._built is None:
            self._built = self._build()
        return self._built

    @property
    def is_built(self) -> bool:
        return self._built is not None

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self._built is not None:
            return self._built.matches(scope)
        if scope["type"] != "http" or not self.path_regex.match(get_route_path(scope)):
            return Match.NONE, {}
        if scope["method"] not in self.methods:
            # 405 unless another route matches fully: built only if it comes to answering.
            return Match.PARTIAL, {}
        return self.route.matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        return self.route.url_path_for(name, **path_params)


def build_deferred_routes(app: FastAPI) -> None:
    """Build every route of `app` not built yet (before a snapshot, for the document), and
    serve the built routes directly from then on."""
    app.router.routes[:] = [
        route.route if isinstance(route, DeferredRoute) else route for route in app.router.routes
    ]


class DeferredRouter(APIRouter):
    """Routes declared as on an app, each built when a request first reaches it
    (`DeferredRoute`); `include_deferred_routes` serves them from the app."""

    def __init__(self, app: FastAPI, prefix: str = "") -> None:
        super().__init__(
            prefix=prefix, route_class=AuthenticatedRoute, dependency_overrides_provider=app
        )

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        methods = {method.upper() for method in options.get("methods") or ("GET",)}
        self.routes.append(
            DeferredRoute(self.prefix + path, methods, lambda: self._build(path, endpoint, options))
        )

    def _build(self, path: str, endpoint: Callable[..., Any], options: dict[str, Any]) -> APIRoute:
        """The route as `APIRouter.add_api_route` builds it."""
        builder = APIRouter(
            prefix=self.prefix,
            route_class=self.route_class,
            dependency_overrides_provider=self.dependency_overrides_provider,
        )
        builder.add_api_route(path, endpoint, **options)
        route = builder.routes[0]
        assert isinstance(route, APIRoute)
        return route


def deferred_router(app: FastAPI) -> DeferredRouter:
    """A router for `app`'s routes, built when first reached."""
    return DeferredRouter(app)


def include_deferred_routes(app: FastAPI, router: DeferredRouter) -> None:
    app.router.routes.extend(router.routes)


USER_PATH_PREFIX = "/api/{user_id}"


class UserRouter(DeferredRouter):
    """Routes served both as `/api/...` and, for the hackathon front ends, `/api/{user_id}/...`:
    declared once, each built once (when first reached) under `/api`. `include_user_routes` adds
    the second form as an alias of each (its own path, the same built handler), and the document
    describes it.

    FastAPI's `include_router` would build each route at import as a template, then again for
    each prefix on the first request that reaches one of them: about 14 ms of every cold start,
    and an extra layer of matching on every request."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(app, prefix="/api")
        # (path, endpoint, options) as declared, to document the `/api/{user_id}` form.
        self.declarations: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        self.declarations.append((path, endpoint, options))
        super().add_api_route(path, endpoint, **options)

    def documented_user_path_routes(self) -> list[BaseRoute]:
        """The `/api/{user_id}` routes as the document shows them: with the path parameter,
        its 403 and their own operation ids."""
        documented = APIRouter(
            prefix=USER_PATH_PREFIX,
            route_class=AuthenticatedRoute,
            dependencies=[Depends(path_user)],
            responses=errors(403),
            generate_unique_id_function=lambda route: f"{route.name}_for_path_user",
        )
        for path, endpoint, options in self.declarations:
            documented.add_api_route(path, endpoint, **options)
        return documented.routes


def user_router(app: FastAPI) -> UserRouter:
    """A router for routes served both as `/api/...` and `/api/{user_id}/...`."""
    return UserRouter(app)


def _user_path_alias(route: APIRoute) -> APIRoute:
    """`route` at `/api/{user_id}/...`: `AuthenticatedRoute` checks the path's user against the
    token before anything else runs, and the handler ignores the extra path parameter."""
    alias = copy.copy(route)
    alias.path = USER_PATH_PREFIX + route.path.removeprefix("/api")
    alias.path_regex, alias.path_format, alias.param_convertors = compile_path(alias.path)
    alias.include_in_schema = False  # documented by UserRouter.documented_user_path_routes
    return alias


def include_user_routes(app: FastAPI, router: UserRouter) -> None:
    """Serve `router`'s routes as they are, then each again under `/api/{user_id}` (in that
    order, as two `include_router` calls would)."""
    routes = [route for route in router.routes if isinstance(route, DeferredRoute)]
    app.router.routes.extend(routes)
    app.router.routes.extend(
        DeferredRoute(
            USER_PATH_PREFIX + route.path.removeprefix("/api"),
            route.methods,
            lambda route=route: _user_path_alias(route.route),
        )
        for route in routes
    )
    app.openapi = _documented(app, router)  # type: ignore[method-assign]


def location_of(request: Request, resource_id: object) -> str:
    """A new resource's URL in the form of the request (`/api/tasks/7` or `/api/u/tasks/7`),
    percent-encoded: a `{user_id}` may hold spaces or non-ASCII characters, which a header
    cannot carry as they are."""
    path = quote(request.url.path.rstrip("/"), safe=URL_PATH_SAFE)
    return f"{path}/{quote(str(resource_id), safe='')}"


async def database() -> Database:
    return get_database()


PathUser = Annotated[str, Depends(path_user)]
DatabaseDep = Annotated[Database, Depends(database)]
