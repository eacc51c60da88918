"""The right of access and the right to erasure: what is held about one user, and how an
account is erased while the appointments it took part in stay, anonymised.

Erasure keeps the user's row (appointments, history and the audit trail refer to it) but
replaces everything that identifies the person: the name, the e-mail (a unique tombstone,
so the address can register again), the password (a value no hash ever matches), the
provider profile, and every copy of their free text (notes, cancellation reasons) in
events, webhook deliveries, idempotent replies and queued mail."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, text
from sqlalchemy.orm import Session

from reservations.adapters.db import (
    Appointment,
    AppointmentHistory,
    AvailabilityDay,
    AvailabilityPeriod,
    EmailVerificationToken,
    IdempotencyRecord,
    LoginFailure,
    PasswordResetRequest,
    PasswordResetToken,
    RefreshToken,
    User,
    VisitType,
    Webhook,
)
from reservations.domain.accounts import ERASED_PASSWORD_HASH, email_key
from reservations.domain.booking import BookingService, appointment_view, to_json
from reservations.domain.errors import Conflict

ERASED_NAME = "Deleted user"
ERASURE_REASON = "account deleted"
TOMBSTONE_DOMAIN = "invalid.example"


def tombstone_email(user_id: int) -> str:
    return f"deleted-{user_id}-{secrets.token_hex(8)}@{TOMBSTONE_DOMAIN}"


def is_erased(user: User) -> bool:
    return user.password_hash == ERASED_PASSWORD_HASH


# --- export ------------------------------------------------------------------------------


def export_document(session: Session, user: User, now: datetime) -> dict[str, Any]:
    """Everything held about ``user``, as JSON; of other people only their ids."""
    appointments = session.scalars(
        select(Appointment)
        .where(or_(Appointment.patient_id == user.id, Appointment.provider_id == user.id))
        .order_by(Appointment.start_time, Appointment.id)
    ).all()
    ids = [a.id for a in appointments]
    history: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        for row in session.scalars(
            select(AppointmentHistory).where(AppointmentHistory.appointment_id.in_(ids)).order_by(AppointmentHistory.id)
        ):
            history[row.appointment_id].append(
                {
                    "at": row.at,
                    "from_status": row.from_status,
                    "to_status": row.to_status,
                    "actor_id": row.actor_id,
                    "actor_role": row.actor_role,
                    "request_id": row.request_id,
                }
            )
    audit = session.execute(
        text(
            "SELECT id, at, actor_id, actor_role, action, target_type, target_id, subject_id, request_id, "
            # Another actor's address is theirs, not this user's.
            "CASE WHEN actor_id = :id THEN source_ip END AS source_ip, details "
            "FROM audit_log WHERE actor_id = :id OR subject_id = :id "
            "OR (target_type IN ('user', 'provider') AND target_id = :id) ORDER BY id"
        ),
        {"id": user.id},
    ).mappings()
    document: dict[str, Any] = {
        "generated_at": now,
        "profile": {
            "id": user.id,
            "name": user.name,
            "email": user.email,
            "email_verified": user.email_verified,
            "role": user.role,
            "timezone": user.timezone,
            "created_at": user.created_at,
            "specialty": user.specialty,
            "bio": user.bio,
            "min_notice_hours": user.min_notice_hours,
            "horizon_days": user.horizon_days,
            "cancellation_notice_hours": user.cancellation_notice_hours,
            "max_appointments_per_day": user.max_appointments_per_day,
        },
        "notification_settings": {
            "notify_email": user.notify_email,
            "calendar_feed_enabled": user.calendar_feed_hash is not None,
        },
        "appointments": [
            {
                **appointment_view(a, now),
                "role": "patient" if a.patient_id == user.id else "provider",
                "history": history[a.id],
            }
            for a in appointments
        ],
        "availability": {
            "periods": [
                {"id": p.id, "start_date": p.start_date, "end_date": p.end_date, "windows": p.windows}
                for p in session.scalars(
                    select(AvailabilityPeriod)
                    .where(AvailabilityPeriod.provider_id == user.id)
                    .order_by(AvailabilityPeriod.id)
                )
            ],
            "days": [
                {"day": d.day, "kind": d.kind, "windows": d.windows}
                for d in session.scalars(
                    select(AvailabilityDay).where(AvailabilityDay.provider_id == user.id).order_by(AvailabilityDay.day)
                )
            ],
        },
        "visit_types": [
            {
                "id": v.id,
                "name": v.name,
                "duration_minutes": v.duration_minutes,
                "buffer_before_minutes": v.buffer_before_minutes,
                "buffer_after_minutes": v.buffer_after_minutes,
                "description": v.description,
                "active": v.active,
                "is_default": v.is_default,
                "created_at": v.created_at,
            }
            for v in session.scalars(select(VisitType).where(VisitType.provider_id == user.id).order_by(VisitType.id))
        ],
        "webhooks": [
            {
                "id": w.id,
                "url": w.url,
                "events": list(w.events),
                "description": w.description,
                "active": w.active,
                "failing_since": w.failing_since,
                "disabled_at": w.disabled_at,
                "created_at": w.created_at,
            }
            for w in session.scalars(select(Webhook).where(Webhook.owner_id == user.id).order_by(Webhook.id))
        ],
        "audit_entries": [dict(row) for row in audit],
    }
    return to_json(document)


# --- erasure -----------------------------------------------------------------------------


def check_erasable(session: Session, user: User, now: datetime) -> None:
    """The last admin cannot go; a provider must first cancel their upcoming bookings."""
    if user.role == "admin":
        others = session.scalar(
            select(func.count()).where(
                User.role == "admin", User.id != user.id, User.password_hash != ERASED_PASSWORD_HASH
            )
        )
        if not others:
            raise Conflict("the last admin cannot be deleted", code="last_admin")
    if user.role == "provider":
        upcoming = session.scalar(
            select(func.count()).where(
                Appointment.provider_id == user.id,
                Appointment.status == "confirmed",
                Appointment.start_time > now,
            )
        )
        if upcoming:
            raise Conflict(
                "cancel your upcoming confirmed appointments before deleting the account",
                code="has_future_appointments",
            )


def erase(session: Session, booking: BookingService, user: User) -> int:
    """Erase ``user`` (locked by the caller) in ``session``; the number of upcoming
    appointments cancelled (their events tell the other party)."""
    uid = user.id
    old_key = email_key(user.email)
    party = or_(Appointment.patient_id == uid, Appointment.provider_id == uid)
    as_patient = list(session.scalars(select(Appointment.id).where(Appointment.patient_id == uid)))
    # Reasons the user wrote when they cancelled (as whichever party, or as an admin).
    reasons = list(
        session.scalars(
            select(AppointmentHistory.appointment_id)
            .where(AppointmentHistory.actor_id == uid, AppointmentHistory.to_status == "cancelled")
            .distinct()
        )
    )
    # Cleared first, so the cancellations below carry no note into their events.
    if as_patient:
        session.execute(
            text("UPDATE appointments SET note = NULL WHERE id = ANY(CAST(:ids AS bigint[]))"), {"ids": as_patient}
        )
    if reasons:
        session.execute(
            text("UPDATE appointments SET cancellation_reason = NULL WHERE id = ANY(CAST(:ids AS bigint[]))"),
            {"ids": reasons},
        )
    session.expire_all()
    upcoming = list(
        session.scalars(
            select(Appointment.id)
            .where(party, Appointment.status.in_(("reserved", "confirmed")), Appointment.start_time > booking.now)
            .order_by(Appointment.id)
        )
    )
    cancelled = sum(1 for appointment_id in upcoming if booking.cancel_for_erasure(appointment_id, ERASURE_REASON))
    _scrub_copies(session, "note", as_patient)
    _scrub_copies(session, "cancellation_reason", reasons)
    all_ids = list(session.scalars(select(Appointment.id).where(party)))
    _delete_mail(session, uid, all_ids)

    for model in (RefreshToken, PasswordResetToken, EmailVerificationToken, IdempotencyRecord):
        session.execute(delete(model).where(model.user_id == uid))
    session.execute(delete(Webhook).where(Webhook.owner_id == uid))  # their deliveries cascade
    session.execute(delete(PasswordResetRequest).where(func.lower(PasswordResetRequest.email) == old_key))
    session.execute(delete(LoginFailure).where(LoginFailure.email_key == old_key))
    # Nobody can book an erased provider any more.
    session.execute(delete(AvailabilityPeriod).where(AvailabilityPeriod.provider_id == uid))
    session.execute(delete(AvailabilityDay).where(AvailabilityDay.provider_id == uid))
    session.execute(text("SELECT audit_forget_addresses(:id)"), {"id": uid})

    user.name = ERASED_NAME
    user.email = tombstone_email(uid)
    user.password_hash = ERASED_PASSWORD_HASH
    user.token_version += 1
    user.calendar_feed_hash = None
    user.notify_email = False
    user.email_verified = False
    user.specialty = None
    user.bio = None
    session.flush()
    return cancelled


def _scrub_copies(session: Session, field: str, appointment_ids: Sequence[int]) -> None:
    """Null ``field`` in every stored copy of these appointments' views: outbox events,
    webhook deliveries (``data`` of their payload) and idempotent replies."""
    if not appointment_ids:
        return
    params = {"ids": list(appointment_ids), "key": field}
    for path in ("appointment", "previous"):
        session.execute(
            text(
                f"""
                UPDATE outbox_events SET data = jsonb_set(data, '{{{path},{field}}}', 'null')
                WHERE appointment_id = ANY(CAST(:ids AS bigint[])) AND jsonb_typeof(data->'{path}') = 'object'
                    AND data->'{path}' ? :key
                """
            ),
            params,
        )
    for path in ("appointment", "previous"):
        session.execute(
            text(
                f"""
                UPDATE webhook_deliveries SET payload = jsonb_set(payload, '{{data,{path},{field}}}', 'null')
                WHERE jsonb_typeof(payload->'data'->'{path}') = 'object'
                    AND payload->'data'->'{path}' ? :key
                    AND (payload->'data'->'{path}'->>'id')::bigint = ANY(CAST(:ids AS bigint[]))
                """
            ),
            params,
        )
    session.execute(
        text(
            f"""
            UPDATE idempotency_records SET response = jsonb_set(response, '{{{field}}}', 'null')
            WHERE response ? :key AND response ? 'id' AND (response->>'id')::bigint = ANY(CAST(:ids AS bigint[]))
            """
        ),
        params,
    )


def _delete_mail(session: Session, user_id: int, appointment_ids: Sequence[int]) -> None:
    """Mail to the user, and mail to anyone about the user's appointments (it names them)."""
    session.execute(
        text(
            """
            DELETE FROM outgoing_mail m
            WHERE m.user_id = :uid
               OR split_part(m.dedupe_key, ':', 1) IN (
                    SELECT e.id::text FROM outbox_events e
                    WHERE e.appointment_id = ANY(CAST(:ids AS bigint[])) OR e.patient_id = :uid OR e.provider_id = :uid)
               OR (split_part(m.dedupe_key, ':', 1) = 'reminder'
                   AND split_part(m.dedupe_key, ':', 2) = ANY(CAST(:texts AS text[])))
            """
        ),
        {"uid": user_id, "ids": list(appointment_ids), "texts": [str(i) for i in appointment_ids]},
    )
