"""Integration use cases: webhook endpoints (registration, secrets, deliveries, retries,
pings) and calendar feeds. Webhooks belong to their owner alone: anyone else gets 404.

The webhook transport (urllib3, standardwebhooks) and the calendar (icalendar, the event
use cases) are imported by the operations that use them: listing webhooks or their
deliveries, the integrations function's common requests, needs neither."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from reservations.adapters.db import User, Webhook, WebhookDelivery
from reservations.adapters.security import AccessClaims
from reservations.domain.accounts import current_user
from reservations.domain.audit import audit_by_user
from reservations.domain.errors import Conflict, Forbidden, NotFound, Unprocessable
from reservations.domain.events import SUBSCRIBABLE, WEBHOOK_PING, iso
from reservations.usecases import Resources

MAX_EVENTS_PER_WEBHOOK = len(SUBSCRIBABLE)
FEED_PAST = timedelta(days=30)


@dataclass(frozen=True)
class CreatedWebhook:
    webhook: Webhook
    secret: str


class IntegrationUseCases:
    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    # --- webhooks ------------------------------------------------------------------------

    def create_webhook(
        self, caller: AccessClaims, *, url: str, events: Sequence[str], description: str | None
    ) -> CreatedWebhook:
        from reservations.adapters.webhook_transport import WebhookUrlRefused, new_secret

        subscribed = _subscription(events)
        transport = self._resources.webhook_transport
        try:
            checked_url = transport.check_url(url)
        except WebhookUrlRefused as refusal:
            raise Unprocessable(f"url refused: {refusal}", code="invalid_webhook_url") from None
        with self._resources.unit_of_work() as session:
            owner = self._owner(session, caller, lock=True)
            count = session.scalar(select(func.count()).where(Webhook.owner_id == owner.id)) or 0
            limit = self._resources.settings.max_webhooks_per_owner
            if count >= limit:
                raise Conflict(f"at most {limit} webhooks per account", code="too_many_webhooks")
            secret = new_secret()
            webhook = Webhook(
                owner_id=owner.id,
                url=checked_url,
                events=subscribed,
                description=description,
                secret=secret,
                active=True,
                created_at=self._resources.now(),
            )
            session.add(webhook)
            session.flush()
            self._audit(session, owner, "webhook.created", webhook.id, events=subscribed)
            return CreatedWebhook(webhook, secret)

    def list_webhooks(self, caller: AccessClaims) -> list[Webhook]:
        with self._resources.unit_of_work() as session:
            owner = self._owner(session, caller)
            return list(session.scalars(select(Webhook).where(Webhook.owner_id == owner.id).order_by(Webhook.id)))

    def get_webhook(self, caller: AccessClaims, webhook_id: int) -> Webhook:
        with self._resources.unit_of_work() as session:
            return self._own_webhook(session, caller, webhook_id)

    def delete_webhook(self, caller: AccessClaims, webhook_id: int) -> None:
        with self._resources.unit_of_work() as session:
            webhook = self._own_webhook(session, caller, webhook_id)
            session.delete(webhook)
            self._audit(session, session.get_one(User, webhook.owner_id), "webhook.deleted", webhook_id)

    def rotate_secret(self, caller: AccessClaims, webhook_id: int) -> CreatedWebhook:
        from reservations.adapters.webhook_transport import new_secret

        with self._resources.unit_of_work() as session:
            webhook = self._own_webhook(session, caller, webhook_id, lock=True)
            webhook.secret = new_secret()
            self._audit(session, session.get_one(User, webhook.owner_id), "webhook.secret_rotated", webhook_id)
            return CreatedWebhook(webhook, webhook.secret)

    def ping(self, caller: AccessClaims, webhook_id: int) -> WebhookDelivery:
        """A `webhook.ping` event for this endpoint alone, attempted at once."""
        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            webhook = self._own_webhook(session, caller, webhook_id)
            self._check_active(webhook)
            delivery = WebhookDelivery(
                webhook_id=webhook.id,
                event_id=uuid.uuid4(),
                event_type=WEBHOOK_PING,
                payload={"type": WEBHOOK_PING, "timestamp": iso(now), "data": {"webhook_id": webhook.id}},
                attempts=0,
                status="pending",
                next_attempt_at=now + timedelta(minutes=1),
                created_at=now,
                updated_at=now,
            )
            session.add(delivery)
            session.flush()
            delivery_id = delivery.id
        return self._resources.events.attempt_delivery(delivery_id)

    def deliveries(self, caller: AccessClaims, webhook_id: int, *, limit: int, offset: int) -> list[WebhookDelivery]:
        with self._resources.unit_of_work() as session:
            self._own_webhook(session, caller, webhook_id)
            return list(
                session.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.webhook_id == webhook_id)
                    .order_by(WebhookDelivery.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            )

    def retry_delivery(self, caller: AccessClaims, webhook_id: int, delivery_id: int) -> WebhookDelivery:
        """Send a pending or failed delivery now; a failed one gets a fresh schedule."""
        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            webhook = self._own_webhook(session, caller, webhook_id)
            self._check_active(webhook)
            delivery = session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook.id)
                .with_for_update()
            ).first()
            if delivery is None:
                raise NotFound(f"delivery {delivery_id} not found", code="delivery_not_found")
            if delivery.status == "succeeded":
                raise Conflict("this delivery already succeeded", code="delivery_succeeded")
            if delivery.status == "failed":
                delivery.attempts = 0
            delivery.status = "pending"
            # Leased, so the dispatch pass does not attempt it at the same moment.
            delivery.next_attempt_at = now + timedelta(minutes=1)
        return self._resources.events.attempt_delivery(delivery_id)

    def _audit(self, session: Session, actor: User, action: str, webhook_id: int, **details: Any) -> None:
        audit_by_user(
            session,
            actor,
            at=self._resources.now(),
            action=action,
            target_type="webhook",
            target_id=webhook_id,
            **details,
        )

    def _owner(self, session: Session, caller: AccessClaims, *, lock: bool = False) -> User:
        user = current_user(session, caller)
        if user.role not in ("provider", "admin"):
            raise Forbidden("webhooks are for providers and admins", code="wrong_role")
        if lock:  # serialises one owner's registrations, so the limit cannot be raced past
            session.execute(select(User.id).where(User.id == user.id).with_for_update(key_share=True))
        return user

    def _own_webhook(self, session: Session, caller: AccessClaims, webhook_id: int, *, lock: bool = False) -> Webhook:
        owner = self._owner(session, caller)
        query = select(Webhook).where(Webhook.id == webhook_id, Webhook.owner_id == owner.id)
        if lock:
            query = query.with_for_update()
        webhook = session.scalars(query).first()
        if webhook is None:
            raise NotFound(f"webhook {webhook_id} not found", code="webhook_not_found")
        return webhook

    @staticmethod
    def _check_active(webhook: Webhook) -> None:
        if not webhook.active:
            raise Conflict(
                "this webhook was disabled after failing for 24 hours; register the endpoint again",
                code="webhook_disabled",
            )

    # --- calendar feed -------------------------------------------------------------------

    def new_calendar_feed(self, caller: AccessClaims) -> str:
        """A fresh feed token (returned once, stored hashed); the previous one stops working."""
        token = secrets.token_urlsafe(32)
        with self._resources.unit_of_work() as session:
            user = current_user(session, caller)
            user.calendar_feed_hash = _feed_hash(token)
        return token

    def calendar(self, token: str) -> bytes:
        from reservations.domain.notifications import FeedEntry, calendar_feed
        from reservations.usecases.events import lineage_uid

        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            user = session.scalars(select(User).where(User.calendar_feed_hash == _feed_hash(token))).first()
            if user is None:
                raise NotFound("calendar feed not found", code="calendar_not_found")
            horizon = timedelta(days=self._resources.settings.max_booking_horizon_days)
            rows = session.execute(
                text(
                    """
                    WITH RECURSIVE mine AS (
                        SELECT a.id, a.start_time, a.end_time, a.note, a.provider_id, a.patient_id
                        FROM appointments a
                        WHERE (a.patient_id = :me OR a.provider_id = :me) AND a.status = 'confirmed'
                          AND a.start_time >= :first AND a.start_time < :last
                    ), chain(appointment_id, id, rescheduled_from, depth) AS (
                        SELECT m.id, a.id, a.rescheduled_from, 0
                        FROM mine m JOIN appointments a ON a.id = m.id
                        UNION ALL
                        SELECT c.appointment_id, a.id, a.rescheduled_from, c.depth + 1
                        FROM chain c JOIN appointments a ON a.id = c.rescheduled_from
                    ), roots AS (
                        SELECT DISTINCT ON (appointment_id) appointment_id, id AS root, depth
                        FROM chain ORDER BY appointment_id, depth DESC
                    )
                    SELECT m.id, m.start_time, m.end_time, m.note, r.root, r.depth,
                           provider.name AS provider_name, patient.name AS patient_name
                    FROM mine m JOIN roots r ON r.appointment_id = m.id
                    JOIN users provider ON provider.id = m.provider_id
                    JOIN users patient ON patient.id = m.patient_id
                    ORDER BY m.start_time
                    """
                ),
                {"me": user.id, "first": now - FEED_PAST, "last": _day_end(now + horizon)},
            ).all()
            entries = [
                FeedEntry(
                    uid=lineage_uid(int(row.root)),
                    sequence=int(row.depth),
                    start=row.start_time,
                    end=row.end_time,
                    summary=(
                        f"Appointment with {row.provider_name}"
                        if user.role == "patient"
                        else f"Appointment: {row.patient_name}"
                    ),
                    description=row.note or "",
                )
                for row in rows
            ]
            return calendar_feed(entries, name=f"Appointments of {user.name}", stamp=now)


def _subscription(events: Sequence[str]) -> list[str]:
    wanted = list(dict.fromkeys(events))
    if not wanted:
        raise Unprocessable('events must name at least one event type, or ["*"]', code="invalid_events")
    unknown = [name for name in wanted if name != "*" and name not in SUBSCRIBABLE]
    if unknown:
        raise Unprocessable(
            f"unknown event types: {', '.join(sorted(unknown))[:200]}; known: {', '.join(SUBSCRIBABLE)}",
            code="invalid_events",
        )
    return ["*"] if "*" in wanted else wanted


def _feed_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _day_end(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date() + timedelta(days=1), time.min, UTC)


def delivery_view(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": str(delivery.event_id),
        "event_type": delivery.event_type,
        "attempts": delivery.attempts,
        "status": delivery.status,
        "last_response_status": delivery.last_response_status,
        "next_attempt_at": delivery.next_attempt_at if delivery.status == "pending" else None,
        "created_at": delivery.created_at,
    }
