"""Turn a FastAPI app into a Lambda handler wrapped by Powertools (logger with the API
Gateway correlation id, metrics with cold-start capture, tracer)."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths

from reservations.config import Settings, settings_from_environment

if TYPE_CHECKING:
    from fastapi import FastAPI

MAX_BODY_BYTES = 64 * 1024

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


class NoTracer:
    """What the functions use of Powertools' Tracer, doing nothing: the stand-in while
    tracing is off. A Tracer imports the X-Ray SDK (and the botocore modules it loads)
    and builds its recorder even when disabled: some 80 modules and 15-50 ms of every
    cold start (more the fewer of them the function has loaded already)."""

    disabled = True

    # Both forms of Powertools' decorators: `@tracer.capture_lambda_handler` and
    # `@tracer.capture_lambda_handler(capture_response=False)`.
    def capture_lambda_handler(
        self,
        lambda_handler: Callable[..., Any] | None = None,
        capture_response: bool | None = None,
        capture_error: bool | None = None,
    ) -> Callable[..., Any]:
        return _unchanged if lambda_handler is None else lambda_handler

    def capture_method(
        self,
        method: Callable[..., Any] | None = None,
        capture_response: bool | None = None,
        capture_error: bool | None = None,
    ) -> Callable[..., Any]:
        return _unchanged if method is None else method

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str | None = None) -> None:
        pass


def _unchanged[F](function: F) -> F:
    return function


def tracing_enabled() -> bool:
    """Powertools' own rule: off under POWERTOOLS_TRACE_DISABLED, outside Lambda (no
    LAMBDA_TASK_ROOT), under `sam local` and Chalice; on in a deployed function (the
    template's Tracing: Active)."""
    return not Tracer._is_tracer_disabled()


def powertools(settings: Settings) -> tuple[Logger, Metrics, Tracer | NoTracer]:
    """Logger, metrics and tracer named by the POWERTOOLS_* settings (the one source);
    the tracer is a real one only when tracing is on."""
    service = settings.powertools_service_name
    # Powertools shares metric state between instances, so no per-function default
    # dimension here: Lambda's own function name already tells the series apart.
    return (
        Logger(service=service, child=False),
        Metrics(namespace=settings.powertools_metrics_namespace, service=service),
        Tracer(service=service) if tracing_enabled() else NoTracer(),
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
    # Here, not at the top: the scheduled functions (cache_sync, events) import this module
    # for powertools() alone and never load FastAPI or Mangum.
    from mangum import Mangum

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
    # Called last in every function's init: what the init made (modules, the app, the
    # container) lives as long as the container. Out of the cyclic collector's reach, it is
    # no longer walked by full collections, which took 80-100 ms here every few thousand
    # requests, on whichever request they fell (reference counting still frees it).
    gc.freeze()
    return wrapped
