"""What the system announces: event types, the shape of an event and of a webhook
payload, and the retry schedule of webhook deliveries. Pure: no I/O."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from reservations.adapters.db import OutboxEvent

APPOINTMENT_EVENTS = (
    "appointment.reserved",
    "appointment.confirmed",
    "appointment.cancelled",
    "appointment.rescheduled",
    "appointment.expired",
    "appointment.completed",
    "appointment.no_show",
)
AVAILABILITY_UPDATED = "availability.updated"
WEBHOOK_PING = "webhook.ping"
EVENT_TYPES = (*APPOINTMENT_EVENTS, AVAILABILITY_UPDATED)
SUBSCRIBABLE = (*EVENT_TYPES, WEBHOOK_PING)

# The Standard Webhooks schedule: the first attempt at once, then retries after these
# waits (each with +-20 % jitter): 8 attempts over about 28 hours.
RETRY_WAITS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_WAITS) + 1
JITTER = 0.2
# An endpoint that has failed every delivery for this long is disabled.
DISABLE_AFTER = timedelta(hours=24)


def next_attempt_after(attempts: int, now: datetime, *, rng: random.Random | None = None) -> datetime | None:
    """When to try again after ``attempts`` failed attempts; None once they are spent."""
    if attempts >= MAX_ATTEMPTS:
        return None
    wait = RETRY_WAITS[attempts - 1].total_seconds()
    spread = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return now + timedelta(seconds=wait * spread)


def iso(moment: datetime) -> str:
    """Time stamps as the API's JSON writes them (UTC, "Z")."""
    text = moment.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def event_document(
    event_id: str, event_type: str, occurred_at: datetime, sequence: int | None, data: Mapping[str, Any]
) -> dict[str, Any]:
    """An event as it travels on the bus (EventBridge's `detail`)."""
    return {"id": event_id, "type": event_type, "occurred_at": iso(occurred_at), "sequence": sequence, "data": data}


def webhook_payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a delivery, per Standard Webhooks: {type, timestamp, data}."""
    return {"type": event["type"], "timestamp": event["occurred_at"], "data": event["data"]}


def provider_of(event: Mapping[str, Any]) -> int | None:
    """The provider an event concerns (whose webhooks receive it)."""
    data = event.get("data") or {}
    appointment = data.get("appointment")
    if isinstance(appointment, Mapping):
        return int(appointment["provider_id"])
    provider = data.get("provider_id")
    return int(provider) if provider is not None else None


def availability_data(provider_id: int, timezone: str, days: frozenset[date] | set[date], slots: int) -> dict[str, Any]:
    ordered = sorted(days)
    return {
        "provider_id": provider_id,
        "timezone": timezone,
        "first_date": ordered[0].isoformat() if ordered else None,
        "last_date": ordered[-1].isoformat() if ordered else None,
        "days_changed": len(ordered),
        "slots_offered": slots,
    }


def record_event(
    session: Session, event_type: str, occurred_at: datetime, data: Mapping[str, Any], *, provider_id: int | None
) -> None:
    """An event in the outbox, committed (or rolled back) with the change it describes.
    Appointment transitions need no call: a trigger on their history writes them."""
    session.add(OutboxEvent(type=event_type, occurred_at=occurred_at, data=dict(data), provider_id=provider_id))


def enqueue_notices(session: Session, notices: Sequence[tuple[str, int, Mapping[str, Any]]], *, now: datetime) -> None:
    """Appointment notices (key, recipient id, ``notice_document``) for the dispatch pass to
    render and send, committed with the change that caused them, in one statement; a key
    already queued makes its notice a no-op."""
    # One JSON document rather than a text[] of notices: pg8000 escapes every string of an
    # array parameter character by character in Python (~80 µs a notice).
    rows = [{"key": key[:200], "user_id": user_id, "notice": notice} for key, user_id, notice in notices]
    session.execute(
        text(
            "INSERT INTO outgoing_mail (dedupe_key, user_id, notice, created_at, next_attempt_at) "
            "SELECT key, user_id, notice, :now, :now "
            "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS queued(key text, user_id bigint, notice jsonb) "
            "ON CONFLICT (dedupe_key) DO NOTHING"
        ),
        {"rows": json.dumps(rows), "now": now},
    )


def enqueue_mail(session: Session, *, key: str, user_id: int | None, message: EmailMessage, now: datetime) -> None:
    """A message for the dispatch pass to send, committed with the change that caused it;
    ``key`` makes a second enqueue of the same message a no-op."""
    session.execute(
        text(
            "INSERT INTO outgoing_mail (dedupe_key, user_id, message, created_at, next_attempt_at) "
            "VALUES (:key, :user_id, :message, :now, :now) ON CONFLICT (dedupe_key) DO NOTHING"
        ),
        {"key": key[:200], "user_id": user_id, "message": message.as_bytes(), "now": now},
    )
