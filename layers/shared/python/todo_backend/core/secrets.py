"""Fetches secrets from AWS through Powertools Parameters.

They are read once per container, at cold start, with the rest of the settings (which stay cached
for the container's life): after rotating a secret, publish a new function version.
"""

from todo_backend.core.configuration import ConfigurationError


def fetch_secret(variable: str, location: str) -> str:
    """The secret stored at `location` (Secrets Manager id/ARN, or `ssm:/name` / an SSM ARN)."""
    # Imported here: boto3 costs cold-start time that containers without AWS secrets never pay.
    from aws_lambda_powertools.utilities import parameters

    try:
        if location.startswith("ssm:"):
            value = parameters.get_parameter(location.removeprefix("ssm:"), decrypt=True)
        elif location.startswith("arn:aws:ssm:"):
            name = location.split(":parameter", 1)[1]
            value = parameters.get_parameter(name, decrypt=True)
        else:
            value = parameters.get_secret(location)
    except parameters.exceptions.GetParameterError as error:
        raise ConfigurationError(
            f"Invalid configuration: {variable}: secret {location!r} could not be read ({error})"
        ) from None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"Invalid configuration: {variable}: secret {location!r} is empty")
    return value.strip()
