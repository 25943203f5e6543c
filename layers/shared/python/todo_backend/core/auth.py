"""JWT verification for tokens issued by Better Auth: the `sub` claim is the only identity."""

import time
from functools import cache
from typing import NamedTuple

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


class TokenVerifier:
    """Checks signature, expiry, and (when configured) issuer and audience; returns `sub`."""

    def __init__(
        self,
        *,
        secret: str | None,
        jwks: jwt.PyJWKClient | None,
        issuer: str | None,
        audience: str | None,
    ) -> None:
        self.secret = secret
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        # token -> (subject, valid from, valid until), leeway included
        self.verified: dict[str, tuple[str, float, float]] = {}

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
        )

    def verify(self, token: str) -> str:
        known = self.verified.get(token)
        if known is not None:
            subject, valid_from, valid_until = known
            if valid_from <= time.time() < valid_until:
                return subject
            del self.verified[token]
        subject, valid_from, valid_until = self._verify(token)
        if len(self.verified) >= VERIFIED_TOKENS_MAX:
            del self.verified[next(iter(self.verified))]  # the oldest
        self.verified[token] = (subject, valid_from, valid_until)
        return subject

    def _verify(self, token: str) -> tuple[str, float, float]:
        """The subject, and the period in which the token is valid (leeway included)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("Invalid token") from None
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.secret is not None:
            key: object = self.secret
        elif algorithm in ASYMMETRIC_ALGORITHMS and self.jwks is not None:
            key = self._signing_key(token)
        else:
            raise AuthenticationError("Invalid token")
        try:
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("Token expired") from None
        except jwt.PyJWTError:
            raise AuthenticationError("Invalid token") from None
        subject = claims.get("sub")
        if not is_valid_subject(subject):
            raise AuthenticationError("Invalid token")
        assert isinstance(subject, str)
        not_before = claims.get("nbf")
        valid_from = float(not_before) - LEEWAY_SECONDS if not_before is not None else 0.0
        return subject, valid_from, float(claims["exp"]) + LEEWAY_SECONDS

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
