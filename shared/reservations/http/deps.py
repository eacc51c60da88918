"""Annotated dependencies: the caller's verified token, role guards, idempotency and request ids.

A dependency only verifies the bearer token (signature, expiry, issuer, audience: no
database); whether the token was revoked since is checked by the use case inside its own
unit of work, so a request costs one transaction. They are `async def`: under Mangum
every invocation runs alone on its own event loop, and a plain `def` dependency costs a
thread hop each (measured: most of a cached listing's overhead)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import OAuth2PasswordBearer

from reservations.adapters.security import AccessClaims
from reservations.composition import Container
from reservations.domain.errors import Forbidden, Unauthenticated

bearer_scheme = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)


BearerToken = Annotated[str | None, Depends(bearer_scheme)]


async def optional_caller(request: Request, token: BearerToken) -> AccessClaims | None:
    # The container is read here, not through a dependency of its own: each level of
    # FastAPI's dependency tree costs every request its resolution (~20 µs).
    if not token:
        return None
    container: Container = request.app.state.container
    return container.accounts.verify(token)


async def caller(request: Request, token: BearerToken) -> AccessClaims:
    claims = await optional_caller(request, token)
    if claims is None:
        raise Unauthenticated("not authenticated", code="not_authenticated")
    return claims


Caller = Annotated[AccessClaims, Depends(caller)]
OptionalCaller = Annotated[AccessClaims | None, Depends(optional_caller)]


def require_role(*roles: str) -> Callable[[AccessClaims], Awaitable[AccessClaims]]:
    async def guard(claims: Caller) -> AccessClaims:
        if claims.role not in roles:
            raise Forbidden(f"this action requires the role {' or '.join(roles)}", code="wrong_role")
        return claims

    return guard


IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, description="Replays return the first response"),
]


async def request_id(request: Request) -> str | None:
    """API Gateway's request id (``requestContext.requestId``), recorded with each change."""
    event = request.scope.get("aws.event") or {}
    context = event.get("requestContext") or {}
    value = context.get("requestId")
    return str(value)[:128] if value else None


RequestId = Annotated[str | None, Depends(request_id)]
