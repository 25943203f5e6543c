"""Typed configuration, read from the environment once per cold start.

This is the only module that reads the environment. In AWS the secrets (`DATABASE_URL`,
`BETTER_AUTH_SECRET`, `CO_API_KEY`) are not in the environment: `<NAME>_SECRET_ID` says where they
live (a Secrets Manager name or ARN, or an SSM parameter as `ssm:/path` or its ARN) and
`todo_backend.core.secrets` fetches them. A plain environment variable wins, for local use.

An empty (or blank) value counts as unset: `sam local --env-vars` sets "" for every variable it is
not given, and then the `<NAME>_SECRET_ID` path is used as if the variable were absent.
"""

import ipaddress
import os
from functools import cache
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from todo_backend.core.configuration import ConfigurationError

DEFAULT_COHERE_MODEL = "command-a-03-2025"


SECRET_VARIABLES = ("DATABASE_URL", "BETTER_AUTH_SECRET", "CO_API_KEY")
# HS256 needs a key at least as long as its 256-bit output (RFC 7518, section 3.2).
HS256_SECRET_MIN_BYTES = 32
# Hosts where a key set may be served over plain http: this machine, and the host as seen from a
# `sam local` container.
LOCAL_HOST_NAMES = frozenset({"localhost", "host.docker.internal"})


def is_local_host(host: str | None) -> bool:
    """Loopback addresses, `localhost` (and `*.localhost`), and Docker's name for the host."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host in LOCAL_HOST_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_https_unless_local(url: str) -> str:
    """A URL from which signing keys are fetched: TLS unless the host is local."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not is_local_host(parts.hostname):
        raise ValueError(f"must be an https:// URL (plain http only for a local host), not {url!r}")
    return url


class AwsSecretsSource(PydanticBaseSettingsSource):
    """Fetches each secret missing from the environment from where `<NAME>_SECRET_ID` points."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in SECRET_VARIABLES:
            location = os.environ.get(f"{name}_SECRET_ID", "").strip()
            if os.environ.get(name, "").strip() or not location:
                continue
            from todo_backend.core.secrets import fetch_secret

            values[name.lower()] = fetch_secret(name, location)
        return values


def _origin(value: str, whose: str, example: str) -> str:
    """`scheme://host[:port]` of a URL that must be an origin (no path, query or fragment)."""
    parts = urlsplit(value.strip())
    try:
        parts.port  # noqa: B018 - raises on an invalid port
    except ValueError:
        raise ValueError("invalid port") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"must be {whose} origin, e.g. {example}")
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        raise ValueError(f"must be {whose} origin (scheme, host and port, no path), e.g. {example}")
    return f"{parts.scheme}://{parts.netloc}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    database_url: SecretStr = Field(min_length=1)
    # Optional when a key set is configured (BETTER_AUTH_URL or BETTER_AUTH_JWKS_URL): without it,
    # HS256 tokens are refused.
    better_auth_secret: SecretStr | None = None
    better_auth_jwks_url: HttpUrl | None = None
    # The front end's origin (Better Auth's own variable): its key set, and the iss/aud it signs.
    better_auth_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # The `iss` of OAuth access tokens for /mcp; unset: Better Auth's OAuth provider plugin's,
    # `<BETTER_AUTH_URL>/api/auth`.
    oauth_issuer: str | None = None
    # The API's public origin (https://api.example.com): the origin of the MCP resource and of its
    # 401 challenge, never taken from a client's Host header when set.
    public_url: str | None = None

    co_api_key: SecretStr | None = None
    cohere_model: str = Field(default=DEFAULT_COHERE_MODEL, min_length=1)
    co_api_url: HttpUrl | None = None
    # API Gateway gives up after 29 s; every Cohere call of a turn shares this budget.
    chat_turn_budget_seconds: float = Field(default=24.0, gt=0, le=28)
    chat_max_steps: int = Field(default=6, ge=1, le=20)
    # Bounds of one turn, and per-user daily quotas (UTC day).
    chat_max_tool_calls: int = Field(default=20, ge=1, le=100)
    chat_history_max_chars: int = Field(default=24000, ge=1000, le=1_000_000)
    chat_daily_turns: int = Field(default=100, ge=1)
    chat_daily_tokens: int = Field(default=200_000, ge=1)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Front-end origins whose pages may call /mcp where CORS is answered outside the app (API
    # Gateway's AllowedOrigins in AWS): the MCP function's Origin check admits them too.
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # One pooled connection per warm Lambda container; the local server may ask for more.
    db_pool_size: int = Field(default=1, ge=1, le=20)
    # The EventBridge bus that task events are relayed to; unset: they stay in the outbox.
    event_bus_name: str | None = Field(default=None, max_length=256)
    # Tries of a task event in all (the first included) before it is parked, never retried.
    event_max_attempts: int = Field(default=10, ge=1, le=100)
    # Relayed and parked events are deleted this many days after they were relayed or parked.
    event_retention_days: int = Field(default=7, ge=1, le=3650)
    # Chat turn records and usage rows are deleted this many days after their (UTC) day.
    chat_record_retention_days: int = Field(default=30, ge=1, le=3650)

    @field_validator("event_bus_name", mode="before")
    @classmethod
    def _blank_bus_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The AWS source only returns what the environment lacks (or holds blank), so putting it
        # before the environment lets a secret replace a blank variable, never a set one.
        return (init_settings, AwsSecretsSource(settings_cls), env_settings)

    @field_validator("cors_origins", "allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator(
        "jwt_issuer",
        "jwt_audience",
        "better_auth_jwks_url",
        "co_api_url",
        "co_api_key",
        "better_auth_secret",
        "better_auth_url",
        "oauth_issuer",
        "public_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url_is_set(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("must be set (directly, or through DATABASE_URL_SECRET_ID)")
        return value

    @field_validator("better_auth_secret")
    @classmethod
    def _secret_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < HS256_SECRET_MIN_BYTES:
            raise ValueError(
                f"must be at least {HS256_SECRET_MIN_BYTES} bytes for HS256"
                " (generate one with `openssl rand -base64 32`)"
            )
        return value

    @field_validator("better_auth_jwks_url")
    @classmethod
    def _key_set_over_tls(cls, value: HttpUrl | None) -> HttpUrl | None:
        if value is not None:
            require_https_unless_local(str(value))
        return value

    @field_validator("public_url")
    @classmethod
    def _the_api_origin(cls, value: str | None) -> str | None:
        return None if value is None else _origin(value, "the API's", "https://api.example.com")

    @field_validator("better_auth_url")
    @classmethod
    def _an_origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return require_https_unless_local(
            _origin(value, "the front end's", "https://app.example.com")
        )

    @model_validator(mode="after")
    def _some_way_to_verify_tokens(self) -> "Settings":
        if (
            self.better_auth_secret is None
            and self.better_auth_url is None
            and self.better_auth_jwks_url is None
        ):
            raise ValueError(
                "BETTER_AUTH_SECRET: must be set (directly, or through"
                " BETTER_AUTH_SECRET_SECRET_ID), unless BETTER_AUTH_URL or BETTER_AUTH_JWKS_URL"
                " names a key set"
            )
        return self


def _describe(issue: Any) -> str:
    """`VARIABLE: what is wrong` (a check across variables names them in its message)."""
    message = str(issue["msg"]).removeprefix("Value error, ")
    if not issue["loc"]:
        return message
    return f"{'.'.join(str(part) for part in issue['loc']).upper()}: {message}"


def load_settings(**overrides: object) -> Settings:
    """Validate the environment, naming every missing or invalid variable on failure."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = "; ".join(_describe(issue) for issue in error.errors())
        raise ConfigurationError(f"Invalid configuration: {problems}") from None


@cache
def get_settings() -> Settings:
    """The settings of this container, validated on first use and kept for its lifetime."""
    return load_settings()


class MigrationSettings(BaseSettings):
    """What `alembic upgrade` needs: the direct (non-pooler) database URL."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    database_url: SecretStr = Field(min_length=1)


def load_migration_settings() -> MigrationSettings:
    try:
        return MigrationSettings()  # type: ignore[call-arg]
    except ValidationError:
        raise ConfigurationError(
            "Invalid configuration: DATABASE_URL: set it to the database's direct URL"
        ) from None
