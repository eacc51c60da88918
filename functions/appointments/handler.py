"""appointments function: reserve, confirm, cancel and read one's appointments."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Path, Query, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from reservations.booking import IdempotencyStore, StoredResponse, request_fingerprint
from reservations.db import Appointment, User
from reservations.http.app import create_app
from reservations.http.booking_deps import BookingDep, IdempotencyKey
from reservations.http.booking_schemas import MAX_ID, AppointmentOut, ReserveIn, SlotRef, appointment_out
from reservations.http.deps import CurrentUser, NowDep, RuntimeDep, SessionDep
from reservations.http.lambda_entry import make_lambda_handler

app = create_app("Reservations appointments")


def run_write(
    *,
    operation: str,
    payload: dict[str, Any],
    success_status: int,
    key: str | None,
    user: User,
    session: Session,
    runtime: Any,
    now: dt.datetime,
    action: Callable[[], Appointment],
) -> JSONResponse:
    """Execute a write once per Idempotency-Key and commit before answering."""
    store = IdempotencyStore(session, now=now)
    fingerprint = request_fingerprint(operation, payload)
    if key is not None and (replay := store.begin(user.id, key, operation, fingerprint)) is not None:
        return JSONResponse(replay.body, status_code=replay.status_code, headers={"Idempotent-Replayed": "true"})
    appointment = action()
    body = appointment_out(appointment, now).model_dump(mode="json")
    if key is not None:
        store.save(user.id, key, operation, fingerprint, StoredResponse(success_status, body))
    session.commit()
    return JSONResponse(body, status_code=success_status)


@app.post("/appointments/reserve", status_code=status.HTTP_201_CREATED, response_model=AppointmentOut)
def reserve(
    body: ReserveIn,
    user: CurrentUser,
    booking: BookingDep,
    session: SessionDep,
    runtime: RuntimeDep,
    now: NowDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    return run_write(
        operation="reserve",
        payload=body.model_dump(mode="json"),
        success_status=201,
        key=idempotency_key,
        user=user,
        session=session,
        runtime=runtime,
        now=now,
        action=lambda: booking.reserve(user, body.provider_id, body.start_time),
    )


@app.post("/appointments/confirm", response_model=AppointmentOut)
def confirm(
    body: SlotRef,
    user: CurrentUser,
    booking: BookingDep,
    session: SessionDep,
    runtime: RuntimeDep,
    now: NowDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    return run_write(
        operation="confirm",
        payload=body.model_dump(mode="json"),
        success_status=200,
        key=idempotency_key,
        user=user,
        session=session,
        runtime=runtime,
        now=now,
        action=lambda: booking.confirm(user, body.slot_id),
    )


@app.post("/appointments/cancel", response_model=AppointmentOut)
def cancel(
    body: SlotRef,
    user: CurrentUser,
    booking: BookingDep,
    session: SessionDep,
    runtime: RuntimeDep,
    now: NowDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    return run_write(
        operation="cancel",
        payload=body.model_dump(mode="json"),
        success_status=200,
        key=idempotency_key,
        user=user,
        session=session,
        runtime=runtime,
        now=now,
        action=lambda: booking.cancel(user, body.slot_id),
    )


@app.get("/appointments", response_model=list[AppointmentOut])
def list_appointments(
    user: CurrentUser,
    booking: BookingDep,
    now: NowDep,
    status_filter: Annotated[
        Literal["reserved", "confirmed", "cancelled", "expired"] | None, Query(alias="status")
    ] = None,
    start_date: Annotated[dt.date | None, Query(description="UTC date, inclusive")] = None,
    end_date: Annotated[dt.date | None, Query(description="UTC date, inclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[AppointmentOut]:
    rows = booking.list_own(user, status=status_filter, first=start_date, last=end_date, limit=limit, offset=offset)
    return [appointment_out(a, now) for a in rows]


@app.get("/appointments/{appointment_id}", response_model=AppointmentOut)
def get_appointment(
    appointment_id: Annotated[int, Path(ge=1, le=MAX_ID)], user: CurrentUser, booking: BookingDep, now: NowDep
) -> AppointmentOut:
    return appointment_out(booking.get(user, appointment_id), now)


handler = make_lambda_handler(app, function="appointments")
