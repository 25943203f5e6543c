"""Configuration: validated once, failures name the variable; secrets from AWS through moto."""

import boto3
import pytest

from todo_backend.core.db import parse_database_url
from todo_backend.core.settings import ConfigurationError, get_settings, load_settings

SECRET_IN_AWS = "from-secrets-manager-" + "x" * 32
SECRET_IN_ENV = "from-env-" + "x" * 32


def test_missing_variable_is_named(configure):
    # Given an environment without DATABASE_URL
    configure(DATABASE_URL=None)
    # When the settings are loaded
    with pytest.raises(ConfigurationError) as failure:
        get_settings()
    # Then the message names the variable
    assert "DATABASE_URL" in str(failure.value)


def test_invalid_value_is_named(configure):
    configure(DB_POOL_SIZE="zero", CHAT_TURN_BUDGET_SECONDS="60")
    with pytest.raises(ConfigurationError) as failure:
        get_settings()
    assert "DB_POOL_SIZE" in str(failure.value)
    assert "CHAT_TURN_BUDGET_SECONDS" in str(failure.value)


def test_cors_origins_are_split_on_commas(configure):
    configure(CORS_ORIGINS="https://app.example.com, http://localhost:3000,")
    assert get_settings().cors_origins == ["https://app.example.com", "http://localhost:3000"]


def test_blank_optional_values_count_as_unset(configure):
    configure(JWT_ISSUER="", CO_API_KEY=" ", BETTER_AUTH_JWKS_URL="")
    settings = get_settings()
    assert settings.jwt_issuer is None
    assert settings.co_api_key is None
    assert settings.better_auth_jwks_url is None


def test_settings_are_read_once_per_container(configure):
    configure(COHERE_MODEL="command-r7b-12-2024")
    first = get_settings()
    configure_after = get_settings()
    assert first is configure_after


# --- DATABASE_URL as Neon gives it ---------------------------------------------------------


def test_neon_pooled_url_requires_verified_tls():
    target = parse_database_url(
        "postgresql://alex:pa%24s@ep-cool-1234-pooler.eu-central-1.aws.neon.tech/neondb"
        "?sslmode=require&channel_binding=require"
    )
    assert target.url.host == "ep-cool-1234-pooler.eu-central-1.aws.neon.tech"
    assert target.url.username == "alex"
    assert target.url.password == "pa$s"
    assert target.url.database == "neondb"
    context = target.connect_args["ssl_context"]
    assert context.check_hostname is True


def test_postgres_scheme_and_remote_host_default_to_tls():
    target = parse_database_url("postgres://u:p@db.example.com:6543/app")
    assert target.url.port == 6543
    assert "ssl_context" in target.connect_args


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/app",
        "postgresql://postgres@localhost/app",
        "postgresql://u:p@db.example.com/app?sslmode=disable",
    ],
)
def test_local_hosts_and_sslmode_disable_skip_tls(url):
    # False: pg8000 then sends no SSLRequest (None would still negotiate TLS if offered)
    assert parse_database_url(url).connect_args["ssl_context"] is False


def test_unix_socket_directory_in_host_parameter():
    target = parse_database_url("postgresql://postgres:@/todo?host=/tmp/pg")
    assert target.connect_args["unix_sock"] == "/tmp/pg/.s.PGSQL.5432"
    assert target.url.host is None


def test_neon_endpoint_option_is_a_startup_parameter():
    target = parse_database_url("postgresql://u:p@h.neon.tech/db?options=endpoint%3Dep-x")
    assert target.connect_args["startup_params"] == {"options": "endpoint=ep-x"}


@pytest.mark.parametrize(
    "url",
    ["mysql://u:p@h/db", "postgresql://u:p@h/db?sslmode=sometimes", "postgresql:///db"],
)
def test_unusable_urls_are_configuration_errors(url):
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        parse_database_url(url)


# --- secrets from AWS ------------------------------------------------------------------------


def test_secrets_come_from_secrets_manager_and_ssm(aws, configure):
    # Given the three secrets stored in AWS, none of them in the environment
    manager = boto3.client("secretsmanager", region_name="eu-west-1")
    database = manager.create_secret(
        Name="todo/dev/database-url", SecretString="postgresql://x@h/db"
    )
    auth = manager.create_secret(Name="todo/dev/auth", SecretString=SECRET_IN_AWS)
    boto3.client("ssm", region_name="eu-west-1").put_parameter(
        Name="/todo/dev/cohere", Value="co-key-from-ssm", Type="SecureString"
    )
    configure(
        DATABASE_URL=None,
        BETTER_AUTH_SECRET=None,
        CO_API_KEY=None,
        DATABASE_URL_SECRET_ID=database["ARN"],
        BETTER_AUTH_SECRET_SECRET_ID="todo/dev/auth",
        CO_API_KEY_SECRET_ID="ssm:/todo/dev/cohere",
    )
    # When the settings are loaded
    settings = load_settings()
    # Then each secret has the stored value
    assert settings.database_url.get_secret_value() == "postgresql://x@h/db"
    assert settings.better_auth_secret.get_secret_value() == SECRET_IN_AWS
    assert settings.co_api_key is not None
    assert settings.co_api_key.get_secret_value() == "co-key-from-ssm"
    assert auth["Name"] == "todo/dev/auth"


def test_environment_variable_wins_over_the_secret(aws, configure):
    manager = boto3.client("secretsmanager", region_name="eu-west-1")
    manager.create_secret(Name="todo/dev/auth", SecretString="from-aws-" + "x" * 32)
    configure(
        BETTER_AUTH_SECRET=SECRET_IN_ENV,
        BETTER_AUTH_SECRET_SECRET_ID="todo/dev/auth",
    )
    assert load_settings().better_auth_secret.get_secret_value() == SECRET_IN_ENV


def test_missing_secret_fails_the_cold_start_naming_it(aws, configure):
    configure(BETTER_AUTH_SECRET=None, BETTER_AUTH_SECRET_SECRET_ID="todo/dev/does-not-exist")
    with pytest.raises(ConfigurationError) as failure:
        get_settings()
    assert "BETTER_AUTH_SECRET" in str(failure.value)
    assert "todo/dev/does-not-exist" in str(failure.value)
