"""JWT verification for tokens issued by Better Auth: the `sub` claim is the only identity."""

import time
from dataclasses import dataclass, field
from functools import cache

import jwt

from todo_backend.core.errors import AuthenticationError, ServiceUnavailableError
from todo_backend.core.settings import Settings, get_settings

ASYMMETRIC_ALGORITHMS = ("EdDSA", "ES256", "RS256", "PS256")
LEEWAY_SECONDS = 30
JWKS_CACHE_SECONDS = 300
JWKS_TIMEOUT_SECONDS = 5
JWKS_REFETCH_COOLDOWN_SECONDS = 1
# Tokens already verified, kept until they expire: a front end sends the same token with every
# request, and verifying it (two base64/JSON parses and an HMAC) is a large part of a warm request.
VERIFIED_TOKENS_MAX = 1024


@dataclass(frozen=True)
class TokenVerifier:
    """Checks signature, expiry, and (when configured) issuer and audience; returns `sub`."""

    secret: str
    jwks: jwt.PyJWKClient | None
    issuer: str | None
    audience: str | None
    # token -> (subject, valid from, valid until), leeway included
    verified: dict[str, tuple[str, float, float]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> "TokenVerifier":
        jwks = None
        if settings.better_auth_jwks_url is not None:
            jwks = jwt.PyJWKClient(
                str(settings.better_auth_jwks_url),
                cache_jwk_set=True,
                lifespan=JWKS_CACHE_SECONDS,
                timeout=JWKS_TIMEOUT_SECONDS,
                # An unknown kid refetches the set: a key rotated in works within a second, while
                # forged kids cannot make every request fetch (PyJWT's default waits 30 s).
                cooldown_duration=JWKS_REFETCH_COOLDOWN_SECONDS,
            )
        return cls(
            secret=settings.better_auth_secret.get_secret_value(),
            jwks=jwks,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
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
        if algorithm == "HS256":
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
        if not isinstance(subject, str) or not subject.strip():
            raise AuthenticationError("Invalid token")
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
