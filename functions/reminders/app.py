"""Lambda function `reminders`, run every minute by an EventBridge schedule (not HTTP).

Claims the reminders that are due (each exactly once; their `Task Reminder Due` events go to the
outbox in the same statement), then relays the outbox's pending task events to the stack's
EventBridge bus. The logic is in the shared layer.
"""

import gc

gc.disable()  # while the function initialises; register_snapstart (last) enables it

from functools import partial
from importlib import import_module
from typing import Any

from todo_backend.core.db import get_database
from todo_backend.core.observability import logger, metrics
from todo_backend.core.settings import get_settings
from todo_backend.core.snapstart import register as register_snapstart
from todo_backend.events.relay import relay_backlog, relay_pending_events
from todo_backend.tasks.reminders import claim_all_due_reminders


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    db = get_database()
    claimed = claim_all_due_reminders(db)
    bus_name = get_settings().event_bus_name
    outcome: dict[str, Any] = {"reminders_claimed": claimed}
    if bus_name:
        report = relay_pending_events(db, bus_name)
        outcome.update(events_published=report.published, events_failed=report.failed)
        metrics.add_metric(name="TaskEventsPublished", unit="Count", value=report.published)
        metrics.add_metric(name="TaskEventsFailed", unit="Count", value=report.failed)
        # What is still waiting after the run: template.yaml alarms on the oldest event's age.
        backlog = relay_backlog(db)
        outcome.update(
            events_pending=backlog.pending, oldest_pending_age_seconds=backlog.oldest_age_seconds
        )
        metrics.add_metric(name="TaskEventsPending", unit="Count", value=backlog.pending)
        metrics.add_metric(
            name="OldestPendingEventAge", unit="Seconds", value=backlog.oldest_age_seconds
        )
    metrics.add_metric(name="RemindersClaimed", unit="Count", value=claimed)
    logger.info("scheduled run", extra=outcome)
    return outcome


# Not HTTP: no warm-up requests. boto3 is imported before the snapshot (the relay's client is
# built after the restore); the database pool and any EventBridge client are closed.
register_snapstart(None, None, prepare=[partial(import_module, "boto3")])
