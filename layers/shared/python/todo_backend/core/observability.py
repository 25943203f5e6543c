"""Structured logs and EMF metrics (Powertools), and the Lambda entry point that carries them.

Logs are JSON with the API Gateway request id as correlation id and the cold-start flag. They
never hold a token, a secret or message text: only methods, paths, statuses and timings.
Service name and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE.
"""

import os
import time
import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider import cold_start

from todo_backend.core.limits import oversized_body_response

# A request that adds no metric is normal here (reads): no flush, and no Powertools warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger()
# The stack sets one namespace per stage (template.yaml), which its alarms watch; Powertools would
# read the variable itself, but without it (tests, `make dev`) a flush would fail.
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "TodoBackend")

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def count(name: str, **dimensions: str) -> None:
    """Add one to a counter metric; with dimensions it is emitted on its own EMF line."""
    if not dimensions:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        return
    from aws_lambda_powertools.metrics import single_metric

    with single_metric(
        name=name, unit=MetricUnit.Count, value=1, namespace=metrics.namespace
    ) as metric:
        for key, value in dimensions.items():
            metric.add_dimension(name=key, value=value)


def milliseconds(name: str, value: float) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=value)


def instrumented(handler: LambdaHandler) -> LambdaHandler:
    """Wrap a Mangum handler: correlation id, cold-start metric, one access log line; a body over
    the size limit is answered 413 here, before Mangum decodes it.

    What Powertools' `inject_lambda_context` and `log_metrics(capture_cold_start_metric=True)`
    do, with the same log keys and metrics, for less CPU per request: the context keys that never
    change in a container are set once, the correlation id is read without JMESPath, and
    metrics are flushed only when a request added some. The cold-start flag is Powertools' own
    (`cold_start.is_cold_start`), so it stays right under provisioned concurrency and SnapStart:
    the first invocation of a restored snapshot is a cold start (warming happens before it,
    through the inner handler; see `todo_backend.core.snapstart`).
    """
    container_keys_set = False

    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        nonlocal container_keys_set
        started = time.perf_counter()
        is_cold = cold_start.is_cold_start
        request_context = event.get("requestContext") or {}
        if not container_keys_set:
            logger.append_keys(
                function_name=context.function_name,
                function_memory_size=context.memory_limit_in_mb,
                function_arn=context.invoked_function_arn,
            )
            container_keys_set = True
        logger.append_keys(
            cold_start=is_cold,
            function_request_id=context.aws_request_id,
            correlation_id=request_context.get("requestId"),
        )
        try:
            response = oversized_body_response(event) or handler(event, context)
            if is_cold:
                cold_start.is_cold_start = False
                metrics.provider.add_cold_start_metric(context=context)
        finally:
            if metrics.metric_set:
                metrics.flush_metrics()
        http = request_context.get("http") or {}
        logger.info(
            "request",
            extra={
                "method": http.get("method"),
                "path": event.get("rawPath"),
                "status": response.get("statusCode"),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return response

    return lambda_handler
