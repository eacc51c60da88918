"""Turn a FastAPI app into a Lambda handler wrapped by Powertools (logger with the API
Gateway correlation id, metrics with cold-start capture, tracer)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from fastapi import FastAPI
from mangum import Mangum

from reservations.config import Settings, settings_from_environment

MAX_BODY_BYTES = 64 * 1024

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def powertools(settings: Settings) -> tuple[Logger, Metrics, Tracer]:
    """Logger, metrics and tracer named by the POWERTOOLS_* settings (the one source)."""
    service = settings.powertools_service_name
    # Powertools shares metric state between instances, so no per-function default
    # dimension here: Lambda's own function name already tells the series apart.
    return (
        Logger(service=service, child=False),
        Metrics(namespace=settings.powertools_metrics_namespace, service=service),
        Tracer(service=service),
    )


def _body_size(event: dict[str, Any]) -> int:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return len(body) * 3 // 4
    return len(body.encode())


def _too_large() -> dict[str, Any]:
    return {
        "statusCode": 413,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"detail": f"request body exceeds {MAX_BODY_BYTES} bytes", "code": "payload_too_large"}),
    }


def make_lambda_handler(app: FastAPI, settings: Settings | None = None) -> LambdaHandler:
    logger, metrics, tracer = powertools(settings or settings_from_environment())
    asgi = Mangum(app, lifespan="off")

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics(capture_cold_start_metric=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # Refuse oversized bodies before parsing: JSON bombs never reach the app.
        if _body_size(event) > MAX_BODY_BYTES:
            return _too_large()
        response: dict[str, Any] = asgi(event, context)
        return response

    wrapped: LambdaHandler = handler
    return wrapped
