"""JWT verification for tokens issued by Better Auth: the `sub` claim is the only identity."""

import time
from functools import cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import jwt

from todo_backend.core.errors import AuthenticationError, ServiceUnavailableError
from todo_backend.core.settings import (
    HS256_SECRET_MIN_BYTES,
    Settings,
    get_settings,
    load_settings,
)

ASYMMETRIC_ALGORITHMS = ("EdDSA", "ES256", "RS256", "PS256")
LEEWAY_SECONDS = 30
JWKS_CACHE_SECONDS = 300
JWKS_TIMEOUT_SECONDS = 5
JWKS_REFETCH_COOLDOWN_SECONDS = 1
# Where Better Auth's JWT plugin serves its key set, under BETTER_AUTH_URL.
BETTER_AUTH_JWKS_PATH = "/api/auth/jwks"
SUBJECT_MAX = 255


class ExpectedClaims(NamedTuple):
    """What the running configuration requires of a token besides its signature."""

    issuer: str | None
    audience: str | None

    def as_claims(self) -> dict[str, str]:
        """The `iss`/`aud` claims a token needs (for minting development tokens)."""
        claims = {"iss": self.issuer, "aud": self.audience}
        return {name: value for name, value in claims.items() if value is not None}


def expected_claims(settings: Settings) -> ExpectedClaims:
    """`JWT_ISSUER` / `JWT_AUDIENCE` when set; else, with `BETTER_AUTH_URL`, that origin for both
    (Better Auth's JWT plugin signs `iss` and `aud` with its base URL by default); else none."""
    return ExpectedClaims(
        issuer=settings.jwt_issuer or settings.better_auth_url,
        audience=settings.jwt_audience or settings.better_auth_url,
    )


def configured_token_claims() -> dict[str, str]:
    """The `iss`/`aud` a token must carry under the environment's configuration, for scripts that
    mint development tokens (no database is needed for this)."""
    placeholders = {
        "database_url": "postgresql://localhost/unused",
        "better_auth_secret": "x" * HS256_SECRET_MIN_BYTES,
    }
    return expected_claims(load_settings(**placeholders)).as_claims()


def key_set_url(settings: Settings) -> str | None:
    """`BETTER_AUTH_JWKS_URL`, else Better Auth's own key set under `BETTER_AUTH_URL`, else None."""
    if settings.better_auth_jwks_url is not None:
        return str(settings.better_auth_jwks_url)
    if settings.better_auth_url is not None:
        return settings.better_auth_url + BETTER_AUTH_JWKS_PATH
    return None


def is_valid_subject(subject: object) -> bool:
    """1-255 characters, none of them a control character or a lone surrogate (API.md)."""
    return (
        isinstance(subject, str)
        and 0 < len(subject) <= SUBJECT_MAX
        and bool(subject.strip())
        and not any(
            ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or 0xD800 <= ord(char) < 0xE000
            for char in subject
        )
    )


# Tokens already verified, kept until they expire: a front end sends the same token with every
# request, and verifying it (two base64/JSON parses and an HMAC) is a large part of a warm request.
VERIFIED_TOKENS_MAX = 1024
# Where Better Auth's OAuth provider plugin issues tokens, under BETTER_AUTH_URL.
BETTER_AUTH_OAUTH_ISSUER_PATH = "/api/auth"
# The path of the MCP endpoint: a token whose `aud` is a URL ending in it was issued for an MCP
# resource (RFC 8707), never for the REST and chat routes.
MCP_RESOURCE_PATH = "/mcp"


class RouteAudience(NamedTuple):
    """What a route accepts. `mcp_resource` None: a REST or chat route, which takes session tokens
    only; else the MCP endpoint at that URL, which also takes OAuth access tokens issued for it.

    Verified tokens are remembered per route audience, so a token accepted by one route is never
    answered from memory at a route that would refuse it."""

    mcp_resource: str | None = None


SESSION_ROUTES = RouteAudience()


class Principal(NamedTuple):
    """Who a token speaks for, and what it may do: `scopes` None is a token without a `scope`
    claim (a session JWT), which may do everything."""

    subject: str
    scopes: frozenset[str] | None = None

    def allows(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes


def oauth_issuer(settings: Settings) -> str | None:
    """`OAUTH_ISSUER`, else Better Auth's OAuth provider under `BETTER_AUTH_URL`, else None."""
    if settings.oauth_issuer is not None:
        return settings.oauth_issuer
    if settings.better_auth_url is not None:
        return settings.better_auth_url + BETTER_AUTH_OAUTH_ISSUER_PATH
    return None


def names_an_mcp_resource(audiences: list[str]) -> bool:
    """Whether an `aud` names an MCP endpoint (any origin's `/mcp`): such a token was issued for
    MCP clients, and the REST and chat routes refuse it whatever else is configured."""
    for audience in audiences:
        parts = urlsplit(audience.strip())
        if parts.scheme in {"http", "https"} and parts.path.rstrip("/").endswith(MCP_RESOURCE_PATH):
            return True
    return False


def _audiences(claims: dict[str, Any]) -> list[str] | None:
    """The `aud` claim as a list (None when absent); anything but a string or a list of strings
    is invalid."""
    audience = claims.get("aud")
    if audience is None:
        return None
    if isinstance(audience, str):
        return [audience]
    if isinstance(audience, list) and all(isinstance(item, str) for item in audience):
        return audience
    raise AuthenticationError("Invalid token")


def _scopes(claims: dict[str, Any]) -> frozenset[str] | None:
    """The `scope` claim (RFC 9068: space-separated) as a set; None when the token has none."""
    scope = claims.get("scope")
    if scope is None:
        return None
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list) and all(isinstance(item, str) for item in scope):
        return frozenset(scope)
    raise AuthenticationError("Invalid token")


class _Verified(NamedTuple):
    principal: Principal
    valid_from: float
    valid_until: float
    # The key set the signature was checked against (None for HS256): when the client holds
    # another set (refetched), the token is verified again, so a removed key stops working.
    key_set: object | None


class TokenVerifier:
    """Checks signature, expiry, issuer and audience as the route requires; returns `sub`."""

    def __init__(
        self,
        *,
        secret: str | None,
        jwks: jwt.PyJWKClient | None,
        issuer: str | None,
        audience: str | None,
        oauth_issuer: str | None = None,
    ) -> None:
        self.secret = secret
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.oauth_issuer = oauth_issuer
        self.verified: dict[tuple[RouteAudience, str], _Verified] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> "TokenVerifier":
        jwks = None
        url = key_set_url(settings)
        if url is not None:
            jwks = jwt.PyJWKClient(
                url,
                cache_jwk_set=True,
                lifespan=JWKS_CACHE_SECONDS,
                timeout=JWKS_TIMEOUT_SECONDS,
                # An unknown kid refetches the set: a key rotated in works within a second, while
                # forged kids cannot make every request fetch (PyJWT's default waits 30 s).
                cooldown_duration=JWKS_REFETCH_COOLDOWN_SECONDS,
            )
        claims = expected_claims(settings)
        secret = settings.better_auth_secret
        return cls(
            secret=secret.get_secret_value() if secret is not None else None,
            jwks=jwks,
            issuer=claims.issuer,
            audience=claims.audience,
            oauth_issuer=oauth_issuer(settings),
        )

    def verify(self, token: str, route: RouteAudience = SESSION_ROUTES) -> str:
        """The subject of a token the route accepts (AuthenticationError otherwise)."""
        return self.authorize(token, route).subject

    def authorize(self, token: str, route: RouteAudience = SESSION_ROUTES) -> Principal:
        """The subject and scopes of a token the route accepts (AuthenticationError otherwise)."""
        key = (route, token)
        known = self.verified.get(key)
        if known is not None:
            if known.valid_from <= time.time() < known.valid_until and (
                known.key_set is None or known.key_set is self._current_key_set()
            ):
                return known.principal
            del self.verified[key]
        verified = self._verify(token, route)
        if len(self.verified) >= VERIFIED_TOKENS_MAX:
            del self.verified[next(iter(self.verified))]  # the oldest
        self.verified[key] = verified
        return verified.principal

    def _current_key_set(self) -> object | None:
        """The key set the JWKS client holds now (None once its lifespan has passed)."""
        if self.jwks is None or self.jwks.jwk_set_cache is None:
            return None
        return self.jwks.jwk_set_cache.get()

    def _verify(self, token: str, route: RouteAudience) -> _Verified:
        """The principal, the period in which the token is valid (leeway included) and the key
        set that verified it."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("Invalid token") from None
        algorithm = header.get("alg")
        key_set = None
        if algorithm == "HS256" and self.secret is not None:
            key: object = self.secret
        elif algorithm in ASYMMETRIC_ALGORITHMS and self.jwks is not None:
            key = self._signing_key(token)
            key_set = self._current_key_set()
        else:
            raise AuthenticationError("Invalid token")
        try:
            # iss and aud are checked below, by the route's rules.
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=[algorithm],
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"], "verify_aud": False, "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("Token expired") from None
        except jwt.PyJWTError:
            raise AuthenticationError("Invalid token") from None
        scopes = self._check_audience(claims, route)
        subject = claims.get("sub")
        if not is_valid_subject(subject):
            raise AuthenticationError("Invalid token")
        assert isinstance(subject, str)
        not_before = claims.get("nbf")
        valid_from = float(not_before) - LEEWAY_SECONDS if not_before is not None else 0.0
        valid_until = float(claims["exp"]) + LEEWAY_SECONDS
        return _Verified(Principal(subject, scopes), valid_from, valid_until, key_set)

    def _check_audience(
        self, claims: dict[str, Any], route: RouteAudience
    ) -> frozenset[str] | None:
        """Refuses a token the route does not accept; the scopes it grants there.

        A session token (`iss`/`aud` as configured, see `expected_claims`) is accepted everywhere
        unless its `aud` names an MCP resource; at the MCP endpoint an OAuth access token is also
        accepted, when its `aud` is (or contains) that endpoint's URL and its `iss` is the OAuth
        issuer. Scopes only restrict OAuth access tokens at the MCP endpoint."""
        audiences = _audiences(claims)
        issuer = claims.get("iss")
        if route.mcp_resource is not None and audiences and route.mcp_resource in audiences:
            if self.oauth_issuer is not None and issuer != self.oauth_issuer:
                raise AuthenticationError("Invalid token issuer")
            return _scopes(claims)
        if audiences is not None and names_an_mcp_resource(audiences):
            # Issued for an MCP resource: another origin's at /mcp, any at the REST routes.
            raise AuthenticationError("Token issued for another resource")
        if self.issuer is not None and issuer != self.issuer:
            raise AuthenticationError("Invalid token issuer")
        if self.audience is not None:
            if audiences is None or self.audience not in audiences:
                raise AuthenticationError("Invalid token audience")
        elif route.mcp_resource is not None and audiences is not None:
            # No session audience configured: at /mcp only a token without `aud`, or for /mcp.
            raise AuthenticationError("Token issued for another resource")
        return None

    def _signing_key(self, token: str) -> object:
        assert self.jwks is not None
        try:
            return self.jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError:
            raise ServiceUnavailableError("Signing keys are unavailable, try again") from None
        except jwt.PyJWTError:
            raise AuthenticationError("Invalid token") from None


@cache
def get_token_verifier() -> TokenVerifier:
    return TokenVerifier.from_settings(get_settings())
