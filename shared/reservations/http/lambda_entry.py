"""Turn a FastAPI app into a Lambda handler wrapped by Powertools (logger with the API
Gateway correlation id, metrics with cold-start capture, tracer)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from fastapi import FastAPI
from mangum import Mangum

SERVICE = "reservations"
METRICS_NAMESPACE = "Reservations"
MAX_BODY_BYTES = 64 * 1024

_thread_state = threading.local()

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _body_size(event: dict[str, Any]) -> int:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return len(body) * 3 // 4
    return len(body.encode())


def _ensure_event_loop() -> None:
    """Mangum runs the app on the current thread's event loop; Lambda calls handlers on
    the main thread, but the local gateway and concurrency tests call from workers."""
    if getattr(_thread_state, "loop", None) is None:
        _thread_state.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_thread_state.loop)


def _too_large() -> dict[str, Any]:
    return {
        "statusCode": 413,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"detail": f"request body exceeds {MAX_BODY_BYTES} bytes", "code": "payload_too_large"}),
    }


def make_lambda_handler(app: FastAPI, *, function: str) -> LambdaHandler:
    logger = Logger(service=SERVICE, child=False)
    # Powertools shares metric state between instances, so no per-function default
    # dimension here: Lambda's own function name already tells the series apart.
    metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
    tracer = Tracer(service=SERVICE)
    asgi = Mangum(app, lifespan="off")

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics(capture_cold_start_metric=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # Refuse oversized bodies before parsing: JSON bombs never reach the app.
        if _body_size(event) > MAX_BODY_BYTES:
            return _too_large()
        _ensure_event_loop()
        response: dict[str, Any] = asgi(event, context)
        return response

    wrapped: LambdaHandler = handler
    return wrapped


def decode_body(response: dict[str, Any]) -> bytes:
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
