"""A moto EventBridge bus whose rule sends every `todo.tasks` event to an SQS queue, and a
recorder of the PutEvents calls the AWS SDK makes, which can also have EventBridge reject chosen
entries. Both work at the boto3 level (moto, and botocore's own event hooks), not on our code."""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

BUS = "todo-test-tasks"
REGION = "eu-west-1"


class Bus:
    def __init__(self, events: Any, sqs: Any, queue_url: str) -> None:
        self.events = events
        self.sqs = sqs
        self.queue_url = queue_url

    def received(self) -> list[dict[str, Any]]:
        """Every message the queue holds now (each deleted once read)."""
        messages: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not batch:
                return messages
            for message in batch:
                messages.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )


@contextmanager
def moto_bus() -> Iterator[Bus]:
    """The bus and its queue, in moto (AWS credentials must be fake ones in the environment)."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        events = boto3.client("events", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        events.create_event_bus(Name=BUS)
        queue_url = sqs.create_queue(QueueName="task-events")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events.put_rule(
            Name="all-task-events",
            EventBusName=BUS,
            EventPattern=json.dumps({"source": ["todo.tasks"]}),
        )
        events.put_targets(
            Rule="all-task-events", EventBusName=BUS, Targets=[{"Id": "queue", "Arn": queue_arn}]
        )
        yield Bus(events, sqs, queue_url)


class PutEventsRecorder:
    """Records every PutEvents call (each entry's decoded detail, and whether EventBridge was
    made to reject it), in the order the calls were made. `reject(detail)` chooses entries to be
    rejected: their Detail is replaced by invalid JSON, which EventBridge answers with
    `MalformedDetail` for that entry only."""

    def __init__(self, client: Any, reject: Callable[[dict[str, Any]], bool] | None = None):
        self.calls: list[list[dict[str, Any]]] = []
        self.reject = reject or (lambda detail: False)
        self._lock = threading.Lock()
        self._client = client
        client.meta.events.register("provide-client-params.events.PutEvents", self._hook)

    def _hook(self, params: dict[str, Any], **_: Any) -> None:
        call = []
        for entry in params["Entries"]:
            detail = json.loads(entry["Detail"])
            rejected = self.reject(detail)
            if rejected:
                entry["Detail"] = "{not json"
            call.append({**detail, "rejected": rejected})
        with self._lock:
            self.calls.append(call)

    def close(self) -> None:
        self._client.meta.events.unregister("provide-client-params.events.PutEvents", self._hook)

    def accepted(self) -> list[dict[str, Any]]:
        """The details EventBridge accepted, in call order."""
        return [detail for call in self.calls for detail in call if not detail["rejected"]]
