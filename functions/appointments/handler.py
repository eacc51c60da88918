"""appointments function: reserve, confirm, cancel and read one's appointments."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Path, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from reservations.booking import BookingService, IdempotencyStore, StoredResponse, request_fingerprint
from reservations.db import Appointment, User
from reservations.http.app import create_app
from reservations.http.booking_deps import BookingDep, IdempotencyKey
from reservations.http.booking_schemas import MAX_ID, AppointmentOut, ReserveIn, SlotRef, appointment_out
from reservations.http.deps import CurrentUser, NowDep, SessionDep
from reservations.http.lambda_entry import make_lambda_handler

app = create_app("Reservations appointments")


@dataclass(frozen=True)
class Write:
    """What every write endpoint needs: the caller, the service and the transaction."""

    user: User
    booking: BookingService
    session: Session
    now: dt.datetime
    idempotency_key: str | None

    def run(
        self, operation: str, body: BaseModel, success_status: int, action: Callable[[], Appointment]
    ) -> JSONResponse:
        """Execute once per Idempotency-Key and commit before answering."""
        store = IdempotencyStore(self.session, now=self.now)
        fingerprint = request_fingerprint(operation, body.model_dump(mode="json"))
        key = self.idempotency_key
        if key is not None and (replay := store.begin(self.user.id, key, operation, fingerprint)) is not None:
            return JSONResponse(replay.body, status_code=replay.status_code, headers={"Idempotent-Replayed": "true"})
        result = appointment_out(action(), self.now).model_dump(mode="json")
        if key is not None:
            store.save(self.user.id, key, operation, fingerprint, StoredResponse(success_status, result))
        self.session.commit()
        return JSONResponse(result, status_code=success_status)


async def write_context(
    user: CurrentUser, booking: BookingDep, session: SessionDep, now: NowDep, idempotency_key: IdempotencyKey = None
) -> Write:
    return Write(user, booking, session, now, idempotency_key)


WriteDep = Annotated[Write, Depends(write_context)]


@app.post("/appointments/reserve", status_code=status.HTTP_201_CREATED, response_model=AppointmentOut)
def reserve(body: ReserveIn, write: WriteDep) -> JSONResponse:
    return write.run("reserve", body, 201, lambda: write.booking.reserve(write.user, body.provider_id, body.start_time))


@app.post("/appointments/confirm", response_model=AppointmentOut)
def confirm(body: SlotRef, write: WriteDep) -> JSONResponse:
    return write.run("confirm", body, 200, lambda: write.booking.confirm(write.user, body.slot_id))


@app.post("/appointments/cancel", response_model=AppointmentOut)
def cancel(body: SlotRef, write: WriteDep) -> JSONResponse:
    return write.run("cancel", body, 200, lambda: write.booking.cancel(write.user, body.slot_id))


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
