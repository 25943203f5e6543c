"""Lambda function `reminders`, run every minute by an EventBridge schedule (not HTTP).

Claims the reminders that are due (each exactly once; their `Task Reminder Due` events go to the
outbox in the same statement), relays the outbox's pending task events to the stack's EventBridge
bus, then deletes what is past its retention (settled events, old chat records). The relay stops
claiming with RETENTION_RESERVE_SECONDS of the run left, and retention with FINISH_RESERVE_SECONDS
left, so a run ends well inside the function's timeout. The logic is in the shared layer.
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
from todo_backend.retention.prune import Retention, prune
from todo_backend.tasks.reminders import claim_all_due_reminders

RETENTION_RESERVE_SECONDS = 15.0
FINISH_RESERVE_SECONDS = 5.0


def _seconds_left(context: Any) -> float:
    return context.get_remaining_time_in_millis() / 1000


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    db = get_database()
    settings = get_settings()
    claimed = claim_all_due_reminders(db)
    bus_name = settings.event_bus_name
    outcome: dict[str, Any] = {"reminders_claimed": claimed}
    if bus_name:
        report = relay_pending_events(
            db,
            bus_name,
            max_attempts=settings.event_max_attempts,
            time_budget_seconds=_seconds_left(context) - RETENTION_RESERVE_SECONDS,
        )
        outcome.update(
            events_published=report.published,
            events_failed=report.failed,
            events_parked=report.parked,
        )
        metrics.add_metric(name="TaskEventsPublished", unit="Count", value=report.published)
        metrics.add_metric(name="TaskEventsFailed", unit="Count", value=report.failed)
        metrics.add_metric(name="EventsParked", unit="Count", value=report.parked)
        # What is still waiting after the run: template.yaml alarms on the oldest event's age.
        backlog = relay_backlog(db)
        outcome.update(
            events_pending=backlog.pending, oldest_pending_age_seconds=backlog.oldest_age_seconds
        )
        metrics.add_metric(name="TaskEventsPending", unit="Count", value=backlog.pending)
        metrics.add_metric(
            name="OldestPendingEventAge", unit="Seconds", value=backlog.oldest_age_seconds
        )
    deleted = prune(
        db,
        Retention(settings.event_retention_days, settings.chat_record_retention_days),
        time_budget_seconds=_seconds_left(context) - FINISH_RESERVE_SECONDS,
    )
    outcome["deleted"] = deleted
    metrics.add_metric(name="RemindersClaimed", unit="Count", value=claimed)
    metrics.add_metric(name="RecordsDeleted", unit="Count", value=sum(deleted.values()))
    logger.info("scheduled run", extra=outcome)
    return outcome


# Not HTTP: no warm-up requests. boto3 is imported before the snapshot (the relay's client is
# built after the restore); the database pool and any EventBridge client are closed.
register_snapstart(None, None, prepare=[partial(import_module, "boto3")])
