"""appointments function: reserve, confirm, cancel and read one's appointments."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import Path, Query, status
from fastapi.responses import JSONResponse

from reservations.composition import Container
from reservations.domain.booking import Replayable
from reservations.http.app import create_app
from reservations.http.booking_schemas import MAX_ID, AppointmentOut, ReserveIn, SlotRef
from reservations.http.deps import Caller, IdempotencyKey
from reservations.http.lambda_entry import make_lambda_handler

# Settings are validated here, at import of the handler, so a bad variable fails the cold start.
container = Container()
app = create_app("Reservations appointments", container)
booking = container.booking


def _answer(outcome: Replayable, status_code: int) -> JSONResponse:
    body = AppointmentOut.model_validate(outcome.value).model_dump(mode="json")
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return JSONResponse(body, status_code=status_code, headers=headers)


@app.post("/appointments/reserve", status_code=status.HTTP_201_CREATED, response_model=AppointmentOut)
def reserve(body: ReserveIn, caller: Caller, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    outcome = booking.reserve(
        caller,
        provider_id=body.provider_id,
        start_time=body.start_time,
        visit_type_id=body.visit_type_id,
        idempotency_key=idempotency_key,
    )
    return _answer(outcome, status.HTTP_201_CREATED)


@app.post("/appointments/confirm", response_model=AppointmentOut)
def confirm(body: SlotRef, caller: Caller, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    return _answer(booking.confirm(caller, slot_id=body.slot_id, idempotency_key=idempotency_key), status.HTTP_200_OK)


@app.post("/appointments/cancel", response_model=AppointmentOut)
def cancel(body: SlotRef, caller: Caller, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    return _answer(booking.cancel(caller, slot_id=body.slot_id, idempotency_key=idempotency_key), status.HTTP_200_OK)


@app.get("/appointments", response_model=list[AppointmentOut])
def list_appointments(
    caller: Caller,
    status_filter: Annotated[
        Literal["reserved", "confirmed", "cancelled", "expired"] | None, Query(alias="status")
    ] = None,
    start_date: Annotated[dt.date | None, Query(description="UTC date, inclusive")] = None,
    end_date: Annotated[dt.date | None, Query(description="UTC date, inclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[AppointmentOut]:
    views = booking.list_own(caller, status=status_filter, first=start_date, last=end_date, limit=limit, offset=offset)
    return [AppointmentOut.model_validate(view) for view in views]


@app.get("/appointments/{appointment_id}", response_model=AppointmentOut)
def get_appointment(appointment_id: Annotated[int, Path(ge=1, le=MAX_ID)], caller: Caller) -> AppointmentOut:
    return AppointmentOut.model_validate(booking.get(caller, appointment_id))


handler = make_lambda_handler(app, container.settings)
