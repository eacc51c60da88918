"""Reserve, confirm and cancel. Double booking is impossible in Postgres itself: the
exclusion constraints reject any overlapping active row; this module turns those
rejections into the right answer and expires stale holds lazily, in the same transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from reservations.adapters.db import Appointment, IdempotencyRecord, User, sqlstate
from reservations.domain.availability import generate_slots, slot_on_grid
from reservations.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unprocessable
from reservations.domain.policy import MAX_BUSY_SPAN, BookingPolicy, VisitSpec
from reservations.domain.scheduling import (
    EARLIEST_DATE,
    LATEST_DATE,
    ProviderSchedule,
    bump_slot_days,
    days_spanned,
    visit_fits,
)

IDEMPOTENCY_TTL = timedelta(hours=24)
STATUSES = ("reserved", "confirmed", "cancelled", "expired")
PROVIDER_OVERLAP = "appointments_provider_no_overlap"
PATIENT_OVERLAP = "appointments_patient_no_overlap"


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


def effective_status(appointment: Appointment, now: datetime) -> str:
    """A hold past its deadline is expired even before anything marks it so."""
    if appointment.status == "reserved" and appointment.expires_at is not None and appointment.expires_at <= now:
        return "expired"
    return appointment.status


class BookingService:
    def __init__(self, session: Session, *, policy: BookingPolicy, now: datetime) -> None:
        self.session = session
        self.policy = policy
        self.now = now

    # --- reserve -------------------------------------------------------------------

    def reserve(
        self, patient: User, provider_id: int, start_time: datetime, visit_type_id: int | None = None
    ) -> Appointment:
        if patient.role != "patient":
            raise Forbidden("only patients can reserve", code="wrong_role")
        start = grid_start(start_time)
        schedule = ProviderSchedule(self.session, policy=self.policy, now=self.now)
        provider = schedule.provider(provider_id, for_share=True)
        visit_type = schedule.visit_type(provider_id, visit_type_id)
        visit = VisitSpec.of(visit_type)
        rules = schedule.rules(provider)
        if start < self.now + rules.min_notice:
            hours = rules.min_notice.total_seconds() / 3600
            raise InvalidRequest(f"reservations need at least {hours:g} hours of notice", code="too_soon")
        if start > self.now + rules.horizon:
            raise InvalidRequest(f"reservations can be made at most {rules.horizon.days} days ahead", code="too_far")
        end = start + visit.duration
        busy_start, busy_end = start - visit.before, end + visit.after
        # One patient's reservations run one at a time, so the hold limit cannot be raced past.
        # FOR NO KEY UPDATE: it serialises this patient's reservations but, unlike FOR UPDATE,
        # not the foreign-key checks of rows referencing the patient (a keyed confirm's
        # idempotency record), which would otherwise deadlock with it.
        self.session.execute(select(User.id).where(User.id == patient.id).with_for_update(key_share=True))
        # Lazy expiry: stale holds in this provider's kept-free range or this patient's
        # range stop counting now, in this transaction, so correctness never waits for the
        # sweeper.
        self.session.execute(
            update(Appointment)
            .where(
                or_(
                    and_(
                        Appointment.provider_id == provider_id,
                        Appointment.busy_start > busy_start - MAX_BUSY_SPAN,
                        Appointment.busy_start < busy_end,
                        Appointment.busy_end > busy_start,
                    ),
                    and_(
                        Appointment.patient_id == patient.id,
                        Appointment.start_time > start - MAX_BUSY_SPAN,
                        Appointment.start_time < end,
                        Appointment.end_time > start,
                    ),
                ),
                Appointment.status == "reserved",
                Appointment.expires_at <= self.now,
            )
            .values(status="expired", updated_at=self.now)
        )
        zone = ZoneInfo(provider.timezone)
        local_day = start.astimezone(zone).date()
        days = days_spanned(busy_start, busy_end)
        if rules.daily_cap is not None:
            # The day rows are locked (and bumped) first: reservations of this provider's
            # days then run one at a time, so the cap cannot be raced past.
            bump_slot_days(self.session, provider_id, days)
            if self._booked_on(provider_id, zone, local_day) >= rules.daily_cap:
                raise Conflict(
                    f"the provider takes at most {rules.daily_cap} appointments on {local_day}",
                    code="daily_limit_reached",
                )
        availability = schedule.load_availability(provider_id, local_day, local_day)
        offered = frozenset(slot for slot, _ in generate_slots(availability, zone, local_day, local_day))
        if not visit_fits(offered, start, visit, zone):
            raise Conflict("the provider does not offer this slot", code="slot_unavailable")
        active_holds = self.session.scalar(
            select(func.count()).where(
                Appointment.patient_id == patient.id,
                Appointment.status == "reserved",
                Appointment.expires_at > self.now,
            )
        )
        if (active_holds or 0) >= self.policy.max_active_holds:
            raise Conflict(
                f"you already hold {self.policy.max_active_holds} unconfirmed reservations; confirm or cancel one",
                code="too_many_holds",
            )
        appointment = Appointment(
            provider_id=provider_id,
            patient_id=patient.id,
            visit_type_id=visit_type.id,
            start_time=start,
            end_time=end,
            busy_start=busy_start,
            busy_end=busy_end,
            status="reserved",
            expires_at=self.now + self.policy.hold_ttl,
            created_at=self.now,
            updated_at=self.now,
        )
        # No savepoint: a conflict fails the request, whose whole transaction is rolled back.
        try:
            self.session.add(appointment)
            self.session.flush()
        except DBAPIError as error:  # pg8000 reports 23P01 as a ProgrammingError
            if sqlstate(error) == "23P01" and constraint_name(error) == PATIENT_OVERLAP:
                raise Conflict("you already have an appointment at this time", code="overlapping_appointment") from None
            if sqlstate(error) == "23P01":
                raise Conflict("this slot is already held or booked", code="slot_unavailable") from None
            raise
        if rules.daily_cap is None:
            bump_slot_days(self.session, provider_id, days)
        return appointment

    def _booked_on(self, provider_id: int, zone: ZoneInfo, day: date) -> int:
        """Active appointments of the provider starting on that provider-local day."""
        start = datetime.combine(day, time.min, zone)
        end = datetime.combine(day + timedelta(days=1), time.min, zone)
        return int(
            self.session.scalar(
                select(func.count()).where(
                    Appointment.provider_id == provider_id,
                    Appointment.start_time >= start,
                    Appointment.start_time < end,
                    or_(
                        Appointment.status == "confirmed",
                        and_(Appointment.status == "reserved", Appointment.expires_at > self.now),
                    ),
                )
            )
            or 0
        )

    # --- confirm / cancel ----------------------------------------------------------

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
            bump_slot_days(self.session, confirmed.provider_id, days_spanned(confirmed.busy_start, confirmed.busy_end))
            return confirmed
        existing = self._own(appointment_id, patient_id=patient.id)
        status = effective_status(existing, self.now)
        if status == "confirmed":
            return existing
        if status == "cancelled":
            raise Conflict("this appointment was cancelled", code="appointment_cancelled")
        raise Conflict("the reservation expired before it was confirmed", code="reservation_expired")

    def cancel(self, actor: User, appointment_id: int) -> Appointment:
        party = or_(Appointment.patient_id == actor.id, Appointment.provider_id == actor.id)
        cancelled = self.session.scalars(
            update(Appointment)
            .where(
                Appointment.id == appointment_id,
                party,
                or_(
                    Appointment.status == "confirmed",
                    and_(Appointment.status == "reserved", Appointment.expires_at > self.now),
                ),
            )
            .values(status="cancelled", expires_at=None, updated_at=self.now)
            .returning(Appointment)
        ).first()
        if cancelled is not None:
            bump_slot_days(self.session, cancelled.provider_id, days_spanned(cancelled.busy_start, cancelled.busy_end))
            return cancelled
        existing = self.session.scalars(select(Appointment).where(Appointment.id == appointment_id, party)).first()
        if existing is None:
            raise NotFound(f"appointment {appointment_id} not found", code="appointment_not_found")
        if existing.status == "cancelled":
            return existing
        raise Conflict("the reservation already expired", code="reservation_expired")

    def _own(self, appointment_id: int, *, patient_id: int) -> Appointment:
        found = self.session.scalars(
            select(Appointment).where(Appointment.id == appointment_id, Appointment.patient_id == patient_id)
        ).first()
        if found is None:
            raise NotFound(f"appointment {appointment_id} not found", code="appointment_not_found")
        return found

    # --- reading -------------------------------------------------------------------

    def get(self, actor: User, appointment_id: int) -> Appointment:
        found = self.session.scalars(
            select(Appointment).where(
                Appointment.id == appointment_id,
                or_(Appointment.patient_id == actor.id, Appointment.provider_id == actor.id),
            )
        ).first()
        if found is None:
            raise NotFound(f"appointment {appointment_id} not found", code="appointment_not_found")
        return found

    def list_own(
        self, actor: User, *, status: str | None, first: date | None, last: date | None, limit: int, offset: int
    ) -> Sequence[Appointment]:
        if actor.role not in ("patient", "provider"):
            raise Forbidden("only patients and providers have appointments", code="wrong_role")
        owner = Appointment.patient_id if actor.role == "patient" else Appointment.provider_id
        query = select(Appointment).where(owner == actor.id)
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
        live_hold = and_(Appointment.status == "reserved", Appointment.expires_at > self.now)
        stale_hold = and_(Appointment.status == "reserved", Appointment.expires_at <= self.now)
        if status == "reserved":
            query = query.where(live_hold)
        elif status == "expired":
            query = query.where(or_(Appointment.status == "expired", stale_hold))
        elif status is not None:
            query = query.where(Appointment.status == status)
        return self.session.scalars(
            query.order_by(Appointment.start_time, Appointment.id).limit(limit).offset(offset)
        ).all()


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
