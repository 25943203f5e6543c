"""Typed configuration, read from the environment once per cold start.

This is the only module that reads the environment. In AWS the secrets (`DATABASE_URL`,
`BETTER_AUTH_SECRET`, `CO_API_KEY`) are not in the environment: `<NAME>_SECRET_ID` says where they
live (a Secrets Manager name or ARN, or an SSM parameter as `ssm:/path` or its ARN) and
`todo_backend.core.secrets` fetches them. A plain environment variable wins, for local use.
"""

import os
from functools import cache
from typing import Annotated, Any

from pydantic import Field, HttpUrl, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

DEFAULT_COHERE_MODEL = "command-a-03-2025"


class ConfigurationError(RuntimeError):
    """The environment is missing a variable or holds an invalid value."""


SECRET_VARIABLES = ("DATABASE_URL", "BETTER_AUTH_SECRET", "CO_API_KEY")


class AwsSecretsSource(PydanticBaseSettingsSource):
    """Fetches each secret missing from the environment from where `<NAME>_SECRET_ID` points."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in SECRET_VARIABLES:
            location = os.environ.get(f"{name}_SECRET_ID", "").strip()
            if os.environ.get(name) or not location:
                continue
            from todo_backend.core.secrets import fetch_secret

            values[name.lower()] = fetch_secret(name, location)
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    database_url: SecretStr = Field(min_length=1)
    better_auth_secret: SecretStr = Field(min_length=1)
    better_auth_jwks_url: HttpUrl | None = None
    # The front end's origin, where Better Auth runs: the OAuth authorization server that MCP
    # clients are sent to (GET /.well-known/oauth-protected-resource).
    better_auth_url: HttpUrl | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None

    co_api_key: SecretStr | None = None
    cohere_model: str = Field(default=DEFAULT_COHERE_MODEL, min_length=1)
    co_api_url: HttpUrl | None = None
    # API Gateway gives up after 29 s; every Cohere call of a turn shares this budget.
    chat_turn_budget_seconds: float = Field(default=24.0, gt=0, le=28)
    chat_max_steps: int = Field(default=6, ge=1, le=20)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # One pooled connection per warm Lambda container; the local server may ask for more.
    db_pool_size: int = Field(default=1, ge=1, le=20)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, AwsSecretsSource(settings_cls), env_settings)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator(
        "jwt_issuer",
        "jwt_audience",
        "better_auth_jwks_url",
        "better_auth_url",
        "co_api_url",
        "co_api_key",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


def load_settings(**overrides: object) -> Settings:
    """Validate the environment, naming every missing or invalid variable on failure."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']).upper()}: {issue['msg']}"
            for issue in error.errors()
        )
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
