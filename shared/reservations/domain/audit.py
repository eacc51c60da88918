"""The audit trail: who did what to which target, from which request, written in the
transaction of the change (Postgres refuses to change it afterwards, migration 0007).

`details` holds ids and field names only - never a password, token, hash, secret, name or
e-mail - so erasing a user leaves nothing personal in the log. The request's id and source
address come from the request context the HTTP edge binds (`bind_request`)."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

TARGET_TYPES = ("user", "provider", "appointment", "visit_type", "availability", "webhook")


@dataclass(frozen=True)
class RequestContext:
    request_id: str | None = None
    source_ip: str | None = None


NO_REQUEST = RequestContext()
_request: ContextVar[RequestContext | None] = ContextVar("reservations_request", default=None)


def bind_request(request_id: str | None, source_ip: str | None) -> Token[RequestContext | None]:
    return _request.set(RequestContext(request_id, source_ip))


def release_request(token: Token[RequestContext | None]) -> None:
    _request.reset(token)


def current_request() -> RequestContext:
    return _request.get() or NO_REQUEST


def request_source_ip() -> str | None:
    """The current request's source address as the audit log stores it (None outside one)."""
    return (current_request().source_ip or "")[:64] or None


def record_audit(
    session: Session,
    *,
    at: datetime,
    actor_id: int | None,
    actor_role: str,
    action: str,
    target_type: str,
    target_id: int | None,
    subject_id: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """One entry, in ``session``'s transaction (committed or rolled back with the change)."""
    import json

    assert target_type in TARGET_TYPES, target_type
    context = current_request()
    session.execute(
        text(
            "INSERT INTO audit_log (at, actor_id, actor_role, action, target_type, target_id, subject_id, "
            "request_id, source_ip, details) VALUES (:at, :actor_id, :actor_role, :action, :target_type, "
            ":target_id, :subject_id, :request_id, :source_ip, CAST(:details AS jsonb))"
        ),
        {
            "at": at,
            "actor_id": actor_id,
            "actor_role": actor_role,
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "subject_id": subject_id,
            "request_id": (context.request_id or "")[:128] or None,
            "source_ip": request_source_ip(),
            "details": json.dumps(dict(details or {}), default=str),
        },
    )


def audit_by_user(
    session: Session, actor: Any, *, at: datetime, action: str, target_type: str, target_id: int, **details: Any
) -> None:
    """An entry whose actor is a signed-in user (anything with `id` and `role`)."""
    record_audit(
        session,
        at=at,
        actor_id=actor.id,
        actor_role=actor.role,
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=details,
    )
