"""Structured logs and EMF metrics (Powertools). Service name and namespace come from
POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE, set per function by the template."""

from aws_lambda_powertools import Logger, Metrics

logger = Logger(service="todo-backend")
metrics = Metrics(namespace="TodoBackend")
