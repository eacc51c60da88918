"""appointments function: reserve, confirm, cancel, reschedule, attendance and history."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, status
from fastapi.responses import JSONResponse

from reservations.composition import Container
from reservations.domain.booking import Replayable
from reservations.http.app import create_app
from reservations.http.booking_schemas import (
    MAX_ID,
    AppointmentOut,
    AppointmentStatus,
    AttendanceIn,
    CancelIn,
    HistoryEntryOut,
    RescheduleIn,
    ReserveIn,
    SlotRef,
)
from reservations.http.deps import Caller, IdempotencyKey, RequestId
from reservations.http.lambda_entry import make_lambda_handler
from reservations.http.schemas import IsoDate

# Settings are validated here, at import of the handler, so a bad variable fails the cold start.
container = Container()
app = create_app("Reservations appointments", container)
booking = container.booking

AppointmentId = Annotated[int, Path(ge=1, le=MAX_ID)]
EntityQuery = Annotated[int | None, Query(ge=1, le=MAX_ID, description="admins only")]


def _answer(outcome: Replayable, status_code: int) -> JSONResponse:
    body = AppointmentOut.model_validate(outcome.value).model_dump(mode="json")
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return JSONResponse(body, status_code=status_code, headers=headers)


@app.post("/appointments/reserve", status_code=status.HTTP_201_CREATED, response_model=AppointmentOut)
async def reserve(
    body: ReserveIn, caller: Caller, request_id: RequestId, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    outcome = booking.reserve(
        caller,
        provider_id=body.provider_id,
        start_time=body.start_time,
        visit_type_id=body.visit_type_id,
        note=body.note,
        idempotency_key=idempotency_key,
        request_id=request_id,
    )
    return _answer(outcome, status.HTTP_201_CREATED)


@app.post("/appointments/confirm", response_model=AppointmentOut)
async def confirm(
    body: SlotRef, caller: Caller, request_id: RequestId, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    outcome = booking.confirm(caller, slot_id=body.slot_id, idempotency_key=idempotency_key, request_id=request_id)
    return _answer(outcome, status.HTTP_200_OK)


@app.post("/appointments/cancel", response_model=AppointmentOut)
async def cancel(
    body: CancelIn, caller: Caller, request_id: RequestId, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    outcome = booking.cancel(
        caller, slot_id=body.slot_id, reason=body.reason, idempotency_key=idempotency_key, request_id=request_id
    )
    return _answer(outcome, status.HTTP_200_OK)


@app.post("/appointments/reschedule", response_model=AppointmentOut)
async def reschedule(
    body: RescheduleIn, caller: Caller, request_id: RequestId, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    outcome = booking.reschedule(
        caller,
        slot_id=body.slot_id,
        start_time=body.start_time,
        visit_type_id=body.visit_type_id,
        idempotency_key=idempotency_key,
        request_id=request_id,
    )
    return _answer(outcome, status.HTTP_200_OK)


@app.post("/appointments/{appointment_id}/attendance", response_model=AppointmentOut)
async def attendance(
    appointment_id: AppointmentId, body: AttendanceIn, caller: Caller, request_id: RequestId
) -> AppointmentOut:
    view = booking.record_attendance(caller, appointment_id, body.status, request_id=request_id)
    return AppointmentOut.model_validate(view)


@app.get("/appointments/{appointment_id}/history", response_model=list[HistoryEntryOut])
async def history(appointment_id: AppointmentId, caller: Caller) -> list[HistoryEntryOut]:
    return [HistoryEntryOut.model_validate(entry) for entry in booking.history(caller, appointment_id)]


@app.get("/appointments", response_model=list[AppointmentOut])
async def list_appointments(
    caller: Caller,
    status_filter: Annotated[AppointmentStatus | None, Query(alias="status")] = None,
    start_date: Annotated[IsoDate | None, Query(description="UTC date, inclusive")] = None,
    end_date: Annotated[IsoDate | None, Query(description="UTC date, inclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    provider_id: EntityQuery = None,
    patient_id: EntityQuery = None,
) -> list[AppointmentOut]:
    views = booking.list_own(
        caller,
        status=status_filter,
        first=start_date,
        last=end_date,
        limit=limit,
        offset=offset,
        provider_id=provider_id,
        patient_id=patient_id,
    )
    return [AppointmentOut.model_validate(view) for view in views]


@app.get("/appointments/{appointment_id}", response_model=AppointmentOut)
async def get_appointment(appointment_id: AppointmentId, caller: Caller) -> AppointmentOut:
    return AppointmentOut.model_validate(booking.get(caller, appointment_id))


handler = make_lambda_handler(app, container.settings)
