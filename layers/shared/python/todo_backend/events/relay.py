"""The outbox relay: task events recorded in `task_events` are published to EventBridge.

Every task change writes its event in the statement that makes the change; this module publishes
them afterwards, at least once and never dropping one. A run repeats, until the backlog is empty
or its time is up:

1. claim: one statement leases (`claimed_until`) up to a batch of events, oldest first, taking
   only each task's earliest pending (neither relayed nor parked) event, and only events due
   (`next_attempt_at`) when the run started; locked rows are skipped, so overlapping runs take
   others;
2. publish: `PutEvents`, ten entries per call (EventBridge's limit), the calls of a claim sent
   concurrently: a claim holds at most one event per task, so no two events of a task are ever in
   flight together;
3. settle: one statement for the whole claim marks the accepted entries relayed; a rejected entry
   is retried after a growing delay (`next_attempt_at`), or parked (`failed_at`) once it has been
   tried `max_attempts` times.

So a task's events are published in the order they happened: a later event waits while an earlier
one waits for its retry (a parked one no longer holds the task back), and no task waits for
another's. A run tries each event at most once. A whole call failing (throttled, unreachable) ends
the run: its entries count as tried, the entries not sent yet are released untried.

A run that crashes between 2 and 3 leaves its events leased: when the lease ends they are
published again, with the same `event_id` (consumers de-duplicate on it; `sequence` orders a
task's events). boto3 is imported only here, on first use, so no HTTP function pays for it at cold
start.

The claim and the settle name their rows by primary key (`e.id = ANY(...)`), so their plans are
index scans whatever the table's statistics say (a join against the whole pending set was chosen
when they were stale).
"""

import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from threading import Event, Lock
from typing import Any, NamedTuple

from sqlalchemy import func, select, text
from sqlalchemy.engine import RowMapping

from todo_backend.core.db import Database
from todo_backend.core.observability import logger
from todo_backend.tasks.service import task_events

SOURCE = "todo.tasks"
# Events about a user, not one of their tasks (`task_id` null): source and detail of their own.
USER_SOURCE = "todo.users"
USER_DETAIL = ("event_id", "user_id", "occurred_at")
PUT_EVENTS_MAX = 10  # entries per PutEvents call
CLAIM_BATCH = 500
# How long a run holds the events it claimed before another run may publish them again (longer
# than the function's timeout: a live run never loses its lease).
LEASE_SECONDS = 120
# Claims per run at most (each up to CLAIM_BATCH events); the time budget usually ends it first.
MAX_CLAIMS_PER_RUN = 200
# PutEvents calls in flight at once (botocore's pool keeps 10 connections).
PUT_WORKERS = 4
DEFAULT_MAX_ATTEMPTS = 10
# Delay after the n-th rejected try: RETRY_BASE_SECONDS * 2^(n-1), at most RETRY_MAX_SECONDS (with
# ten tries, about three hours from the first try to parking).
RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 3600.0
ERROR_MAX = 200


@dataclass
class RelayReport:
    published: int = 0
    # Tries EventBridge rejected in this run (each retried later, or parked).
    failed: int = 0
    parked: int = 0
    put_calls: int = 0
    claims: int = 0


@cache
def events_client() -> Any:
    """One EventBridge client per container (region and credentials from the Lambda runtime)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 3}
    )
    return boto3.client("events", config=config)


# The head-of-line test is a scalar subquery (always run per candidate row: written as NOT EXISTS,
# it may become an anti-join over every pending event), and its predicate is spelled as
# ix_task_events_task_pending's, the only index it matches: with stale statistics the planner
# used ix_task_events_pending instead, scanning every pending event before the task's.
CLAIM = text(
    """
    WITH claimable AS (
        SELECT e.id
        FROM task_events AS e
        WHERE e.relayed_at IS NULL AND e.failed_at IS NULL
          AND (e.claimed_until IS NULL OR e.claimed_until < now())
          AND (e.next_attempt_at IS NULL
               OR e.next_attempt_at <= coalesce(CAST(:run_started AS timestamptz), now()))
          AND (e.task_id IS NULL  -- a user event (User Data Deleted): no task order to keep
               OR e.id = (SELECT min(h.id) FROM task_events AS h
                          WHERE h.task_id = e.task_id
                            AND COALESCE(h.relayed_at, h.failed_at) IS NULL))
        ORDER BY e.id
        LIMIT :limit
        FOR UPDATE OF e SKIP LOCKED
    )
    UPDATE task_events AS e
    SET claimed_until = now() + make_interval(secs => CAST(:lease_seconds AS double precision)),
        attempts = e.attempts + 1
    WHERE e.id = ANY(ARRAY(SELECT id FROM claimable))
    RETURNING e.id, e.event_id, e.user_id, e.task_id, e.detail_type, e.occurred_at, e.task,
              e.sequence, e.attempts, now() AS claimed_at
    """
)

# `tried` 0: released untried (the run stopped before sending it), the claim's try undone.
SETTLE = text(
    """
    UPDATE task_events AS e
    SET relayed_at = CASE WHEN o.tried = 1 AND o.error IS NULL THEN now() END,
        failed_at = CASE WHEN o.tried = 1 AND o.error IS NOT NULL
                          AND e.attempts >= :max_attempts THEN now() END,
        next_attempt_at = CASE
            WHEN o.tried = 1 AND o.error IS NOT NULL AND e.attempts < :max_attempts
            THEN now() + make_interval(secs => least(
                CAST(:retry_base AS double precision) * power(2, e.attempts - 1),
                CAST(:retry_max AS double precision)))
            WHEN o.tried = 1 THEN NULL
            ELSE e.next_attempt_at END,
        attempts = CASE WHEN o.tried = 1 THEN e.attempts ELSE e.attempts - 1 END,
        last_error = CASE WHEN o.tried = 1 THEN o.error ELSE e.last_error END,
        claimed_until = NULL
    FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[]), CAST(:tried AS smallint[]))
         AS o(id, error, tried)
    WHERE e.id = ANY(CAST(:ids AS bigint[])) AND e.id = o.id AND e.relayed_at IS NULL
    RETURNING e.id, e.failed_at IS NOT NULL AS parked
    """
)


class Outcome(NamedTuple):
    error: str | None = None
    tried: bool = True


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def entry(event: RowMapping, bus_name: str) -> dict[str, Any]:
    """The PutEvents entry of an outbox row: detail {event_id, user_id, task_id, sequence,
    occurred_at, task}, the task as the API returned it; a user event's (`User Data Deleted`)
    detail is {event_id, user_id, occurred_at}."""
    detail = {
        "event_id": str(event["event_id"]),
        "user_id": event["user_id"],
        "task_id": event["task_id"],
        "sequence": event["sequence"],
        "occurred_at": _iso(event["occurred_at"]),
        "task": event["task"],
    }
    if event["task_id"] is None:
        detail = {key: detail[key] for key in USER_DETAIL}
    return {
        "Source": SOURCE if event["task_id"] is not None else USER_SOURCE,
        "DetailType": event["detail_type"],
        "Detail": json.dumps(detail, separators=(",", ":"), ensure_ascii=False),
        "EventBusName": bus_name,
        "Time": event["occurred_at"],
    }


def _publish(client: Any, chunk: Sequence[RowMapping], bus_name: str) -> dict[int, Outcome]:
    """PutEvents for up to ten events: each event's outcome (its error code when rejected)."""
    response = client.put_events(Entries=[entry(event, bus_name) for event in chunk])
    results = response.get("Entries", [])
    outcomes: dict[int, Outcome] = {}
    for index, event in enumerate(chunk):
        result = results[index] if index < len(results) else {}
        error = result.get("ErrorCode") or (None if result.get("EventId") else "NoEventId")
        outcomes[event["id"]] = Outcome(error)
    return outcomes


class _Publisher:
    """Sends a claim's chunks concurrently; after a whole call fails, sends nothing more."""

    def __init__(self, client: Any, bus_name: str, pool: ThreadPoolExecutor) -> None:
        self.client = client
        self.bus_name = bus_name
        self.pool = pool
        self.stopped = Event()
        self.calls = 0
        self._counting = Lock()

    def _send(self, chunk: Sequence[RowMapping]) -> dict[int, Outcome]:
        from botocore.exceptions import BotoCoreError, ClientError

        if self.stopped.is_set():
            return {event["id"]: Outcome(tried=False) for event in chunk}
        with self._counting:
            self.calls += 1
        try:
            return _publish(self.client, chunk, self.bus_name)
        except (BotoCoreError, ClientError) as error:
            # Throttled or unreachable (after botocore's own retries): stop adding load.
            self.stopped.set()
            code = (
                error.response.get("Error", {}).get("Code")
                if isinstance(error, ClientError)
                else None
            ) or type(error).__name__
            logger.warning("PutEvents failed", extra={"error": code, "events": len(chunk)})
            return {event["id"]: Outcome(code) for event in chunk}

    def publish(self, claimed: Sequence[RowMapping]) -> dict[int, Outcome]:
        chunks = [
            claimed[start : start + PUT_EVENTS_MAX]
            for start in range(0, len(claimed), PUT_EVENTS_MAX)
        ]
        outcomes: dict[int, Outcome] = {}
        for result in self.pool.map(self._send, chunks):
            outcomes.update(result)
        return outcomes


def _settle(
    db: Database,
    outcomes: dict[int, Outcome],
    *,
    max_attempts: int,
    retry_base_seconds: float,
    retry_max_seconds: float,
) -> int:
    """Record a claim's outcomes in one statement; how many events it parked."""
    if not outcomes:
        return 0
    parameters = {
        "ids": list(outcomes),
        "errors": [o.error and o.error[:ERROR_MAX] for o in outcomes.values()],
        "tried": [int(o.tried) for o in outcomes.values()],
        "max_attempts": max_attempts,
        "retry_base": retry_base_seconds,
        "retry_max": retry_max_seconds,
    }
    rows = db.run(lambda connection: connection.execute(SETTLE, parameters).all())
    return sum(1 for row in rows if row.parked)


def relay_pending_events(
    db: Database,
    bus_name: str,
    client: Any | None = None,
    *,
    batch: int = CLAIM_BATCH,
    lease_seconds: float = LEASE_SECONDS,
    max_claims: int = MAX_CLAIMS_PER_RUN,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_base_seconds: float = RETRY_BASE_SECONDS,
    retry_max_seconds: float = RETRY_MAX_SECONDS,
    time_budget_seconds: float | None = None,
) -> RelayReport:
    """One run: publish the outbox's pending events to `bus_name`, claim after claim, until none
    is left, `max_claims` were made, or `time_budget_seconds` have passed (checked before each
    claim but the first). What was published, rejected and parked."""
    client = client or events_client()
    report = RelayReport()
    deadline = None if time_budget_seconds is None else time.monotonic() + time_budget_seconds
    run_started: datetime | None = None
    with ThreadPoolExecutor(PUT_WORKERS, thread_name_prefix="put-events") as pool:
        publisher = _Publisher(client, bus_name, pool)
        for _ in range(max_claims):
            # The first claim is always made: every run makes progress, however short.
            if report.claims and deadline is not None and time.monotonic() >= deadline:
                break
            claimed = sorted(
                db.fetch_all(
                    CLAIM.bindparams(
                        run_started=run_started, limit=batch, lease_seconds=lease_seconds
                    )
                ),
                key=lambda event: event["id"],
            )
            if not claimed:
                break
            report.claims += 1
            run_started = run_started or claimed[0]["claimed_at"]
            outcomes = publisher.publish(claimed)
            report.parked += _settle(
                db,
                outcomes,
                max_attempts=max_attempts,
                retry_base_seconds=retry_base_seconds,
                retry_max_seconds=retry_max_seconds,
            )
            tried = [o for o in outcomes.values() if o.tried]
            rejected = [o.error for o in tried if o.error is not None]
            report.published += len(tried) - len(rejected)
            report.failed += len(rejected)
            if rejected:
                logger.warning(
                    "PutEvents rejected entries",
                    extra={"failed": len(rejected), "codes": sorted(set(map(str, rejected)))},
                )
            # A short claim does not end the run: the events after those just relayed are their
            # tasks' heads now. The claim that finds nothing does.
            if publisher.stopped.is_set():
                break
        report.put_calls = publisher.calls
    return report


def unrelayed_count(db: Database) -> int:
    """Events still to publish (neither relayed nor parked)."""
    row = db.fetch_one(
        select(func.count().label("n")).where(
            task_events.c.relayed_at.is_(None), task_events.c.failed_at.is_(None)
        ),
        idempotent=True,
    )
    return int(row["n"]) if row is not None else 0


class Backlog(NamedTuple):
    """What the relay has not published yet: how many events, and how long the oldest has waited
    (0 when none). The reminders function emits both as metrics after each run; an alarm on the
    age catches a relay that has stopped, however small the backlog."""

    pending: int
    oldest_age_seconds: float


def relay_backlog(db: Database) -> Backlog:
    """The backlog (neither relayed nor parked: parked events have an alarm of their own) in one
    statement, which the partial index on pending events bounds."""
    age = func.extract("epoch", func.now() - func.min(task_events.c.occurred_at))
    row = db.fetch_one(
        select(
            func.count().label("pending"), func.coalesce(age, 0).label("oldest_age_seconds")
        ).where(task_events.c.relayed_at.is_(None), task_events.c.failed_at.is_(None)),
        idempotent=True,
    )
    if row is None:
        return Backlog(0, 0.0)
    return Backlog(int(row["pending"]), max(0.0, float(row["oldest_age_seconds"])))
