"""What clients send and receive for user settings."""

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from todo_backend.users.zones import DEFAULT_ZONE, check_zone_name, known_zones


def _every_zone(schema: dict[str, Any]) -> None:
    """The document lists the accepted names (built only with the document, not per request)."""
    schema["enum"] = sorted(known_zones() | {DEFAULT_ZONE})


ZoneName = Annotated[
    str,
    AfterValidator(check_zone_name),
    Field(
        description="An IANA time zone name, e.g. Europe/Berlin (default UTC)",
        json_schema_extra=_every_zone,
    ),
]


class UserSettings(BaseModel):
    timezone: str = Field(examples=["Europe/Berlin"])


class SettingsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: ZoneName
