"""providers function: provider directory, availability, free slots, booked appointments."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Depends, Path, Query, Response
from pydantic import TypeAdapter

from reservations.adapters.security import AccessClaims
from reservations.composition import Container
from reservations.domain.availability import Window
from reservations.domain.scheduling import format_days, format_time
from reservations.http.app import create_app
from reservations.http.booking_schemas import (
    MAX_ID,
    AppointmentConflict,
    AvailabilityIn,
    AvailabilityOut,
    AvailabilityPosted,
    BookedAppointmentOut,
    ProviderOut,
    SlotOut,
    StoredDay,
    StoredWeekly,
)
from reservations.http.deps import Caller, require_role
from reservations.http.lambda_entry import make_lambda_handler

# Settings are validated here, at import of the handler, so a bad variable fails the cold start.
container = Container()
app = create_app("Reservations providers", container)
schedule = container.schedule

ProviderId = Annotated[int, Path(ge=1, le=MAX_ID)]
StartDate = Annotated[dt.date | None, Query(description="provider-local date, inclusive; default today")]
EndDate = Annotated[dt.date | None, Query(description="provider-local date, inclusive; default start + 6 days")]
Admin = Annotated[AccessClaims, Depends(require_role("admin"))]


@app.get("/providers", response_model=list[ProviderOut])
def list_providers(
    admin: Admin,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[ProviderOut]:
    return [ProviderOut.model_validate(p) for p in schedule.list_providers(admin, limit=limit, offset=offset)]


@app.post("/providers/{provider_id}/availability", response_model=AvailabilityPosted)
def post_availability(provider_id: ProviderId, body: AvailabilityIn, caller: Caller) -> AvailabilityPosted:
    update = schedule.post_availability(caller, provider_id, body.to_domain())
    return AvailabilityPosted(
        message=f"availability updated for {update.touched_days} date(s)",
        slots=update.slots,
        conflicts=[AppointmentConflict.model_validate(view) for view in update.conflicts],
    )


@app.get("/providers/{provider_id}/availability", response_model=AvailabilityOut)
def get_availability(provider_id: ProviderId, caller: Caller) -> AvailabilityOut:
    stored = schedule.stored_availability(caller, provider_id)
    availability = stored.availability
    return AvailabilityOut(
        provider_id=provider_id,
        timezone=stored.provider.timezone,
        general_schedules=[
            StoredWeekly(
                start_date=period.start_date,
                end_date=period.end_date,
                times=[
                    {
                        "days": format_days(w.weekdays),
                        "start": format_time(w.window.start),
                        "end": format_time(w.window.end),
                    }
                    for w in period.windows
                ],
            )
            for period in availability.periods
        ],
        exceptions=[_stored_day(day, windows) for day, windows in sorted(availability.exceptions.items())],
        manual_appointment_slots=[_stored_day(day, windows) for day, windows in sorted(availability.manual.items())],
    )


def _stored_day(day: dt.date, windows: tuple[Window, ...]) -> StoredDay:
    return StoredDay(date=day, times=[{"start": format_time(w.start), "end": format_time(w.end)} for w in windows])


SLOT_LIST = TypeAdapter(list[SlotOut])


@app.get("/providers/{provider_id}/time-slots", response_model=list[SlotOut])
async def time_slots(
    provider_id: ProviderId, caller: Caller, start_date: StartDate = None, end_date: EndDate = None
) -> Response:
    # The hot read path: serialise once with a prebuilt adapter and skip FastAPI's second
    # validation pass over every slot; async because, under Mangum, nothing else shares
    # this invocation's event loop (a sync endpoint would pay a thread hop).
    listing = schedule.free_slots(caller, provider_id, start_date, end_date)
    if listing.days_from_store == listing.days_total:
        cache = "hit"
    else:
        cache = "miss" if listing.days_from_store == 0 else "partial"
    slots = [SlotOut(provider_id=provider_id, start_time=start, end_time=end) for start, end in listing.slots]
    return Response(SLOT_LIST.dump_json(slots), media_type="application/json", headers={"X-Cache": cache})


@app.get("/providers/{provider_id}/booked-appointments", response_model=list[BookedAppointmentOut])
def booked_appointments(
    provider_id: ProviderId, caller: Caller, start_date: StartDate = None, end_date: EndDate = None
) -> list[BookedAppointmentOut]:
    rows = schedule.booked_appointments(caller, provider_id, start_date, end_date)
    return [BookedAppointmentOut.model_validate({**view, "patient_name": name}) for view, name in rows]


handler = make_lambda_handler(app, container.settings)
