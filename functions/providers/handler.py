"""providers function: provider directory, availability, free slots, booked appointments."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Depends, Path, Query, Response
from pydantic import TypeAdapter

from reservations.db import User
from reservations.http.app import create_app
from reservations.http.booking_deps import ScheduleDep
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
    appointment_out,
)
from reservations.http.deps import CurrentUser, NowDep, SessionDep, require_role
from reservations.http.lambda_entry import make_lambda_handler
from reservations.scheduling import format_days, format_time

app = create_app("Reservations providers")

ProviderId = Annotated[int, Path(ge=1, le=MAX_ID)]
StartDate = Annotated[dt.date | None, Query(description="provider-local date, inclusive; default today")]
EndDate = Annotated[dt.date | None, Query(description="provider-local date, inclusive; default start + 6 days")]
Admin = Annotated[User, Depends(require_role("admin"))]


@app.get("/providers", response_model=list[ProviderOut])
def list_providers(
    _: Admin,
    schedule: ScheduleDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[ProviderOut]:
    return [ProviderOut.model_validate(p) for p in schedule.list_providers(limit=limit, offset=offset)]


@app.post("/providers/{provider_id}/availability", response_model=AvailabilityPosted)
def post_availability(
    provider_id: ProviderId,
    body: AvailabilityIn,
    user: CurrentUser,
    schedule: ScheduleDep,
    session: SessionDep,
    now: NowDep,
) -> AvailabilityPosted:
    result = schedule.post_availability(user, provider_id, body.to_domain())
    session.commit()
    return AvailabilityPosted(
        message=f"availability updated for {len(result.touched)} date(s)",
        slots=result.slots,
        conflicts=[
            AppointmentConflict.model_validate(appointment_out(a, now).model_dump(exclude={"expires_at"}))
            for a in result.conflicts
        ],
    )


@app.get("/providers/{provider_id}/availability", response_model=AvailabilityOut)
def get_availability(provider_id: ProviderId, user: CurrentUser, schedule: ScheduleDep) -> AvailabilityOut:
    provider = schedule.require_owner_or_admin(user, provider_id)
    stored = schedule.load_availability(provider_id)
    return AvailabilityOut(
        provider_id=provider_id,
        timezone=provider.timezone,
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
            for period in stored.periods
        ],
        exceptions=[_stored_day(day, windows) for day, windows in sorted(stored.exceptions.items())],
        manual_appointment_slots=[_stored_day(day, windows) for day, windows in sorted(stored.manual.items())],
    )


def _stored_day(day: dt.date, windows: tuple) -> StoredDay:  # type: ignore[type-arg]
    return StoredDay(date=day, times=[{"start": format_time(w.start), "end": format_time(w.end)} for w in windows])


SLOT_LIST = TypeAdapter(list[SlotOut])


@app.get("/providers/{provider_id}/time-slots", response_model=list[SlotOut])
async def time_slots(
    provider_id: ProviderId,
    _: CurrentUser,
    schedule: ScheduleDep,
    start_date: StartDate = None,
    end_date: EndDate = None,
) -> Response:
    # The hot read path: serialise once with a prebuilt adapter and skip FastAPI's second
    # validation pass over every slot; async because, under Mangum, nothing else shares
    # this invocation's event loop (a sync endpoint would pay a thread hop).
    listing = schedule.free_slots(provider_id, start_date, end_date)
    if listing.days_from_store == listing.days_total:
        cache = "hit"
    else:
        cache = "miss" if listing.days_from_store == 0 else "partial"
    slots = [SlotOut(provider_id=provider_id, start_time=start, end_time=end) for start, end in listing.slots]
    return Response(SLOT_LIST.dump_json(slots), media_type="application/json", headers={"X-Cache": cache})


@app.get("/providers/{provider_id}/booked-appointments", response_model=list[BookedAppointmentOut])
def booked_appointments(
    provider_id: ProviderId,
    user: CurrentUser,
    schedule: ScheduleDep,
    now: NowDep,
    start_date: StartDate = None,
    end_date: EndDate = None,
) -> list[BookedAppointmentOut]:
    rows = schedule.booked_appointments(user, provider_id, start_date, end_date)
    return [BookedAppointmentOut(**appointment_out(a, now).model_dump(), patient_name=name) for a, name in rows]


handler = make_lambda_handler(app, function="providers")
