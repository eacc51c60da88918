"""Reserve, confirm, cancel, reschedule and attendance, each recorded in the history.
Double booking is impossible in Postgres itself: the exclusion constraints reject any
overlapping active row; this module turns those rejections into the right answer and
expires stale holds lazily, in the same transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from reservations.adapters.db import (
    Appointment,
    AppointmentHistory,
    IdempotencyRecord,
    User,
    VisitType,
    sqlstate,
)
from reservations.domain.audit import request_source_ip
from reservations.domain.availability import generate_slots, slot_on_grid
from reservations.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated, Unprocessable
from reservations.domain.policy import MAX_BUSY_SPAN, BookingPolicy, ProviderRules, VisitSpec
from reservations.domain.scheduling import (
    EARLIEST_DATE,
    LATEST_DATE,
    ProviderSchedule,
    availability_from_json,
    bump_slot_days,
    days_spanned,
    detached,
    no_such_provider,
    no_such_visit_type,
    visit_fits,
)

if TYPE_CHECKING:
    from reservations.adapters.security import AccessClaims

IDEMPOTENCY_TTL = timedelta(hours=24)
STATUSES = ("reserved", "confirmed", "cancelled", "expired", "rescheduled", "completed", "no_show")
ATTENDANCE = ("completed", "no_show")
# Statuses that keep their range taken (and count towards a daily cap) for good: an
# attended visit goes on occupying its time after attendance is recorded.
OCCUPYING = ("confirmed", *ATTENDANCE)
ATTENDANCE_CHANGE_WINDOW = timedelta(days=7)
PROVIDER_OVERLAP = "appointments_provider_no_overlap"
PATIENT_OVERLAP = "appointments_patient_no_overlap"
# Sent as the driver's own SQL: no SQLAlchemy statement to compile or look up.
_QUEUE_BOOKING = (
    "SELECT queue_booking(%s::bigint, %s::bigint, %s::timestamptz, %s::text, %s::timestamptz, %s::timestamptz, "
    "%s::timestamptz, %s::timestamptz, %s::interval, %s::integer[], %s::text, %s::timestamptz, %s::timestamptz, "
    "%s::text[], %s::bigint, %s::date, %s::date)"
)
_PLACE_APPOINTMENT = (
    "SELECT place_appointment(%s::bigint, %s::bigint, %s::bigint, %s::timestamptz, %s::timestamptz, "
    "%s::timestamptz, %s::timestamptz, %s::text, %s::timestamptz, %s::text, %s::bigint, %s::timestamptz, "
    "%s::bigint, %s::text, %s::text, %s::text, %s::date[])"
)


@dataclass(frozen=True)
class ReservationContext:
    """A patient's reservation's first read: the patient (its row locked), the provider
    (FOR SHARE) and the visit type, either None where none was found."""

    patient: User
    provider: User | None
    visit_type: VisitType | None
    provider_id: int
    visit_type_id: int | None

    def provider_and_visit_type(self) -> tuple[User, VisitType]:
        """What `ProviderSchedule.provider_and_visit_type` answers, with its errors."""
        if self.provider is None:
            raise no_such_provider(self.provider_id)
        if self.visit_type is None:
            raise no_such_visit_type(self.provider_id, self.visit_type_id)
        return self.provider, self.visit_type


_RESERVATION_CONTEXT = "SELECT reservation_context(%s::bigint, %s::integer, %s::text, %s::bigint, %s::bigint)"


def reservation_context(
    session: Session, caller: AccessClaims, provider_id: int, visit_type_id: int | None
) -> ReservationContext:
    """One call of the database's `reservation_context` function (migration 0010): the
    caller's row, locked FOR NO KEY UPDATE (one patient's bookings run one at a time),
    then the provider's FOR SHARE and the visit type (its default when none is named).
    Raises as `current_user` would; the provider's and visit type's errors are raised
    where the booking reads them (`ReservationContext.provider_and_visit_type`)."""
    arguments = (caller.user_id, caller.token_version, caller.role, provider_id, visit_type_id)
    found = session.connection().exec_driver_sql(_RESERVATION_CONTEXT, arguments).scalar_one()
    if found["caller"] is None:
        raise Unauthenticated("token has been revoked", code="token_revoked")
    provider, visit_type = found["provider"], found["visit_type"]
    return ReservationContext(
        patient=detached(User, found["caller"]),
        provider=detached(User, provider) if provider is not None else None,
        visit_type=detached(VisitType, visit_type) if visit_type is not None else None,
        provider_id=provider_id,
        visit_type_id=visit_type_id,
    )


@dataclass(frozen=True)
class MoveContext:
    """A move's first read: the caller, the appointment (its patient's row, then its own,
    locked), its provider (FOR SHARE) and the visit type it moves to (its own when none
    is named); each None where none was found."""

    caller: User
    appointment: Appointment | None
    provider: User | None
    visit_type: VisitType | None
    appointment_id: int
    visit_type_id: int | None

    def moved(self) -> Appointment:
        if self.appointment is None:
            raise NotFound(f"appointment {self.appointment_id} not found", code="appointment_not_found")
        return self.appointment

    def provider_row(self) -> User:
        if self.provider is None:
            raise no_such_provider(self.moved().provider_id)
        return self.provider

    def visit_type_row(self) -> VisitType:
        if self.visit_type is None:
            raise no_such_visit_type(self.moved().provider_id, self.visit_type_id)
        return self.visit_type


_MOVE_CONTEXT = "SELECT move_context(%s::bigint, %s::integer, %s::text, %s::bigint, %s::bigint)"


def move_context(session: Session, caller: AccessClaims, appointment_id: int, visit_type_id: int | None) -> MoveContext:
    """One call of the database's `move_context` function (migration 0010), taking a
    move's locks in the order `BookingService.reschedule` needs them. Raises as
    `current_user` would; the rest is raised where the move reads it."""
    arguments = (caller.user_id, caller.token_version, caller.role, appointment_id, visit_type_id)
    found = session.connection().exec_driver_sql(_MOVE_CONTEXT, arguments).scalar_one()
    if found["caller"] is None:
        raise Unauthenticated("token has been revoked", code="token_revoked")
    appointment, provider, visit_type = found["appointment"], found["provider"], found["visit_type"]
    return MoveContext(
        caller=detached(User, found["caller"]),
        appointment=detached(Appointment, appointment) if appointment is not None else None,
        provider=detached(User, provider) if provider is not None else None,
        visit_type=detached(VisitType, visit_type) if visit_type is not None else None,
        appointment_id=appointment_id,
        visit_type_id=visit_type_id,
    )


def constraint_name(error: DBAPIError) -> str | None:
    details = error.orig.args[0] if error.orig is not None and error.orig.args else None
    return str(details.get("n")) if isinstance(details, dict) and details.get("n") else None


def grid_start(start_time: datetime) -> datetime:
    """A client's start time in UTC (naive means UTC), refused unless on the 15-minute grid."""
    start = start_time if start_time.tzinfo else start_time.replace(tzinfo=UTC)
    try:
        start = start.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:45-14:00 lies past datetime's range in UTC
        raise Unprocessable("start_time is out of range", code="invalid_start_time") from None
    if not slot_on_grid(start):
        raise Unprocessable("start_time must be on the 15-minute grid (:00, :15, :30, :45)", code="off_grid")
    return start


def utc_days(start: datetime, end: datetime) -> list[int]:
    """The UTC days a half-open range touches, ascending, as day ordinals."""
    first = start.astimezone(UTC).date().toordinal()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date().toordinal()
    return list(range(first, last + 1))


def effective_status(appointment: Appointment, now: datetime) -> str:
    """A hold past its deadline is expired even before anything marks it so."""
    if appointment.status == "reserved" and appointment.expires_at is not None and appointment.expires_at <= now:
        return "expired"
    return appointment.status


@dataclass(frozen=True)
class Placement:
    """Where a new appointment goes: the provider, visit type, start and its status."""

    provider: User
    visit_type: VisitType
    start: datetime
    status: str
    expires_at: datetime | None


class BookingService:
    """Every transition of an appointment, each recorded in its history in the same
    transaction, under the exclusion constraints that make double booking impossible."""

    def __init__(
        self,
        session: Session,
        *,
        policy: BookingPolicy,
        now: datetime,
        request_id: str | None = None,
        context: ReservationContext | MoveContext | None = None,
    ) -> None:
        """``context``: a reservation's or a move's first read, already done with the
        caller's token check (the patient's row it holds FOR NO KEY UPDATE is not locked
        again)."""
        self.session = session
        self.policy = policy
        self.now = now
        self.request_id = request_id
        self._context = context
        self._locked_patients: set[int] = set()
        if isinstance(context, ReservationContext):
            self._locked_patients.add(context.patient.id)
        elif isinstance(context, MoveContext) and context.appointment is not None:
            self._locked_patients.add(context.appointment.patient_id)

    def _lock_patient(self, patient_id: int) -> None:
        """One patient's bookings run one at a time, so the hold limit cannot be raced past.
        FOR NO KEY UPDATE: it serialises this patient's bookings but, unlike FOR UPDATE,
        not the foreign-key checks of rows referencing the patient (a keyed confirm's
        idempotency record), which would otherwise deadlock with it."""
        if patient_id not in self._locked_patients:
            self.session.execute(select(User.id).where(User.id == patient_id).with_for_update(key_share=True))
            self._locked_patients.add(patient_id)

    # --- history -------------------------------------------------------------------

    def _record(self, appointment_id: int, from_status: str | None, to_status: str, actor: User | None) -> None:
        self.session.add(
            AppointmentHistory(
                appointment_id=appointment_id,
                at=self.now,
                from_status=from_status,
                to_status=to_status,
                actor_id=actor.id if actor else None,
                actor_role=actor.role if actor else "system",
                request_id=self.request_id,
                # A person's transition carries their request's address to its audit entry.
                source_ip=request_source_ip() if actor else None,
            )
        )

    # --- reserve and reschedule ----------------------------------------------------

    def reserve(
        self,
        patient: User,
        provider_id: int,
        start_time: datetime,
        visit_type_id: int | None = None,
        note: str | None = None,
    ) -> Appointment:
        if patient.role != "patient":
            raise Forbidden("only patients can reserve", code="wrong_role")
        if self.policy.require_verified_email and not patient.email_verified:
            raise Forbidden(
                "confirm your e-mail address first (POST /email-verification/request)", code="email_not_verified"
            )
        start = grid_start(start_time)
        schedule = ProviderSchedule(self.session, policy=self.policy, now=self.now)
        if isinstance(self._context, ReservationContext):
            provider, visit_type = self._context.provider_and_visit_type()
        else:
            provider, visit_type = schedule.provider_and_visit_type(provider_id, visit_type_id)
        placement = Placement(provider, visit_type, start, "reserved", self.now + self.policy.hold_ttl)
        return self._place(schedule, patient.id, placement, note=note, actor=patient)

    def reschedule(self, actor: User, start_time: datetime) -> Appointment:
        """Move an appointment in one transaction: the old one becomes ``rescheduled``
        (it stops counting, so the new time may overlap it) and a successor takes its
        status (a hold keeps its deadline); if the new slot cannot be had, the whole
        transaction rolls back and nothing changed. The service's context is the move's
        first read (`move_context`), which took its first locks: the patient's row, then
        the appointment's."""
        context = self._context
        if not isinstance(context, MoveContext):
            raise TypeError("a move is read with move_context first")
        start = grid_start(start_time)
        old = context.moved()
        self._locked_patients.add(old.patient_id)
        if effective_status(old, self.now) not in ("reserved", "confirmed"):
            raise Conflict("only held or confirmed appointments can be rescheduled", code="not_reschedulable")
        schedule = ProviderSchedule(self.session, policy=self.policy, now=self.now)
        provider = context.provider_row()
        self._check_change_allowed(actor, old, provider, schedule)
        visit_type = context.visit_type_row()
        previous = old.status
        placement = Placement(provider, visit_type, start, previous, old.expires_at)
        return self._place(
            schedule,
            old.patient_id,
            placement,
            note=old.note,
            replacing=old,
            actor=actor,
            also_bump=days_spanned(old.busy_start, old.busy_end),
        )

    def _place(
        self,
        schedule: ProviderSchedule,
        patient_id: int,
        placement: Placement,
        *,
        note: str | None,
        replacing: Appointment | None = None,
        actor: User,
        also_bump: Sequence[date] = (),
    ) -> Appointment:
        """Check the provider's rules for a new appointment and insert it; the exclusion
        constraints decide the races. ``replacing``: the appointment it moves, marked
        ``rescheduled`` once this one holds its locks, so it stops counting before the
        checks and the insert. ``also_bump``: that appointment's days, bumped in the same
        statement (day rows are always locked in ascending order, so two moves in
        opposite directions cannot deadlock).

        Locks are taken in one order by every caller: the patient's row, stale holds in
        the way, the daily-cap lock, the slot-day locks, then the appointment rows."""
        provider, start = placement.provider, placement.start
        visit = VisitSpec.of(placement.visit_type)
        rules = schedule.rules(provider)
        if start < self.now + rules.min_notice:
            hours = rules.min_notice.total_seconds() / 3600
            raise InvalidRequest(f"reservations need at least {hours:g} hours of notice", code="too_soon")
        if start > self.now + rules.horizon:
            raise InvalidRequest(f"reservations can be made at most {rules.horizon.days} days ahead", code="too_far")
        end = start + visit.duration
        busy_start, busy_end = start - visit.before, end + visit.after
        self._lock_patient(patient_id)
        zone = ZoneInfo(provider.timezone)
        local_day = start.astimezone(zone).date()
        days = sorted({*days_spanned(busy_start, busy_end), *also_bump})
        self.session.flush()  # the function below is sent past the ORM, which must be written first
        queued = self._queue(
            provider.id, patient_id, start, end, busy_start, busy_end, local_day, zone, rules, replacing
        )
        if replacing is not None:
            # The function marked it: the loaded object says so too, with nothing to write.
            set_committed_value(replacing, "status", "rescheduled")
            set_committed_value(replacing, "updated_at", self.now)
        if rules.daily_cap is not None and queued["booked"] >= rules.daily_cap:
            raise Conflict(
                f"the provider takes at most {rules.daily_cap} appointments on {local_day}",
                code="daily_limit_reached",
            )
        availability = availability_from_json(queued["periods"], queued["days"])
        offered = frozenset(slot for slot, _ in generate_slots(availability, zone, local_day, local_day))
        if not visit_fits(offered, start, visit, zone):
            raise Conflict("the provider does not offer this slot", code="slot_unavailable")
        # Both limits as the function counted them, serialised by the patient's row lock
        # above, so concurrent reservations cannot race past either.
        active_holds, ahead = queued["holds"], queued["ahead"]
        if placement.status == "reserved" and active_holds >= self.policy.max_active_holds:
            raise Conflict(
                f"you already hold {self.policy.max_active_holds} unconfirmed reservations; confirm or cancel one",
                code="too_many_holds",
            )
        if ahead >= self.policy.max_future_appointments:
            raise Conflict(
                f"you already have {self.policy.max_future_appointments} upcoming appointments",
                code="too_many_appointments",
            )
        appointment = Appointment(
            provider_id=provider.id,
            patient_id=patient_id,
            visit_type_id=placement.visit_type.id,
            start_time=start,
            end_time=end,
            busy_start=busy_start,
            busy_end=busy_end,
            status=placement.status,
            expires_at=placement.expires_at,
            note=note,
            rescheduled_from=replacing.id if replacing is not None else None,
            created_at=self.now,
            updated_at=self.now,
        )
        # No savepoint: a conflict fails the request, whose whole transaction is rolled back.
        try:
            appointment.id = self._insert_placed(appointment, days, actor, replacing)
        except DBAPIError as error:  # pg8000 reports 23P01 as a ProgrammingError
            if sqlstate(error) == "23P01" and constraint_name(error) == PATIENT_OVERLAP:
                raise Conflict("you already have an appointment at this time", code="overlapping_appointment") from None
            if sqlstate(error) == "23P01":
                raise Conflict("this slot is already held or booked", code="slot_unavailable") from None
            if sqlstate(error) == "23505":  # appointments_rescheduled_from: moved twice at once
                raise Conflict("this appointment was rescheduled already", code="not_reschedulable") from None
            raise
        return appointment

    def _insert_placed(
        self, appointment: Appointment, days: Sequence[date], actor: User, replacing: Appointment | None
    ) -> int:
        """One call of `place_appointment` (migration 0010): the appointment, its history
        entry by ``actor`` (for a move, first the entry of ``replacing``, which now points
        to it) and its days' version bumps. Returns the new id."""
        arguments = (
            appointment.provider_id,
            appointment.patient_id,
            appointment.visit_type_id,
            appointment.start_time,
            appointment.end_time,
            appointment.busy_start,
            appointment.busy_end,
            appointment.status,
            appointment.expires_at,
            appointment.note,
            appointment.rescheduled_from,
            self.now,
            actor.id,
            actor.role,
            self.request_id,
            request_source_ip(),  # a person's transition carries their request's address
            sorted(set(days)),
        )
        placed = int(self.session.connection().exec_driver_sql(_PLACE_APPOINTMENT, arguments).scalar_one())
        if replacing is not None:
            set_committed_value(replacing, "rescheduled_to", placed)
        return placed

    def _queue(
        self,
        provider_id: int,
        patient_id: int,
        start: datetime,
        end: datetime,
        busy_start: datetime,
        busy_end: datetime,
        local_day: date,
        zone: ZoneInfo,
        rules: ProviderRules,
        replacing: Appointment | None,
    ) -> dict[str, Any]:
        """One call of `queue_booking` (migration 0010), which, in this order: expires the
        stale holds in the way (lazy expiry: correctness never waits for the sweeper);
        under a daily cap, takes the provider-local day's advisory lock, so the cap cannot
        be raced past (an advisory lock, not the day's version row: confirm, cancel and
        expiry bump those last, after their appointment rows, and the insert may wait on
        such a row, so holding a version row here could deadlock); waits for earlier
        writers of these times on one advisory lock per UTC day the busy range touches
        (racers for overlapping times then insert one at a time and meet the winner's
        committed row - an immediate slot_unavailable - instead of deadlocking in the
        exclusion checks); marks ``replacing`` rescheduled (only now: a racer queued
        above whose range overlaps the old times would otherwise wait on this change
        while holding the slot lock); then answers the provider's active bookings of the
        capped day, the patient's live holds and upcoming appointments, and the
        availability rows of the day."""
        capped = rules.daily_cap is not None
        arguments = (
            provider_id,
            patient_id,
            self.now,
            self.request_id,
            busy_start,
            busy_end,
            start,
            end,
            MAX_BUSY_SPAN,
            utc_days(busy_start, busy_end),
            f"daily-cap:{provider_id}:{local_day.isoformat()}" if capped else None,
            datetime.combine(local_day, time.min, zone),
            datetime.combine(local_day + timedelta(days=1), time.min, zone),
            list(OCCUPYING),
            replacing.id if replacing is not None else None,
            local_day,
            local_day,
        )
        found: dict[str, Any] = self.session.connection().exec_driver_sql(_QUEUE_BOOKING, arguments).scalar_one()
        return found

    # --- confirm / cancel / attendance ---------------------------------------------

    def confirm(self, patient: User, appointment_id: int) -> Appointment:
        if patient.role != "patient":
            raise Forbidden("only patients can confirm", code="wrong_role")
        # The same row lock as the expirer's: confirm and expiry can never both win.
        confirmed = self.session.scalars(
            update(Appointment)
            .where(
                Appointment.id == appointment_id,
                Appointment.patient_id == patient.id,
                Appointment.status == "reserved",
                Appointment.expires_at > self.now,
            )
            .values(status="confirmed", expires_at=None, updated_at=self.now)
            .returning(Appointment)
        ).first()
        if confirmed is not None:
            self._record(confirmed.id, "reserved", "confirmed", patient)
            bump_slot_days(self.session, confirmed.provider_id, days_spanned(confirmed.busy_start, confirmed.busy_end))
            return confirmed
        existing = self._own(appointment_id, patient_id=patient.id)
        status = effective_status(existing, self.now)
        if status == "confirmed":
            return existing
        if status == "cancelled":
            raise Conflict("this appointment was cancelled", code="appointment_cancelled")
        if status != "expired":
            raise Conflict(f"this appointment is {status}", code="not_confirmable")
        raise Conflict("the reservation expired before it was confirmed", code="reservation_expired")

    def cancel(self, actor: User, appointment_id: int, reason: str | None = None) -> Appointment:
        appointment = self._locked_party(actor, appointment_id)
        status = effective_status(appointment, self.now)
        if status == "cancelled":
            return appointment  # as before: cancelling twice answers with it, even inside the window
        if status == "expired":
            raise Conflict("the reservation already expired", code="reservation_expired")
        if status not in ("reserved", "confirmed"):
            raise Conflict(f"a {status} appointment cannot be cancelled", code="not_cancellable")
        schedule = ProviderSchedule(self.session, policy=self.policy, now=self.now)
        self._check_change_allowed(actor, appointment, schedule.provider(appointment.provider_id), schedule)
        previous = appointment.status
        appointment.status = "cancelled"
        appointment.expires_at = None
        appointment.updated_at = self.now
        appointment.cancellation_reason = reason
        appointment.cancelled_by = actor.role
        self.session.flush()
        self._record(appointment.id, previous, "cancelled", actor)
        bump_slot_days(
            self.session, appointment.provider_id, days_spanned(appointment.busy_start, appointment.busy_end)
        )
        return appointment

    def cancel_for_erasure(self, appointment_id: int, reason: str) -> Appointment | None:
        """A system cancellation (an account erased): no actor, no change window; the
        history row (actor_role 'system') emits the event that tells the other party.
        None when the appointment is no longer an upcoming hold or booking."""
        appointment = self.session.scalars(
            select(Appointment)
            .where(Appointment.id == appointment_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).first()
        if appointment is None or appointment.start_time <= self.now:
            return None
        if effective_status(appointment, self.now) not in ("reserved", "confirmed"):
            return None
        previous = appointment.status
        appointment.status = "cancelled"
        appointment.expires_at = None
        appointment.updated_at = self.now
        appointment.cancellation_reason = reason
        appointment.cancelled_by = "system"
        self.session.flush()
        self._record(appointment.id, previous, "cancelled", None)
        bump_slot_days(
            self.session, appointment.provider_id, days_spanned(appointment.busy_start, appointment.busy_end)
        )
        return appointment

    def record_attendance(self, actor: User, appointment_id: int, attendance: str) -> Appointment:
        """``completed`` or ``no_show``, by its provider or an admin, once a confirmed
        appointment's start has passed; changeable between the two for 7 days."""
        if actor.role not in ("provider", "admin"):
            raise Forbidden("only the provider or an admin records attendance", code="wrong_role")
        appointment = self._locked_party(actor, appointment_id)
        if actor.role == "provider" and appointment.provider_id != actor.id:
            raise NotFound(f"appointment {appointment_id} not found", code="appointment_not_found")
        allowed = appointment.status == "confirmed" or (
            appointment.status in ATTENDANCE and self.now <= appointment.start_time + ATTENDANCE_CHANGE_WINDOW
        )
        if not allowed or appointment.start_time > self.now:
            raise Conflict(
                "attendance is recorded for a confirmed appointment whose start has passed "
                f"(and can be changed for {ATTENDANCE_CHANGE_WINDOW.days} days)",
                code="attendance_not_allowed",
            )
        if appointment.status == attendance:
            return appointment
        previous = appointment.status
        appointment.status = attendance
        appointment.updated_at = self.now
        self.session.flush()
        self._record(appointment.id, previous, attendance, actor)
        return appointment

    def _check_change_allowed(
        self, actor: User, appointment: Appointment, provider: User, schedule: ProviderSchedule
    ) -> None:
        if appointment.start_time <= self.now:
            raise Conflict("this appointment's start has passed", code="appointment_in_past")
        notice = schedule.rules(provider).cancellation_notice
        if actor.role == "patient" and appointment.start_time - self.now < notice:
            hours = notice.total_seconds() / 3600
            raise Conflict(
                f"changes within {hours:g} hours of the start are made by the provider", code="change_window_closed"
            )

    def _party(self, actor: User, appointment_id: int, *, lock: bool = False) -> Appointment:
        """The appointment if the actor is a party to it or an admin (else 404)."""
        query = select(Appointment).where(Appointment.id == appointment_id)
        if actor.role != "admin":
            query = query.where(or_(Appointment.patient_id == actor.id, Appointment.provider_id == actor.id))
        if lock:
            query = query.with_for_update().execution_options(populate_existing=True)
        found = self.session.scalars(query).first()
        if found is None:
            raise NotFound(f"appointment {appointment_id} not found", code="appointment_not_found")
        return found

    def _locked_party(self, actor: User, appointment_id: int) -> Appointment:
        return self._party(actor, appointment_id, lock=True)

    def _own(self, appointment_id: int, *, patient_id: int) -> Appointment:
        found = self.session.scalars(
            select(Appointment).where(Appointment.id == appointment_id, Appointment.patient_id == patient_id)
        ).first()
        if found is None:
            raise NotFound(f"appointment {appointment_id} not found", code="appointment_not_found")
        return found

    # --- reading -------------------------------------------------------------------

    def _visible(self, actor: User) -> ColumnElement[bool]:
        if actor.role == "admin":
            return true()
        return or_(Appointment.patient_id == actor.id, Appointment.provider_id == actor.id)

    def get(self, actor: User, appointment_id: int) -> Appointment:
        found = self.session.scalars(
            select(Appointment).where(Appointment.id == appointment_id, self._visible(actor))
        ).first()
        if found is None:
            raise NotFound(f"appointment {appointment_id} not found", code="appointment_not_found")
        return found

    def history(self, actor: User, appointment_id: int) -> Sequence[AppointmentHistory]:
        self.get(actor, appointment_id)
        return self.session.scalars(
            select(AppointmentHistory)
            .where(AppointmentHistory.appointment_id == appointment_id)
            .order_by(AppointmentHistory.id)
        ).all()

    def list_own(
        self,
        actor: User,
        *,
        status: str | None,
        first: date | None,
        last: date | None,
        limit: int,
        offset: int,
        provider_id: int | None = None,
        patient_id: int | None = None,
    ) -> Sequence[Appointment]:
        """One's own appointments; admins (the desk) see everyone's, filtered by
        ``provider_id`` and ``patient_id``, which patients and providers may not use."""
        if actor.role == "admin":
            query = select(Appointment)
            if provider_id is not None:
                query = query.where(Appointment.provider_id == provider_id)
            if patient_id is not None:
                query = query.where(Appointment.patient_id == patient_id)
        else:
            if provider_id is not None or patient_id is not None:
                raise Forbidden("only admins filter by provider_id or patient_id", code="admin_required")
            owner = Appointment.patient_id if actor.role == "patient" else Appointment.provider_id
            query = select(Appointment).where(owner == actor.id)
        query = self._within(query, first, last).where(*self._with_status(status))
        return self.session.scalars(
            query.order_by(Appointment.start_time, Appointment.id).limit(limit).offset(offset)
        ).all()

    @staticmethod
    def _within(query: Select[Appointment], first: date | None, last: date | None) -> Select[Appointment]:
        for value in (first, last):
            if value is not None and not EARLIEST_DATE <= value <= LATEST_DATE:
                raise Unprocessable(
                    f"dates must be between {EARLIEST_DATE} and {LATEST_DATE}", code="invalid_date_range"
                )
        if first and last and last < first:
            raise Unprocessable("end_date must not be before start_date", code="invalid_date_range")
        if first:
            query = query.where(Appointment.start_time >= datetime.combine(first, time.min, UTC))
        if last:
            query = query.where(Appointment.start_time < datetime.combine(last + timedelta(days=1), time.min, UTC))
        return query

    def _with_status(self, status: str | None) -> list[ColumnElement[bool]]:
        """A hold past its deadline lists as expired, whether or not it was marked so."""
        if status == "reserved":
            return [Appointment.status == "reserved", Appointment.expires_at > self.now]
        if status == "expired":
            stale_hold = and_(Appointment.status == "reserved", Appointment.expires_at <= self.now)
            return [or_(Appointment.status == "expired", stale_hold)]
        return [] if status is None else [Appointment.status == status]


# --- what clients see --------------------------------------------------------------


def appointment_view(appointment: Appointment, now: datetime) -> dict[str, Any]:
    """An appointment as the API shows it (status as of ``now``); also what an idempotent
    replay returns, so it is stored as JSON."""
    return {
        "id": appointment.id,
        "slot_id": appointment.id,
        "provider_id": appointment.provider_id,
        "patient_id": appointment.patient_id,
        "visit_type_id": appointment.visit_type_id,
        "start_time": appointment.start_time,
        "end_time": appointment.end_time,
        "status": effective_status(appointment, now),
        "expires_at": appointment.expires_at,
        "cancellation_reason": appointment.cancellation_reason,
        "cancelled_by": appointment.cancelled_by,
        "rescheduled_from": appointment.rescheduled_from,
        "rescheduled_to": appointment.rescheduled_to,
        "note": appointment.note,
    }


# --- idempotency -----------------------------------------------------------------------


@dataclass(frozen=True)
class Replayable:
    """A write's result, and whether it is the stored result of an earlier request."""

    value: dict[str, Any]
    replayed: bool = False


def request_fingerprint(operation: str, payload: Mapping[str, Any]) -> str:
    canonical = json.dumps({"operation": operation, "payload": payload}, sort_keys=True, default=_json_value)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # The notation of the request as clients sent it through JSON (UTC as "Z").
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return str(value)


def to_json(value: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(value, default=_json_value))
    return result


class IdempotencyStore:
    """Replays of a keyed request return the first successful result, changing nothing
    more. Failed requests are not stored: retrying one runs it again."""

    def __init__(self, session: Session, *, now: datetime) -> None:
        self.session = session
        self.now = now

    def begin(self, user_id: int, key: str, operation: str, fingerprint: str) -> dict[str, Any] | None:
        # Concurrent requests with one key wait for each other, so only one executes.
        self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"idem:{user_id}:{key}"})
        record = self.session.get(IdempotencyRecord, (user_id, key))
        if record is None or record.created_at <= self.now - IDEMPOTENCY_TTL:
            return None
        if record.operation != operation or record.request_hash != fingerprint:
            raise Unprocessable(
                "this Idempotency-Key was already used with a different request", code="idempotency_key_reused"
            )
        return record.response

    def save(self, user_id: int, key: str, operation: str, fingerprint: str, result: Mapping[str, Any]) -> None:
        values = {
            "user_id": user_id,
            "key": key,
            "operation": operation,
            "request_hash": fingerprint,
            "response": to_json(result),
            "created_at": self.now,
        }
        statement = pg_insert(IdempotencyRecord).values(**values)
        self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["user_id", "key"], set_={k: v for k, v in values.items() if k not in ("user_id", "key")}
            )
        )
