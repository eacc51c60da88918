"""Booking use cases: reserve, confirm and cancel (idempotent per key), and reading
one's appointments."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from reservations.adapters.db import Appointment, User, sqlstate
from reservations.adapters.security import AccessClaims
from reservations.domain.accounts import current_user
from reservations.domain.booking import (
    BookingService,
    IdempotencyStore,
    MoveContext,
    Replayable,
    ReservationContext,
    appointment_view,
    move_context,
    request_fingerprint,
    reservation_context,
)
from reservations.domain.errors import Conflict
from reservations.usecases import Resources

Action = Callable[[BookingService, User], Appointment]
# What a write reads first, with the caller's token check, when one call can read more.
FirstRead = ReservationContext | MoveContext
# deadlock_detected, serialization_failure: Postgres aborted the transaction, not the request.
RETRYABLE_STATES = frozenset({"40P01", "40001"})
DEADLOCK_ATTEMPTS = 3


class BookingUseCases:
    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    def reserve(
        self,
        caller: AccessClaims,
        *,
        provider_id: int,
        start_time: datetime,
        visit_type_id: int | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> Replayable:
        request: dict[str, Any] = {"provider_id": provider_id, "start_time": start_time}
        # Fields a request leaves out stay out of its fingerprint, so keys stored before
        # they existed still match.
        request.update(_named(visit_type_id=visit_type_id, note=note))

        def first_read(session: Session) -> ReservationContext:
            # A patient's token check also takes the row lock the reservation needs and
            # reads the provider and visit type: one round trip instead of two.
            return reservation_context(session, caller, provider_id, visit_type_id)

        return self._write(
            caller,
            "reserve",
            request,
            idempotency_key,
            lambda booking, user: booking.reserve(user, provider_id, start_time, visit_type_id, note),
            metric="Reservations",
            request_id=request_id,
            first_read=first_read if caller.role == "patient" else None,
        )

    def confirm(
        self,
        caller: AccessClaims,
        *,
        slot_id: int,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> Replayable:
        return self._write(
            caller,
            "confirm",
            {"slot_id": slot_id},
            idempotency_key,
            lambda booking, user: booking.confirm(user, slot_id),
            metric="Confirmations",
            request_id=request_id,
        )

    def cancel(
        self,
        caller: AccessClaims,
        *,
        slot_id: int,
        reason: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> Replayable:
        return self._write(
            caller,
            "cancel",
            {"slot_id": slot_id, **_named(reason=reason)},
            idempotency_key,
            lambda booking, user: booking.cancel(user, slot_id, reason),
            metric="Cancellations",
            request_id=request_id,
        )

    def reschedule(
        self,
        caller: AccessClaims,
        *,
        slot_id: int,
        start_time: datetime,
        visit_type_id: int | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> Replayable:
        def first_read(session: Session) -> MoveContext:
            # The token check, the move's locks and rows in one round trip.
            return move_context(session, caller, slot_id, visit_type_id)

        return self._write(
            caller,
            "reschedule",
            {"slot_id": slot_id, "start_time": start_time, **_named(visit_type_id=visit_type_id)},
            idempotency_key,
            lambda booking, user: booking.reschedule(user, start_time),
            metric="Reschedules",
            request_id=request_id,
            first_read=first_read,
        )

    def record_attendance(
        self, caller: AccessClaims, appointment_id: int, attendance: str, *, request_id: str | None = None
    ) -> dict[str, Any]:
        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            user = current_user(session, caller)
            appointment = self._service(session, now, request_id).record_attendance(user, appointment_id, attendance)
            result = appointment_view(appointment, now)
        self._resources.publish_after_commit()
        if attendance == "no_show":
            self._resources.count("NoShows")
        else:
            self._resources.count("Completions")
        return result

    def history(self, caller: AccessClaims, appointment_id: int) -> list[dict[str, Any]]:
        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            user = current_user(session, caller)
            return [
                {
                    "at": entry.at,
                    "from_status": entry.from_status,
                    "to_status": entry.to_status,
                    "actor_id": entry.actor_id,
                    "actor_role": entry.actor_role,
                    "request_id": entry.request_id,
                }
                for entry in self._service(session, now).history(user, appointment_id)
            ]

    def _write(
        self,
        caller: AccessClaims,
        operation: str,
        request: Mapping[str, Any],
        key: str | None,
        action: Action,
        *,
        metric: str,
        request_id: str | None,
        first_read: Callable[[Session], FirstRead] | None = None,
    ) -> Replayable:
        """Run ``action`` once per Idempotency-Key, in one transaction committed before
        the result is returned; a replay returns the first result and changes nothing.
        ``metric`` counts committed writes (replays are not counted again). A transaction
        Postgres aborts to break a deadlock with a concurrent change (two moves swapping
        times, say) is run once more; a second abort is a 409 the client may retry."""
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                return self._write_once(
                    caller,
                    operation,
                    request,
                    key,
                    action,
                    metric=metric,
                    request_id=request_id,
                    first_read=first_read,
                )
            except DBAPIError as error:
                if sqlstate(error) not in RETRYABLE_STATES:
                    raise
                if attempt == DEADLOCK_ATTEMPTS:
                    raise Conflict(
                        "the request met a concurrent change to the same appointments; retry it",
                        code="concurrent_change",
                    ) from None
                # Racers for one slot can deadlock on each other's uncommitted rows before the
                # winner commits; a short random pause lets it commit, so the retry meets the
                # winner (409 slot_unavailable) instead of the same deadlock.
                time.sleep(random.uniform(0.02, 0.1) * attempt)  # noqa: S311 - jitter, not a secret
        raise AssertionError("unreachable")

    def _write_once(
        self,
        caller: AccessClaims,
        operation: str,
        request: Mapping[str, Any],
        key: str | None,
        action: Action,
        *,
        metric: str,
        request_id: str | None,
        first_read: Callable[[Session], FirstRead] | None,
    ) -> Replayable:
        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            context = first_read(session) if first_read is not None else None
            user = caller_of(context) if context is not None else current_user(session, caller)
            store = IdempotencyStore(session, now=now)
            fingerprint = request_fingerprint(operation, request)
            if key is not None and (stored := store.begin(user.id, key, operation, fingerprint)) is not None:
                return Replayable(stored, replayed=True)
            booking = self._service(session, now, request_id, context=context)
            result = appointment_view(action(booking, user), now)
            if key is not None:
                store.save(user.id, key, operation, fingerprint, result)
        self._resources.publish_after_commit()
        self._resources.count(metric)
        return Replayable(result)

    def _service(
        self,
        session: Session,
        now: datetime,
        request_id: str | None = None,
        *,
        context: FirstRead | None = None,
    ) -> BookingService:
        return BookingService(
            session, policy=self._resources.booking_policy, now=now, request_id=request_id, context=context
        )

    def list_own(
        self,
        caller: AccessClaims,
        *,
        status: str | None,
        first: date | None,
        last: date | None,
        limit: int,
        offset: int,
        provider_id: int | None = None,
        patient_id: int | None = None,
    ) -> list[dict[str, Any]]:
        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            user = current_user(session, caller)
            rows = self._service(session, now).list_own(
                user,
                status=status,
                first=first,
                last=last,
                limit=limit,
                offset=offset,
                provider_id=provider_id,
                patient_id=patient_id,
            )
            return [appointment_view(row, now) for row in rows]

    def get(self, caller: AccessClaims, appointment_id: int) -> dict[str, Any]:
        now = self._resources.now()
        with self._resources.unit_of_work() as session:
            user = current_user(session, caller)
            return appointment_view(self._service(session, now).get(user, appointment_id), now)


def caller_of(context: FirstRead) -> User:
    return context.patient if isinstance(context, ReservationContext) else context.caller


def _named(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}
