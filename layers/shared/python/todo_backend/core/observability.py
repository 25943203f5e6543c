"""Structured logs and EMF metrics (Powertools), and the Lambda entry point that carries them.

Logs are JSON with the API Gateway request id as correlation id and the cold-start flag. They
never hold a token, a secret or message text: only methods, paths, statuses and timings.
Service name and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE.
"""

import time
import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from todo_backend.core.limits import oversized_body_response

# A request that adds no metric is normal here (reads); Powertools would warn on every one.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger()
metrics = Metrics(namespace="TodoBackend")

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
    the size limit is answered 413 here, before Mangum decodes it."""

    @metrics.log_metrics(capture_cold_start_metric=True)
    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        started = time.perf_counter()
        response = oversized_body_response(event) or handler(event, context)
        http = event.get("requestContext", {}).get("http", {})
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
