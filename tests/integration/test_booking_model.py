"""A Hypothesis state machine of providers, patients, an admin, holds, confirmations,
cancellations (with reasons), reschedules, attendance, availability changes and a
controllable clock (minutes, and leaps past the starts), run against the real services on
real Postgres and Redis. After every step: no two active appointments overlap, the listed
free slots equal the model's, the cache agrees with Postgres, and every rescheduled
appointment has exactly one successor that points back to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from reservations.adapters.db import User
from reservations.adapters.security import AccessClaims
from reservations.adapters.slot_cache import SlotCache
from reservations.composition import Container
from reservations.domain.availability import Availability, WeeklyPeriod, WeeklyWindow, parse_days, parse_window
from reservations.domain.booking import BookingService, move_context
from reservations.domain.errors import Conflict, InvalidRequest, NotFound
from reservations.domain.scheduling import PostedAvailability, ProviderSchedule

START = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
DAYS = (date(2027, 3, 3), date(2027, 3, 4))
SLOTS_PER_DAY = 4  # 09:00-10:00 UTC
SLOT = timedelta(minutes=15)
HOLD_MINUTES = 10
MAX_HOLDS = 2
ACTORS = st.sampled_from(["patient", "provider", "admin"])


def slot_starts() -> list[datetime]:
    return [datetime(d.year, d.month, d.day, 9, tzinfo=UTC) + i * SLOT for d in DAYS for i in range(SLOTS_PER_DAY)]


@dataclass
class ModelAppointment:
    id: int
    provider: int
    patient: int
    start: datetime
    status: str
    expires_at: datetime | None
    successor: int | None = None
    cancellation: tuple[str | None, str] = (None, "")

    def active(self, now: datetime) -> bool:
        return self.status == "confirmed" or (
            self.status == "reserved" and self.expires_at is not None and self.expires_at > now
        )


class BookingMachine(RuleBasedStateMachine):
    container: Container
    cache: SlotCache

    @initialize()
    def create_people(self) -> None:
        self.now = START
        self.container.configure(
            min_booking_notice_hours=1,
            max_booking_horizon_days=30,
            confirmation_grace_period_minutes=HOLD_MINUTES,
            max_active_holds=MAX_HOLDS,
        )
        self.policy = self.container.booking_policy
        self.providers: list[int] = []
        self.patients: list[int] = []
        self.admins: list[int] = []
        with self.container.unit_of_work() as session:
            for role, bucket, count in (
                ("provider", self.providers, 2),
                ("patient", self.patients, 3),
                ("admin", self.admins, 1),
            ):
                for _ in range(count):
                    user = User(
                        name=role,
                        email=f"{role}-{uuid.uuid4().hex}@example.com",
                        role=role,
                        password_hash="x",
                        token_version=0,
                        timezone="UTC",
                    )
                    session.add(user)
                    session.flush()
                    bucket.append(user.id)
        self.offered: dict[int, set[datetime]] = {p: set() for p in self.providers}
        for provider in self.providers:
            self._post(
                provider,
                Availability(
                    (
                        WeeklyPeriod(
                            DAYS[0], DAYS[-1], (WeeklyWindow(parse_days("M-Su"), parse_window("9am", "10am")),)
                        ),
                    ),
                    {},
                    {},
                ),
                set(DAYS),
            )
            self.offered[provider] = set(slot_starts())
        self.appointments: list[ModelAppointment] = []

    def _post(self, provider: int, availability: Availability, touched: set[date]) -> None:
        with self.container.unit_of_work() as session:
            schedule = ProviderSchedule(session, policy=self.policy, now=self.now)
            actor = session.get_one(User, provider)
            schedule.post_availability(actor, provider, PostedAvailability(availability, frozenset(touched), None))

    def _booking(self, session):  # type: ignore[no-untyped-def]
        return BookingService(session, policy=self.policy, now=self.now)

    # --- rules ------------------------------------------------------------------------

    @rule(patient=st.integers(0, 2), provider=st.integers(0, 1), slot=st.integers(0, len(DAYS) * SLOTS_PER_DAY - 1))
    def reserve(self, patient: int, provider: int, slot: int) -> None:
        patient_id, provider_id = self.patients[patient], self.providers[provider]
        start = slot_starts()[slot]
        active = [a for a in self.appointments if a.active(self.now)]
        expected: set[str]
        if start < self.now + self.policy.min_notice:
            expected = {"too_soon"}
        elif start not in self.offered[provider_id]:
            expected = {"slot_unavailable"}
        elif sum(1 for a in active if a.patient == patient_id and a.status == "reserved") >= MAX_HOLDS:
            expected = {"too_many_holds"}
        else:
            provider_taken = any(a.provider == provider_id and a.start == start for a in active)
            patient_taken = any(a.patient == patient_id and a.start == start for a in active)
            expected = ({"slot_unavailable"} if provider_taken else set()) | (
                {"overlapping_appointment"} if patient_taken else set()
            )
            expected = expected or {"created"}
        try:
            with self.container.unit_of_work() as session:
                made = self._booking(session).reserve(session.get_one(User, patient_id), provider_id, start)
                outcome, made_id, expires = "created", made.id, made.expires_at
        except (Conflict, InvalidRequest) as error:
            outcome = error.code
        assert outcome in expected, (outcome, expected)
        if outcome == "created":
            self._lazily_expired(provider_id, patient_id, start)
            self.appointments.append(ModelAppointment(made_id, provider_id, patient_id, start, "reserved", expires))

    def _lazily_expired(self, provider_id: int, patient_id: int, start: datetime) -> None:
        """What the lazy expirer marks when an appointment is placed at `start`."""
        for a in self.appointments:
            if (
                a.status == "reserved"
                and not a.active(self.now)
                and a.start == start
                and (a.provider == provider_id or a.patient == patient_id)
            ):
                a.status = "expired"

    def _actor(self, appointment: ModelAppointment, who: str) -> int:
        return {"patient": appointment.patient, "provider": appointment.provider, "admin": self.admins[0]}[who]

    @precondition(lambda self: bool(self.appointments))
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        appointment = data.draw(st.sampled_from(self.appointments))
        if appointment.status == "confirmed" or (appointment.status == "reserved" and appointment.active(self.now)):
            expected = "confirmed"
        elif appointment.status == "cancelled":
            expected = "appointment_cancelled"
        elif appointment.status in ("rescheduled", "completed", "no_show"):
            expected = "not_confirmable"
        else:
            expected = "reservation_expired"
        try:
            with self.container.unit_of_work() as session:
                self._booking(session).confirm(session.get_one(User, appointment.patient), appointment.id)
            outcome = "confirmed"
        except Conflict as error:
            outcome = error.code
        assert outcome == expected, (outcome, expected, appointment)
        if outcome == "confirmed":
            appointment.status, appointment.expires_at = "confirmed", None

    @precondition(lambda self: bool(self.appointments))
    @rule(data=st.data(), who=ACTORS, reason=st.none() | st.text(st.characters(codec="utf-8"), max_size=20))
    def cancel(self, data: st.DataObject, who: str, reason: str | None) -> None:
        appointment = data.draw(st.sampled_from(self.appointments))
        if appointment.status == "cancelled":
            expected = "unchanged"
        elif appointment.status == "expired" or (appointment.status == "reserved" and not appointment.active(self.now)):
            expected = "reservation_expired"
        elif appointment.status in ("rescheduled", "completed", "no_show"):
            expected = "not_cancellable"
        elif appointment.start <= self.now:
            expected = "appointment_in_past"
        else:
            expected = "cancelled"
        try:
            with self.container.unit_of_work() as session:
                done = self._booking(session).cancel(
                    session.get_one(User, self._actor(appointment, who)), appointment.id, reason
                )
                recorded = (done.status, done.cancellation_reason, done.cancelled_by)
            outcome = "cancelled" if expected == "cancelled" else "unchanged"
        except Conflict as error:
            outcome = error.code
        assert outcome == expected, (outcome, expected, appointment)
        if outcome == "cancelled":
            assert recorded == ("cancelled", reason, who)
            appointment.status, appointment.expires_at = "cancelled", None
            appointment.cancellation = (reason, who)
        elif outcome == "unchanged":  # cancelling twice answers with the first cancellation
            assert recorded == ("cancelled", *appointment.cancellation)

    @precondition(lambda self: bool(self.appointments))
    @rule(data=st.data(), who=ACTORS, slot=st.integers(0, len(DAYS) * SLOTS_PER_DAY - 1))
    def reschedule(self, data: st.DataObject, who: str, slot: int) -> None:
        old = data.draw(st.sampled_from(self.appointments))
        start = slot_starts()[slot]
        others = [a for a in self.appointments if a.active(self.now) and a is not old]
        expected: set[str]
        if not old.active(self.now):
            expected = {"not_reschedulable"}
        elif old.start <= self.now:
            expected = {"appointment_in_past"}
        elif start < self.now + self.policy.min_notice:
            expected = {"too_soon"}
        elif start not in self.offered[old.provider]:
            expected = {"slot_unavailable"}
        elif (
            old.status == "reserved"
            and sum(1 for a in others if a.patient == old.patient and a.status == "reserved") >= MAX_HOLDS
        ):
            expected = {"too_many_holds"}
        else:
            provider_taken = any(a.provider == old.provider and a.start == start for a in others)
            patient_taken = any(a.patient == old.patient and a.start == start for a in others)
            expected = ({"slot_unavailable"} if provider_taken else set()) | (
                {"overlapping_appointment"} if patient_taken else set()
            )
            expected = expected or {"moved"}
        try:
            with self.container.unit_of_work() as session:
                actor = session.get_one(User, self._actor(old, who))
                claims = AccessClaims(actor.id, actor.role, actor.token_version, self.now + timedelta(hours=1))
                context = move_context(session, claims, old.id, None)
                booking = BookingService(session, policy=self.policy, now=self.now, context=context)
                moved = booking.reschedule(actor, start)
                outcome, made = "moved", (moved.id, moved.status, moved.expires_at, moved.rescheduled_from)
        except (Conflict, InvalidRequest) as error:
            outcome = error.code
        assert outcome in expected, (outcome, expected, old, start)
        if outcome == "moved":
            assert made[1:] == (old.status, old.expires_at, old.id)  # a hold keeps its deadline
            self._lazily_expired(old.provider, old.patient, start)
            self.appointments.append(
                ModelAppointment(made[0], old.provider, old.patient, start, old.status, old.expires_at)
            )
            old.status, old.successor = "rescheduled", made[0]

    @precondition(lambda self: bool(self.appointments))
    @rule(data=st.data(), by_admin=st.booleans(), attendance=st.sampled_from(["completed", "no_show"]))
    def record_attendance(self, data: st.DataObject, by_admin: bool, attendance: str) -> None:
        appointment = data.draw(st.sampled_from(self.appointments))
        started = appointment.start <= self.now
        allowed = started and (
            appointment.status == "confirmed"
            or (appointment.status in ("completed", "no_show") and self.now <= appointment.start + timedelta(days=7))
        )
        actor = self.admins[0] if by_admin else appointment.provider
        try:
            with self.container.unit_of_work() as session:
                done = self._booking(session).record_attendance(
                    session.get_one(User, actor), appointment.id, attendance
                )
                outcome = done.status
        except Conflict as error:
            outcome = error.code
        assert outcome == (attendance if allowed else "attendance_not_allowed"), (outcome, appointment, self.now)
        if allowed:
            appointment.status = attendance

    @rule(patient=st.integers(0, 2), appointment=st.integers(0, 50))
    def strangers_get_not_found(self, patient: int, appointment: int) -> None:
        patient_id = self.patients[patient]
        owned = {a.id for a in self.appointments if a.patient == patient_id}
        target = self.appointments[appointment % len(self.appointments)].id if self.appointments else 2**40
        if target in owned:
            return
        with pytest.raises(NotFound), self.container.unit_of_work() as session:
            self._booking(session).confirm(session.get_one(User, patient_id), target)

    @rule(minutes=st.integers(1, 12))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @precondition(lambda self: any(a.status == "confirmed" for a in self.appointments))
    @rule(hours=st.integers(12, 48))
    def time_leaps(self, hours: int) -> None:
        """Hours at once, so starts pass (and attendance can be recorded)."""
        self.now += timedelta(hours=hours)

    @rule(provider=st.integers(0, 1), day=st.sampled_from(DAYS), off=st.booleans())
    def change_availability(self, provider: int, day: date, off: bool) -> None:
        provider_id = self.providers[provider]
        windows = () if off else (parse_window("9am", "10am"),)
        self._post(provider_id, Availability((), {day: windows}, {}), {day})
        day_slots = {s for s in slot_starts() if s.date() == day}
        self.offered[provider_id] = (self.offered[provider_id] - day_slots) | (set() if off else day_slots)

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def no_overlaps_in_the_database(self) -> None:
        if not hasattr(self, "providers"):
            return
        ((clashes,),) = self._rows(
            """
            SELECT count(*) FROM appointments a JOIN appointments b
              ON a.id < b.id AND (a.provider_id = b.provider_id OR a.patient_id = b.patient_id)
             AND a.start_time < b.end_time AND b.start_time < a.end_time
            WHERE a.status IN ('reserved','confirmed') AND b.status IN ('reserved','confirmed')
              AND a.provider_id = ANY(:providers)
            """
        )
        assert clashes == 0

    def _rows(self, sql: str) -> list[Any]:
        """The rows of `sql` (over the appointments of `:providers`, this run's)."""
        with self.container.unit_of_work() as session:
            return list(session.execute(text(sql), {"providers": self.providers}).all())

    @invariant()
    def every_rescheduled_appointment_has_exactly_one_successor_pointing_back(self) -> None:
        if not hasattr(self, "providers"):
            return
        links = self._rows(
            """
            SELECT a.id, a.rescheduled_to, array_agg(b.id) FILTER (WHERE b.id IS NOT NULL)
            FROM appointments a LEFT JOIN appointments b ON b.rescheduled_from = a.id
            WHERE a.provider_id = ANY(:providers) AND (a.status = 'rescheduled' OR b.id IS NOT NULL)
            GROUP BY a.id, a.rescheduled_to
            """
        )
        found = {old: (to, successors) for old, to, successors in links}
        model = {a.id: (a.successor, [a.successor]) for a in self.appointments if a.status == "rescheduled"}
        assert found == model

    @invariant()
    def listed_slots_match_the_model_and_the_cache_agrees(self) -> None:
        if not hasattr(self, "providers"):
            return
        earliest = self.now + self.policy.min_notice
        # Listings start yesterday at the earliest; bookable slots all lie after that.
        first = max(DAYS[0], (self.now - timedelta(days=1)).date())
        if first > DAYS[-1]:
            return
        for provider_id in self.providers:
            taken = {a.start for a in self.appointments if a.provider == provider_id and a.active(self.now)}
            expected = sorted(s for s in self.offered[provider_id] - taken if s >= earliest)
            listings = []
            for store in (self.cache, None):
                with self.container.unit_of_work() as session:
                    schedule = ProviderSchedule(session, policy=self.policy, now=self.now, store=store)
                    listings.append([s for s, _ in schedule.free_slots(provider_id, first, DAYS[-1]).slots])
            cached, fresh = listings
            assert fresh == expected
            assert cached == fresh


@pytest.mark.slow
def test_booking_state_machine(model_container: Container) -> None:
    BookingMachine.container = model_container
    BookingMachine.cache = SlotCache.from_url(model_container.settings.redis_url, ttl_seconds=600)
    run_state_machine_as_test(
        BookingMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.fixture
def model_container(settings) -> Iterator[Container]:  # type: ignore[no-untyped-def]
    container = Container(settings)
    yield container
    container.close()
