"""Per-client limits at the HTTP edge: the caller's source address as API Gateway saw it
(`requestContext.http.sourceIp`, never a client-sent X-Forwarded-For) and, where the
request names one, the account. Every limited response carries the IETF RateLimit
fields; a refusal is 429 with Retry-After."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from reservations.adapters.rate_limit import Verdict
from reservations.composition import Container
from reservations.domain.errors import TooManyRequests

UNKNOWN_ADDRESS = "unknown"


def source_ip(request: Request) -> str | None:
    """API Gateway's view of the client address (Mangum keeps the event in the scope)."""
    event = request.scope.get("aws.event") or {}
    address = ((event.get("requestContext") or {}).get("http") or {}).get("sourceIp")
    return str(address) if address else None


def enforce(request: Request, container: Container, scope: str, *, account: str | None = None) -> None:
    """Count this request against its address and (if named) its account; 429 past either."""
    settings = container.settings
    limiter = container.rate_limiter
    verdict = limiter.hit(settings.address_rate, scope, "address", source_ip(request) or UNKNOWN_ADDRESS)
    if account:
        verdict = verdict.tighter(limiter.hit(settings.account_rate, scope, "account", account.strip().lower()))
    request.state.rate_limit = verdict
    if not verdict.allowed:
        raise TooManyRequests(
            "too many requests from this client; slow down",
            retry_after_seconds=max(1, verdict.reset_seconds),
            code="rate_limited",
        )


def install(app: FastAPI) -> None:
    """Add the RateLimit fields to every response of a limited request, errors included."""

    @app.middleware("http")
    async def rate_limit_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        verdict: Verdict | None = getattr(request.state, "rate_limit", None)
        if verdict is not None:
            response.headers["RateLimit-Limit"] = str(verdict.limit)
            response.headers["RateLimit-Remaining"] = str(verdict.remaining)
            response.headers["RateLimit-Reset"] = str(verdict.reset_seconds)
        return response
