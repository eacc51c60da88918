"""FastAPI app factory with the project's error contract:
`{"detail": "<message>", "code": "<machine_code>"}` for every error we raise, FastAPI's
own 422 format for schema errors, and never a bare 500 for a client's mistake.

The functions' endpoints are ``async def`` though they call blocking code: a Lambda
container (and each local-gateway worker, with its own event loop) serves one request at
a time, so FastAPI's hop of a sync endpoint to its thread pool and back (about 0.3 ms
per request under Mangum) buys nothing. tests/infra/test_routes.py keeps them so."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from reservations.composition import Container
from reservations.domain.audit import bind_request, release_request
from reservations.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthenticated,
    Unprocessable,
)
from reservations.http.documentation import install as install_error_documentation

logger = logging.getLogger("reservations.http")

STATUS_BY_ERROR: dict[type[DomainError], int] = {
    InvalidRequest: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Unprocessable: 422,
    TooManyRequests: 429,
    ServiceUnavailable: 503,
}
HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    503: "service_unavailable",
}
DATABASE_RETRY_AFTER_SECONDS = 5


def error_response(status: int, detail: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def _status_for(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


async def _domain_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DomainError)
    status = _status_for(error)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, TooManyRequests | ServiceUnavailable):
        headers["Retry-After"] = str(error.retry_after_seconds)
    return error_response(status, error.message, error.code, headers)


def _json_safe(value: Any) -> Any:
    """What JSON can carry: a NaN or infinity the body parser let through becomes its text,
    and a lone surrogate is escaped (echoing either back would fail, as a 500)."""
    if isinstance(value, dict):
        return {_json_safe(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


async def _invalid_request(_: Request, error: Exception) -> JSONResponse:
    """FastAPI's own 422 body (clients of the original API parse it), made safe to encode."""
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": _json_safe(jsonable_encoder(error.errors()))}, status_code=422)


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    headers = dict(error.headers or {})
    detail = error.detail if isinstance(error.detail, str) else str(error.detail)
    return error_response(error.status_code, detail, HTTP_CODES.get(error.status_code, "error"), headers)


async def _database_unavailable(_: Request, error: Exception) -> JSONResponse:
    if isinstance(error, DBAPIError) and not (
        error.connection_invalidated or isinstance(error, InterfaceError | OperationalError)
    ):
        raise error
    logger.error("database unavailable: %s", error.__class__.__name__, exc_info=error)
    return error_response(
        503,
        "the database is unavailable; retry shortly",
        "database_unavailable",
        {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


async def _database_rejected(request: Request, error: Exception) -> JSONResponse:
    """Values the database refuses (a NUL byte in text, an out-of-range number) are the
    client's mistake: 422, not 500. Anything else from the driver is a real fault."""
    from reservations.adapters.db import sqlstate

    assert isinstance(error, DBAPIError)
    state = sqlstate(error) or ""
    if state.startswith(("08", "53", "57P")):  # connection, insufficient resources, shutting down
        return await _database_unavailable(request, OperationalError(None, None, error))
    if state.startswith("22"):
        return error_response(422, "the request contains a value that cannot be stored", "invalid_value")
    if error.connection_invalidated:
        return await _database_unavailable(request, error)
    return await _unexpected(request, error)


async def _unexpected(_: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=error)
    return error_response(500, "internal server error", "internal_error")


class RequestContextMiddleware:
    """Binds API Gateway's request id and source address for the audit trail (a plain
    ASGI wrapper: no per-request task or stream, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        context = (scope.get("aws.event") or {}).get("requestContext") or {}
        token = bind_request(context.get("requestId"), (context.get("http") or {}).get("sourceIp"))
        try:
            await self.app(scope, receive, send)
        finally:
            release_request(token)


def create_app(title: str, container: Container, **kwargs: Any) -> FastAPI:
    """FastAPI's default 422 body for schema errors is kept on purpose (clients of the
    original API parse it); every other error gets our envelope."""
    app = FastAPI(title=title, version="1.0.0", **kwargs)
    # Each operation documents the errors it can answer, with their codes (documentation.py).
    install_error_documentation(app)
    app.state.container = container
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _database_rejected)
    # A socket reset mid-query can escape pg8000 as a bare ConnectionError.
    app.add_exception_handler(ConnectionError, _database_unavailable)
    # pg8000's socket timeout (DB_CONNECT_TIMEOUT_SECONDS bounds every read) surfaces bare.
    app.add_exception_handler(TimeoutError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(RequestContextMiddleware)
    return app
