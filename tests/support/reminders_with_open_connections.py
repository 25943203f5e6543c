"""The reminders function as if its initialisation had used the database and the EventBridge
client (as code run at init may): both hold an open socket when the snapshot hooks run."""

from sqlalchemy import text

from functions.reminders.app import handler
from todo_backend.core.db import get_database
from todo_backend.events.relay import events_client

get_database().run(lambda connection: connection.execute(text("SELECT 1")))
events_client().list_event_buses()

__all__ = ["handler"]
