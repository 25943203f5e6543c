"""What clients send and receive for user settings."""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from todo_backend.users.zones import check_zone_name

ZoneName = Annotated[
    str,
    AfterValidator(check_zone_name),
    Field(description="An IANA time zone name, e.g. Europe/Berlin (default UTC)"),
]


class UserSettings(BaseModel):
    timezone: str = Field(examples=["Europe/Berlin"])


class SettingsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: ZoneName
