"""Fetches secrets from AWS through Powertools Parameters (cached across warm invocations)."""

from todo_backend.settings import ConfigurationError

SECRET_MAX_AGE_SECONDS = 300


def fetch_secret(variable: str, location: str) -> str:
    """The secret stored at `location` (Secrets Manager id/ARN, or `ssm:/name` / an SSM ARN)."""
    # Imported here: boto3 costs cold-start time that containers without AWS secrets never pay.
    from aws_lambda_powertools.utilities import parameters

    try:
        if location.startswith("ssm:"):
            value = parameters.get_parameter(
                location.removeprefix("ssm:"), decrypt=True, max_age=SECRET_MAX_AGE_SECONDS
            )
        elif location.startswith("arn:aws:ssm:"):
            name = location.split(":parameter", 1)[1]
            value = parameters.get_parameter(name, decrypt=True, max_age=SECRET_MAX_AGE_SECONDS)
        else:
            value = parameters.get_secret(location, max_age=SECRET_MAX_AGE_SECONDS)
    except parameters.exceptions.GetParameterError as error:
        raise ConfigurationError(
            f"Invalid configuration: {variable}: secret {location!r} could not be read ({error})"
        ) from None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"Invalid configuration: {variable}: secret {location!r} is empty")
    return value.strip()
