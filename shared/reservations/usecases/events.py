"""Events leave the system: the publisher moves committed outbox rows to the bus; the
consumer turns each event into webhook deliveries, e-mails and reminders; the dispatch
pass attempts due deliveries, sends queued mail and queues due reminders.

Every step is safe to run concurrently and more than once: rows are claimed with
`FOR UPDATE SKIP LOCKED` (or leased), and everything the consumer writes is keyed by the
event id, so an event delivered twice by the bus fans out once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, select, text
from sqlalchemy.orm import Session

from reservations.adapters.db import User, Webhook, WebhookDelivery
from reservations.domain.events import (
    DISABLE_AFTER,
    enqueue_mail,
    enqueue_notices,
    event_document,
    next_attempt_after,
    provider_of,
    webhook_payload,
)
from reservations.domain.notifications import (
    AppointmentNotice,
    Party,
    notice_document,
    notice_from_document,
    render_appointment_notice,
    webhook_disabled_notice,
)
from reservations.usecases import Resources

if TYPE_CHECKING:
    from reservations.adapters.event_bus import Event, EventSink
    from reservations.adapters.webhook_transport import WebhookTransport

logger = logging.getLogger(__name__)

PUBLISH_BATCH = 100
DELIVERY_BATCH = 20
MAIL_BATCH = 50
REMINDER_BATCH = 200
# A claimed delivery or message is someone's for this long; a pass that dies mid-way
# leaves it to be picked up again after the lease.
LEASE = timedelta(seconds=60)
MAIL_RETRY = timedelta(minutes=5)
MAIL_MAX_ATTEMPTS = 10
PURGE_BATCH = 5000
# Functions of migration 0011 (plans kept per connection), sent as the driver's own SQL.
_CLAIM_UNPUBLISHED = "SELECT * FROM claim_unpublished(%s::integer, %s::timestamptz)"
_FAN_OUT_EVENT = "SELECT fan_out_event(%s::uuid, %s::text, %s::jsonb, %s::timestamptz, %s::bigint)"


@dataclass
class DispatchSummary:
    published: int = 0
    resets_processed: int = 0
    reminders_queued: int = 0
    deliveries_attempted: int = 0
    deliveries_succeeded: int = 0
    mail_sent: int = 0
    purged: int = 0
    oldest_unpublished_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventUseCases:
    def __init__(self, resources: Resources, *, sink: EventSink, transport: WebhookTransport) -> None:
        self._resources = resources
        self._sink = sink
        self._transport = transport

    @property
    def _settings(self) -> Any:
        return self._resources.settings

    # --- publishing ----------------------------------------------------------------------

    def publish_pending(self, *, batch: int = PUBLISH_BATCH) -> int:
        """Send unpublished events in commit order, then mark them. If the process dies
        between sending and marking, the transaction rolls back and the next run sends
        the same events again, with the same ids: at least once, never lost."""
        total = 0
        while True:
            with self._resources.unit_of_work() as session:
                # The oldest unpublished events no other publisher holds, claimed and marked
                # in one statement; the mark commits only with the send, and events the sink
                # refused are unmarked again.
                claimed = session.connection().exec_driver_sql(_CLAIM_UNPUBLISHED, (batch, self._resources.now()))
                rows = sorted(claimed.all(), key=lambda row: row.position)
                if not rows:
                    return total
                events = [event_document(str(r.id), r.type, r.occurred_at, r.sequence, r.data) for r in rows]
                accepted = self._sink.send(events, session)
                refused = sorted({str(row.id) for row in rows} - set(accepted))
                if refused:
                    session.execute(
                        text("UPDATE outbox_events SET published_at = NULL WHERE id = ANY(CAST(:ids AS uuid[]))"),
                        {"ids": refused},
                    )
                total += len(accepted)
            if len(rows) < batch or len(accepted) < len(rows):
                return total

    def publish_after_commit(self) -> None:
        """Best effort right after a write: the scheduled pass is the safety net, so a
        failure here is logged and never reaches the client."""
        if not self._settings.publish_after_commit:
            return
        try:
            self.publish_pending()
        except Exception as error:  # the request already succeeded
            logger.warning(
                "publishing after commit failed (%s: %s); the dispatch pass will retry", type(error).__name__, error
            )

    # --- consuming -----------------------------------------------------------------------

    def consume(self, event: Event) -> None:
        """Fan an event out to webhook deliveries, e-mails and reminders, once per event id."""
        with self._resources.unit_of_work() as session:
            self.consume_in(session, event)

    def consume_in(self, session: Session, event: Event) -> None:
        now = self._resources.now()
        self._fan_out_to_webhooks(session, event, now)
        appointment = (event.get("data") or {}).get("appointment")
        if isinstance(appointment, Mapping) and str(event["type"]).startswith("appointment."):
            self._notify(session, event, appointment, now)

    def _fan_out_to_webhooks(self, session: Session, event: Event, now: datetime) -> None:
        """A delivery per active webhook subscribed to the event's type (or to '*') whose
        owner may see it: an admin's, or the event's provider's own."""
        payload = json.dumps(webhook_payload(event))
        arguments = (str(event["id"]), event["type"], payload, now, provider_of(event))
        session.connection().exec_driver_sql(_FAN_OUT_EVENT, arguments)

    def _notify(self, session: Session, event: Event, appointment: Mapping[str, Any], now: datetime) -> None:
        kind = str(event["type"]).removeprefix("appointment.")
        appointment_id = int(appointment["id"])
        # Holds, expiries and attendance send nothing: decided before anything is read.
        if kind not in ("confirmed", "rescheduled", "cancelled"):
            return
        if kind == "rescheduled" and appointment["status"] != "confirmed":
            return
        was_confirmed = kind == "cancelled" and self._was_confirmed(session, appointment_id)
        if kind == "cancelled" and not was_confirmed:
            return
        parties = {
            user.id: user
            for user in session.scalars(
                select(User).where(User.id.in_([int(appointment["patient_id"]), int(appointment["provider_id"])]))
            )
        }
        patient, provider = parties.get(int(appointment["patient_id"])), parties.get(int(appointment["provider_id"]))
        if patient is None or provider is None:
            return
        uid, depth = self._lineage(session, appointment_id)
        previous = (event.get("data") or {}).get("previous")

        def notice(notice_kind: str, recipient: User, other: User, sequence: int) -> AppointmentNotice:
            return AppointmentNotice(
                kind=notice_kind,
                recipient=_party(recipient, self._settings.default_timezone),
                other_party=_party(other, self._settings.default_timezone),
                appointment=appointment,
                previous=previous if isinstance(previous, Mapping) else None,
                lineage_uid=uid,
                ics_sequence=sequence,
            )

        if kind == "confirmed":
            self._queue(
                session,
                (f"{event['id']}:confirmed", patient, notice("confirmed", patient, provider, depth)),
                (f"{event['id']}:provider", provider, notice("provider_booked", provider, patient, 0)),
            )
            self._schedule_reminders(session, appointment, event)
        elif kind == "rescheduled" and appointment["status"] == "confirmed":
            self._queue(
                session, (f"{event['id']}:rescheduled", patient, notice("rescheduled", patient, provider, depth))
            )
            self._schedule_reminders(session, appointment, event)
        elif was_confirmed:
            self._queue(
                session,
                (f"{event['id']}:cancelled", patient, notice("cancelled", patient, provider, depth + 1)),
                (f"{event['id']}:provider", provider, notice("provider_cancelled", provider, patient, 0)),
            )

    @staticmethod
    def _lineage(session: Session, appointment_id: int) -> tuple[str, int]:
        """The calendar UID of a reschedule chain (its first appointment) and how many
        moves led here, so every message about one visit updates one calendar entry."""
        root, depth = session.execute(
            text(
                """
                WITH RECURSIVE chain(id, rescheduled_from, depth) AS (
                    SELECT id, rescheduled_from, 0 FROM appointments WHERE id = :id
                    UNION ALL
                    SELECT a.id, a.rescheduled_from, c.depth + 1
                    FROM appointments a JOIN chain c ON a.id = c.rescheduled_from
                )
                SELECT id, depth FROM chain ORDER BY depth DESC LIMIT 1
                """
            ),
            {"id": appointment_id},
        ).one()
        return lineage_uid(int(root)), int(depth)

    @staticmethod
    def _was_confirmed(session: Session, appointment_id: int) -> bool:
        """A hold that never became a booking sent no invitation, so nothing to cancel."""
        return bool(
            session.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM appointment_history "
                    "WHERE appointment_id = :id AND to_status = 'confirmed')"
                ),
                {"id": appointment_id},
            ).scalar()
        )

    def _schedule_reminders(self, session: Session, appointment: Mapping[str, Any], event: Event) -> None:
        """A reminder per configured offset that is still ahead at the time of the event
        (a booking made 3 hours ahead gets no 24-hour reminder, rather than one at once)."""
        start = _parse_time(appointment["start_time"])
        occurred = _parse_time(event["occurred_at"])
        offsets = [hours for hours in self._settings.reminder_hours if start - timedelta(hours=hours) > occurred]
        if offsets:
            session.execute(
                text(
                    "INSERT INTO reminders (appointment_id, hours_before, due_at) "
                    "SELECT :id, hours, CAST(:start AS timestamptz) - make_interval(hours => hours) "
                    "FROM unnest(CAST(:offsets AS integer[])) AS hours ON CONFLICT DO NOTHING"
                ),
                {"id": int(appointment["id"]), "start": start, "offsets": offsets},
            )

    def _queue(self, session: Session, *notices: tuple[str, User, AppointmentNotice]) -> None:
        """Queue each (key, recipient, notice) whose recipient takes e-mail, in one statement."""
        wanted = [
            (key, recipient.id, notice_document(notice)) for key, recipient, notice in notices if recipient.notify_email
        ]
        if wanted:
            # Rendered by the dispatch pass just before sending: composing the message and its
            # invitation was most of a confirmation's time here.
            enqueue_notices(session, wanted, now=self._resources.now())

    def queue_message(self, session: Session, key: str, user_id: int | None, message: EmailMessage) -> None:
        enqueue_mail(session, key=key, user_id=user_id, message=message, now=self._resources.now())

    @property
    def _sender(self) -> str:
        return str(self._settings.email_sender or "reservations@localhost")

    # --- reminders -----------------------------------------------------------------------

    def queue_due_reminders(self, *, batch: int = REMINDER_BATCH) -> int:
        """Claim due reminders of appointments still confirmed and ahead, mark them sent and
        queue their mail in one transaction: concurrent passes skip each other's rows, so
        each reminder is queued exactly once; cancelled or moved appointments never match."""
        now = self._resources.now()
        total = 0
        while True:
            with self._resources.unit_of_work() as session:
                due = session.execute(
                    text(
                        """
                        WITH due AS (
                            SELECT r.appointment_id, r.hours_before
                            FROM reminders r JOIN appointments a ON a.id = r.appointment_id
                            WHERE r.sent_at IS NULL AND r.due_at <= :now
                              AND a.status = 'confirmed' AND a.start_time > :now
                            ORDER BY r.due_at LIMIT :batch
                            FOR UPDATE OF r SKIP LOCKED
                        )
                        UPDATE reminders r SET sent_at = :now FROM due
                        WHERE r.appointment_id = due.appointment_id AND r.hours_before = due.hours_before
                        RETURNING r.appointment_id, r.hours_before
                        """
                    ),
                    {"now": now, "batch": batch},
                ).all()
                for appointment_id, hours in due:
                    self._queue_reminder(session, int(appointment_id), int(hours))
            total += len(due)
            if len(due) < batch:
                return total

    def _queue_reminder(self, session: Session, appointment_id: int, hours: int) -> None:
        appointment = session.execute(
            text("SELECT appointment_json(a) FROM appointments a WHERE a.id = :id"), {"id": appointment_id}
        ).scalar_one()
        patient = session.get_one(User, int(appointment["patient_id"]))
        provider = session.get_one(User, int(appointment["provider_id"]))
        uid, depth = self._lineage(session, appointment_id)
        notice = AppointmentNotice(
            kind="reminder",
            recipient=_party(patient, self._settings.default_timezone),
            other_party=_party(provider, self._settings.default_timezone),
            appointment=appointment,
            lineage_uid=uid,
            ics_sequence=depth,
            hours_before=hours,
        )
        self._queue(session, (f"reminder:{appointment_id}:{hours}", patient, notice))

    # --- webhook deliveries --------------------------------------------------------------

    def deliver_due(self, *, batch: int = DELIVERY_BATCH) -> tuple[int, int]:
        """Attempt every pending delivery that is due; returns (attempted, succeeded)."""
        attempted = succeeded = 0
        while True:
            claimed = self._claim_deliveries(batch)
            for delivery_id in claimed:
                attempted += 1
                succeeded += self.attempt_delivery(delivery_id, claimed=True).status == "succeeded"
            if len(claimed) < batch:
                return attempted, succeeded

    def _claim_deliveries(self, batch: int) -> list[int]:
        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            return [
                int(row_id)
                for row_id in session.execute(
                    text(
                        """
                        UPDATE webhook_deliveries SET next_attempt_at = :lease_until
                        WHERE id IN (
                            SELECT id FROM webhook_deliveries
                            WHERE status = 'pending' AND next_attempt_at <= :now
                            ORDER BY next_attempt_at LIMIT :batch FOR UPDATE SKIP LOCKED)
                        RETURNING id
                        """
                    ),
                    {"now": now, "lease_until": now + LEASE, "batch": batch},
                ).scalars()
            ]

    def attempt_delivery(self, delivery_id: int, *, claimed: bool = False) -> WebhookDelivery:
        """POST one delivery now (signed, 5 s, no redirects) and record the outcome."""
        with self._resources.unit_of_work() as session:
            delivery = session.get_one(WebhookDelivery, delivery_id)
            webhook = session.get_one(Webhook, delivery.webhook_id)
            url, secret, active = webhook.url, webhook.secret, webhook.active
            event_id, payload = str(delivery.event_id), delivery.payload
        if not active:
            return self._record_outcome(delivery_id, None, "the endpoint is disabled", give_up=True)
        body = json.dumps(payload, separators=(",", ":")).encode()
        # The receiver checks webhook-timestamp against its own clock (replay protection):
        # it is the real sending time, never the domain clock.
        outcome = self._transport.post(url, secret=secret, message_id=event_id, timestamp=datetime.now(UTC), body=body)
        if outcome.succeeded:
            return self._record_outcome(delivery_id, outcome.status, None, succeeded=True)
        return self._record_outcome(delivery_id, outcome.status, outcome.error)

    def _record_outcome(
        self,
        delivery_id: int,
        status: int | None,
        error: str | None,
        *,
        succeeded: bool = False,
        give_up: bool = False,
    ) -> WebhookDelivery:
        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            delivery = session.get_one(WebhookDelivery, delivery_id, with_for_update=True)
            webhook = session.get_one(Webhook, delivery.webhook_id, with_for_update=True)
            delivery.attempts += 0 if give_up else 1
            delivery.last_response_status = status
            delivery.last_error = error[:300] if error else None
            delivery.updated_at = now
            if succeeded:
                delivery.status, delivery.next_attempt_at = "succeeded", None
                webhook.failing_since = None
                return delivery
            retry_at = None if give_up else next_attempt_after(delivery.attempts, now)
            if not give_up and self._note_failure(session, webhook, now):
                retry_at = None  # the endpoint was just disabled
            delivery.status = "pending" if retry_at else "failed"
            delivery.next_attempt_at = retry_at
            return delivery

    def _note_failure(self, session: Session, webhook: Webhook, now: datetime) -> bool:
        """Whether this failure disabled the endpoint (every delivery failed for 24 h)."""
        if webhook.failing_since is None:
            webhook.failing_since = now
            return False
        if not webhook.active or now - webhook.failing_since < DISABLE_AFTER:
            return False
        webhook.active = False
        webhook.disabled_at = now
        session.execute(
            text(
                "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, updated_at = :now "
                "WHERE webhook_id = :id AND status = 'pending'"
            ),
            {"now": now, "id": webhook.id},
        )
        owner = session.get_one(User, webhook.owner_id)
        message = webhook_disabled_notice(
            _party(owner, self._settings.default_timezone),
            url=webhook.url,
            webhook_id=webhook.id,
            failing_since=webhook.failing_since,
            sender=self._sender,
        )
        # Security-relevant for the owner's integration: sent whatever notify_email says.
        self.queue_message(
            session, f"webhook-disabled:{webhook.id}:{webhook.failing_since.isoformat()}", owner.id, message
        )
        logger.warning("webhook %s disabled after failing every delivery for 24 hours", webhook.id)
        return True

    # --- mail ----------------------------------------------------------------------------

    def send_due_mail(self, *, batch: int = MAIL_BATCH) -> int:
        """Send queued messages (claimed by lease, so concurrent passes never both send one)."""
        sent = 0
        while True:
            now = self._resources.now()
            with self._resources.unit_of_work() as session:
                claimed = session.execute(
                    text(
                        """
                        UPDATE outgoing_mail SET next_attempt_at = :lease_until, attempts = attempts + 1
                        WHERE id IN (
                            SELECT id FROM outgoing_mail
                            WHERE sent_at IS NULL AND next_attempt_at <= :now AND attempts < :max_attempts
                            ORDER BY next_attempt_at, id LIMIT :batch FOR UPDATE SKIP LOCKED)
                        RETURNING id, message, notice, created_at
                        """
                    ),
                    {"now": now, "lease_until": now + LEASE, "batch": batch, "max_attempts": MAIL_MAX_ATTEMPTS},
                ).all()
            for mail_id, raw, notice, created_at in sorted(claimed):  # in the order they were queued
                sent += self._send_one(int(mail_id), raw, notice, created_at)
            if len(claimed) < batch:
                return sent

    def _send_one(self, mail_id: int, raw: bytes | None, notice: Mapping[str, Any] | None, created_at: datetime) -> int:
        try:
            self._resources.mailer.send_message(self._message_of(raw, notice, created_at))
        except Exception as error:
            logger.warning("mail %s not sent (%s); retrying later", mail_id, type(error).__name__)
            with self._resources.unit_of_work() as session:
                session.execute(
                    text("UPDATE outgoing_mail SET last_error = :error, next_attempt_at = :retry WHERE id = :id"),
                    {"error": type(error).__name__, "retry": self._resources.now() + MAIL_RETRY, "id": mail_id},
                )
            return 0
        with self._resources.unit_of_work() as session:
            session.execute(
                # A sent message keeps no body: reset tokens and personal data leave the table.
                text(
                    "UPDATE outgoing_mail SET sent_at = :now, last_error = NULL, message = '', notice = NULL "
                    "WHERE id = :id"
                ),
                {"now": self._resources.now(), "id": mail_id},
            )
        return 1

    def _message_of(self, raw: bytes | None, notice: Mapping[str, Any] | None, created_at: datetime) -> EmailMessage:
        """A queued notice rendered as of its queueing (Date and DTSTAMP), or the message
        queued already rendered."""
        if notice is not None:
            return render_appointment_notice(notice_from_document(notice), sender=self._sender, stamp=created_at)
        from email import message_from_bytes, policy

        message = message_from_bytes(bytes(raw or b""), policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message

    # --- the pass ------------------------------------------------------------------------

    def dispatch_pass(self) -> DispatchSummary:
        """What the one-minute schedule runs (and `make dev` every few seconds)."""
        summary = DispatchSummary()
        summary.oldest_unpublished_seconds = self.outbox_lag_seconds()
        summary.resets_processed = self._resources.accounts.process_reset_requests()
        summary.published = self.publish_pending()
        summary.reminders_queued = self.queue_due_reminders()
        summary.deliveries_attempted, summary.deliveries_succeeded = self.deliver_due()
        summary.mail_sent = self.send_due_mail()
        summary.purged = self.purge()
        return summary

    def outbox_lag_seconds(self) -> float:
        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            oldest = session.execute(
                text("SELECT min(occurred_at) FROM outbox_events WHERE published_at IS NULL")
            ).scalar()
        return max(0.0, (now - oldest).total_seconds()) if oldest else 0.0

    def purge(self) -> int:
        """Published events after OUTBOX_RETENTION_DAYS; finished deliveries, sent mail and
        spent reminders after the same period; in short batches."""
        cutoff = self._resources.now() - timedelta(days=self._settings.outbox_retention_days)
        conditions = (
            ("outbox_events", "published_at IS NOT NULL AND published_at < :cutoff"),
            ("webhook_deliveries", "status <> 'pending' AND updated_at < :cutoff"),
            # Mail that could never be sent goes after a further 30 days.
            (
                "outgoing_mail",
                "(sent_at IS NOT NULL AND sent_at < :cutoff) "
                "OR created_at < CAST(:cutoff AS timestamptz) - interval '30 days'",
            ),
            ("reminders", "due_at < :cutoff"),
        )
        total = 0
        for table, condition in conditions:
            while True:
                with self._resources.unit_of_work() as session:
                    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                        text(
                            f"DELETE FROM {table} WHERE ctid IN "
                            f"(SELECT ctid FROM {table} WHERE {condition} LIMIT :batch)"
                        ),
                        {"cutoff": cutoff, "batch": PURGE_BATCH},
                    )
                total += result.rowcount
                if result.rowcount < PURGE_BATCH:
                    break
        return total

    def linger(self, seconds: float) -> None:
        """Events function: keep attempting deliveries that come due within ``seconds``
        (the first retry is 5 s after a failure; the minute schedule is too coarse)."""
        deadline = time.monotonic() + seconds
        while True:
            self.deliver_due()
            wait = self._next_delivery_in()
            if wait is None or time.monotonic() + wait > deadline:
                return
            time.sleep(max(wait, 0.05))

    def _next_delivery_in(self) -> float | None:
        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            nearest = session.execute(
                text("SELECT min(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'")
            ).scalar()
        return None if nearest is None else max(0.0, (nearest - now).total_seconds())


def lineage_uid(root_id: int) -> str:
    return f"appointment-{root_id}@reservations"


def _party(user: User, default_zone: str) -> Party:
    return Party(name=user.name, email=user.email, timezone=user.timezone or default_zone)


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
