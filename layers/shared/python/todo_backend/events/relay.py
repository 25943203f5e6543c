"""The outbox relay: task events recorded in `task_events` are published to EventBridge.

Every task change writes its event in the statement that makes the change; this module publishes
them afterwards, at least once and never dropping one:

1. claim: one statement leases up to a batch of unrelayed events (`FOR UPDATE SKIP LOCKED`, so an
   overlapping run takes others) by setting `claimed_until`;
2. publish: `PutEvents`, ten entries per call (EventBridge's limit);
3. settle: one statement per call marks the entries that EventBridge accepted as relayed and
   releases the others with their error code, to be retried by the next run.

A run that crashes between 2 and 3 leaves its events leased: when the lease ends they are
published again, with the same `event_id` (consumers de-duplicate on it). boto3 is imported only
here, on first use, so no HTTP function pays for it at cold start.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Text, bindparam, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import RowMapping

from todo_backend.core.db import Database
from todo_backend.core.observability import logger
from todo_backend.tasks.service import task_events

SOURCE = "todo.tasks"
PUT_EVENTS_MAX = 10  # entries per PutEvents call
CLAIM_BATCH = 100
# How long a run holds the events it claimed before another run may publish them again.
LEASE_SECONDS = 120
# Claims per run at most (each up to CLAIM_BATCH events): a backlog drains over several runs.
MAX_CLAIMS_PER_RUN = 20
ERROR_MAX = 200


@dataclass
class RelayReport:
    published: int = 0
    failed: int = 0


@cache
def events_client() -> Any:
    """One EventBridge client per container (region and credentials from the Lambda runtime)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 3}
    )
    return boto3.client("events", config=config)


def claim_statement(limit: int = CLAIM_BATCH, lease_seconds: float = LEASE_SECONDS) -> Any:
    """Lease up to `limit` unrelayed events that no other run holds, oldest first."""
    pending = (
        select(task_events.c.id)
        .where(
            task_events.c.relayed_at.is_(None),
            or_(task_events.c.claimed_until.is_(None), task_events.c.claimed_until < func.now()),
        )
        .order_by(task_events.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("pending")
    )
    lease = func.make_interval(0, 0, 0, 0, 0, 0, bindparam("lease_seconds", lease_seconds))
    return (
        update(task_events)
        .where(task_events.c.id.in_(select(pending.c.id)))
        .values(claimed_until=func.now() + lease, attempts=task_events.c.attempts + 1)
        .returning(
            task_events.c.id,
            task_events.c.event_id,
            task_events.c.user_id,
            task_events.c.task_id,
            task_events.c.detail_type,
            task_events.c.occurred_at,
            task_events.c.task,
        )
    )


SETTLE = text(
    """
    UPDATE task_events AS e
    SET relayed_at = CASE WHEN outcome.error IS NULL THEN now() END,
        claimed_until = NULL,
        last_error = outcome.error
    FROM unnest(:ids, :errors) AS outcome(id, error)
    WHERE e.id = outcome.id AND e.relayed_at IS NULL
    """
).bindparams(
    bindparam("ids", type_=ARRAY(BigInteger)),
    bindparam("errors", type_=ARRAY(Text)),
)


def _settle(db: Database, outcomes: dict[int, str | None]) -> None:
    """Relayed (error None) or released for the next run (with its error), in one statement."""
    if outcomes:
        db.run(
            lambda connection: connection.execute(
                SETTLE,
                {"ids": list(outcomes), "errors": [e and e[:ERROR_MAX] for e in outcomes.values()]},
            )
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def entry(event: RowMapping, bus_name: str) -> dict[str, Any]:
    """The PutEvents entry of an outbox row: detail {event_id, user_id, task_id, occurred_at,
    task}, the task as the API returned it."""
    detail = {
        "event_id": str(event["event_id"]),
        "user_id": event["user_id"],
        "task_id": event["task_id"],
        "occurred_at": _iso(event["occurred_at"]),
        "task": event["task"],
    }
    return {
        "Source": SOURCE,
        "DetailType": event["detail_type"],
        "Detail": json.dumps(detail, separators=(",", ":"), ensure_ascii=False),
        "EventBusName": bus_name,
        "Time": event["occurred_at"],
    }


def _publish(client: Any, chunk: Sequence[RowMapping], bus_name: str) -> dict[int, str | None]:
    """PutEvents for up to ten events: each event's error code, None when it was accepted."""
    response = client.put_events(Entries=[entry(event, bus_name) for event in chunk])
    results = response.get("Entries", [])
    outcomes: dict[int, str | None] = {}
    for index, event in enumerate(chunk):
        result = results[index] if index < len(results) else {}
        outcomes[event["id"]] = result.get("ErrorCode") or (
            None if result.get("EventId") else "NoEventId"
        )
    return outcomes


def relay_pending_events(
    db: Database,
    bus_name: str,
    client: Any | None = None,
    *,
    batch: int = CLAIM_BATCH,
    lease_seconds: float = LEASE_SECONDS,
    max_claims: int = MAX_CLAIMS_PER_RUN,
) -> RelayReport:
    """Publish the outbox's unrelayed events to `bus_name`; what was published and what failed
    (failed events stay pending for the next run)."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = client or events_client()
    report = RelayReport()
    claim = claim_statement(batch, lease_seconds)
    for _ in range(max_claims):
        claimed = sorted(db.fetch_all(claim), key=lambda event: event["id"])
        for start in range(0, len(claimed), PUT_EVENTS_MAX):
            chunk = claimed[start : start + PUT_EVENTS_MAX]
            try:
                outcomes = _publish(client, chunk, bus_name)
            except (BotoCoreError, ClientError) as error:
                # The whole call failed (throttled, unreachable): release everything claimed and
                # not yet published, for the next run.
                rest = claimed[start:]
                logger.warning(
                    "PutEvents failed", extra={"error": type(error).__name__, "events": len(rest)}
                )
                _settle(db, {event["id"]: type(error).__name__ for event in rest})
                report.failed += len(rest)
                return report
            _settle(db, outcomes)
            failed = sum(error is not None for error in outcomes.values())
            report.published += len(outcomes) - failed
            report.failed += failed
            if failed:
                logger.warning(
                    "PutEvents rejected entries",
                    extra={"failed": failed, "codes": sorted({str(e) for e in outcomes.values()})},
                )
        if len(claimed) < batch:
            break
    return report


def unrelayed_count(db: Database) -> int:
    row = db.fetch_one(
        select(func.count().label("n")).where(task_events.c.relayed_at.is_(None)), idempotent=True
    )
    return int(row["n"]) if row is not None else 0


class Backlog(NamedTuple):
    """What the relay has not published yet: how many events, and how long the oldest has waited
    (0 when none). The reminders function emits both as metrics after each run; an alarm on the
    age catches a relay that has stopped, however small the backlog."""

    pending: int
    oldest_age_seconds: float


def relay_backlog(db: Database) -> Backlog:
    """The backlog in one statement (the partial index on unrelayed events bounds it)."""
    age = func.extract("epoch", func.now() - func.min(task_events.c.occurred_at))
    row = db.fetch_one(
        select(
            func.count().label("pending"), func.coalesce(age, 0).label("oldest_age_seconds")
        ).where(task_events.c.relayed_at.is_(None)),
        idempotent=True,
    )
    if row is None:
        return Backlog(0, 0.0)
    return Backlog(int(row["pending"]), max(0.0, float(row["oldest_age_seconds"])))
