"""providers function: provider directory, availability, free slots, booked appointments."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from fastapi import Depends, Path, Query, Response, status

from reservations.adapters.security import AccessClaims
from reservations.composition import Container
from reservations.domain.availability import Window
from reservations.domain.errors import Unprocessable
from reservations.domain.scheduling import format_days, format_time
from reservations.http.app import create_app
from reservations.http.booking_schemas import (
    MAX_ID,
    AppointmentConflict,
    AvailabilityIn,
    AvailabilityOut,
    AvailabilityPosted,
    BookedAppointmentOut,
    DirectoryEntry,
    DirectoryPageOut,
    OfferedSlotOut,
    ProviderOut,
    ProviderPatch,
    ProviderProfileOut,
    ProviderStatsOut,
    RulesOut,
    SlotOut,
    StoredDay,
    StoredWeekly,
    VisitTypeIn,
    VisitTypeOut,
    VisitTypePatch,
    VisitTypeSummary,
)
from reservations.http.deps import Caller, require_role
from reservations.http.lambda_entry import make_lambda_handler
from reservations.http.schemas import IsoDate
from reservations.http.slot_json import slots_json
from reservations.usecases.schedule import ProviderProfile

# Settings are validated here, at import of the handler, so a bad variable fails the cold start.
container = Container()
app = create_app("Reservations providers", container)
schedule = container.schedule

ProviderId = Annotated[int, Path(ge=1, le=MAX_ID)]
VisitTypeId = Annotated[int, Path(ge=1, le=MAX_ID)]
VisitTypeQuery = Annotated[int | None, Query(ge=1, le=MAX_ID, description="default: the provider's default type")]
StartDate = Annotated[IsoDate | None, Query(description="provider-local date, inclusive; default today")]
EndDate = Annotated[IsoDate | None, Query(description="provider-local date, inclusive; default start + 6 days")]
Admin = Annotated[AccessClaims, Depends(require_role("admin"))]
CURSOR_PATTERN = r"^[0-9]{1,18}$"  # the ids this API hands out as cursors


@app.get("/providers", response_model=list[ProviderOut])
async def list_providers(
    admin: Admin,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[ProviderOut]:
    return [ProviderOut.model_validate(p) for p in schedule.list_providers(admin, limit=limit, offset=offset)]


@app.post("/providers/{provider_id}/availability", response_model=AvailabilityPosted)
async def post_availability(provider_id: ProviderId, body: AvailabilityIn, caller: Caller) -> AvailabilityPosted:
    update = schedule.post_availability(caller, provider_id, body.to_domain())
    return AvailabilityPosted(
        message=f"availability updated for {update.touched_days} date(s)",
        slots=update.slots,
        conflicts=[AppointmentConflict.model_validate(view) for view in update.conflicts],
    )


@app.get("/providers/{provider_id}/availability", response_model=AvailabilityOut)
async def get_availability(provider_id: ProviderId, caller: Caller) -> AvailabilityOut:
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


@app.get("/providers/{provider_id}/time-slots", response_model=list[SlotOut])
async def time_slots(
    provider_id: ProviderId,
    caller: Caller,
    start_date: StartDate = None,
    end_date: EndDate = None,
    visit_type_id: VisitTypeQuery = None,
) -> Response:
    # The hot read path: JSON written directly (slot_json.py) and no second validation pass
    # by FastAPI; async because, under Mangum, nothing else shares this invocation's event
    # loop (a sync endpoint would pay a thread hop).
    listing = schedule.free_slots(caller, provider_id, start_date, end_date, visit_type_id)
    body = slots_json(provider_id, listing.visit_type_id, listing.slots)
    return Response(body, media_type="application/json", headers={"X-Cache": listing.cache_outcome})


@app.get("/providers/{provider_id}/next-available", response_model=OfferedSlotOut)
async def next_available(
    provider_id: ProviderId, caller: Caller, visit_type_id: VisitTypeQuery = None
) -> OfferedSlotOut:
    return OfferedSlotOut.model_validate(schedule.next_available(caller, provider_id, visit_type_id))


@app.get("/availability", response_model=list[OfferedSlotOut])
async def search_availability(
    caller: Caller,
    start_date: Annotated[IsoDate, Query(description="provider-local date, inclusive")],
    end_date: Annotated[IsoDate, Query(description="provider-local date, inclusive; at most 14 days")],
    provider_ids: Annotated[
        str | None, Query(max_length=1100, pattern=r"^[0-9]{1,19}(,[0-9]{1,19}){0,49}$", description="up to 50 ids")
    ] = None,
    specialty: Annotated[str | None, Query(min_length=1, max_length=80)] = None,
    duration_minutes: Annotated[int | None, Query(ge=15, le=480, multiple_of=15)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[OfferedSlotOut]:
    if (provider_ids is None) == (specialty is None):
        raise Unprocessable("give either provider_ids or specialty", code="invalid_search")
    ids = [int(part) for part in provider_ids.split(",")] if provider_ids is not None else None
    if ids is not None and any(not 1 <= provider_id <= MAX_ID for provider_id in ids):
        raise Unprocessable(f"provider ids lie between 1 and {MAX_ID}", code="invalid_search")
    found = schedule.search_availability(
        caller,
        provider_ids=ids,
        specialty=specialty,
        first=start_date,
        last=end_date,
        duration_minutes=duration_minutes,
        limit=limit,
    )
    return [OfferedSlotOut.model_validate(slot) for slot in found]


@app.get("/providers/{provider_id}", response_model=ProviderProfileOut, response_model_exclude_unset=True)
async def get_provider(provider_id: ProviderId, caller: Caller) -> ProviderProfileOut:
    return _profile_out(schedule.profile(caller, provider_id))


@app.patch("/providers/{provider_id}", response_model=ProviderProfileOut, response_model_exclude_unset=True)
async def patch_provider(provider_id: ProviderId, body: ProviderPatch, caller: Caller) -> ProviderProfileOut:
    return _profile_out(schedule.update_profile(caller, provider_id, body.changes()))


def _profile_out(profile: ProviderProfile) -> ProviderProfileOut:
    provider, rules = profile.provider, profile.rules
    shown = ProviderProfileOut(
        id=provider.id,
        name=provider.name,
        timezone=provider.timezone,
        specialty=provider.specialty,
        bio=provider.bio,
        visit_types=[VisitTypeOut.model_validate(v) for v in profile.visit_types],
        rules=RulesOut(
            min_notice_hours=rules.min_notice.total_seconds() / 3600,
            horizon_days=rules.horizon.days,
            cancellation_notice_hours=rules.cancellation_notice.total_seconds() / 3600,
            max_appointments_per_day=rules.daily_cap,
        ),
    )
    if profile.shows_email:  # left out, not null, for everyone else
        shown.email = provider.email
    return shown


@app.post("/providers/{provider_id}/visit-types", status_code=status.HTTP_201_CREATED, response_model=VisitTypeOut)
async def post_visit_type(provider_id: ProviderId, body: VisitTypeIn, caller: Caller) -> VisitTypeOut:
    return VisitTypeOut.model_validate(schedule.add_visit_type(caller, provider_id, body.model_dump()))


@app.get("/providers/{provider_id}/visit-types", response_model=list[VisitTypeOut])
async def list_visit_types(provider_id: ProviderId, caller: Caller) -> list[VisitTypeOut]:
    return [VisitTypeOut.model_validate(v) for v in schedule.visit_types(caller, provider_id)]


@app.patch("/visit-types/{visit_type_id}", response_model=VisitTypeOut)
async def patch_visit_type(visit_type_id: VisitTypeId, body: VisitTypePatch, caller: Caller) -> VisitTypeOut:
    return VisitTypeOut.model_validate(schedule.update_visit_type(caller, visit_type_id, body.changes()))


@app.delete("/visit-types/{visit_type_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_visit_type(visit_type_id: VisitTypeId, caller: Caller) -> Response:
    schedule.remove_visit_type(caller, visit_type_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@app.get("/directory/providers", response_model=DirectoryPageOut)
async def directory(
    caller: Caller,
    q: Annotated[str | None, Query(min_length=1, max_length=80)] = None,
    specialty: Annotated[str | None, Query(min_length=1, max_length=80)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(json_schema_extra={"pattern": CURSOR_PATTERN}, description="next_cursor of the previous page")
    ] = None,
) -> DirectoryPageOut:
    if cursor is not None and not re.fullmatch(CURSOR_PATTERN[1:-1], cursor):  # ASCII digits only
        raise Unprocessable("cursor is not one this API returned", code="invalid_cursor")
    page = schedule.directory(caller, q=q, specialty=specialty, limit=limit, cursor=cursor)
    return DirectoryPageOut(
        items=[
            DirectoryEntry(
                id=provider.id,
                name=provider.name,
                specialty=provider.specialty,
                timezone=provider.timezone,
                visit_types=[VisitTypeSummary.model_validate(v) for v in types],
            )
            for provider, types in page.providers
        ],
        next_cursor=page.next_cursor,
    )


@app.get("/providers/{provider_id}/booked-appointments", response_model=list[BookedAppointmentOut])
async def booked_appointments(
    provider_id: ProviderId, caller: Caller, start_date: StartDate = None, end_date: EndDate = None
) -> list[BookedAppointmentOut]:
    rows = schedule.booked_appointments(caller, provider_id, start_date, end_date)
    return [BookedAppointmentOut.model_validate({**view, "patient_name": name}) for view, name in rows]


@app.get("/providers/{provider_id}/stats", response_model=ProviderStatsOut)
async def provider_stats(
    provider_id: ProviderId,
    caller: Caller,
    start_date: Annotated[IsoDate, Query(description="provider-local date, inclusive")],
    end_date: Annotated[IsoDate, Query(description="provider-local date, inclusive; at most 366 days")],
) -> ProviderStatsOut:
    stats = schedule.provider_stats(caller, provider_id, start_date, end_date)
    return ProviderStatsOut.model_validate(stats, from_attributes=True)


handler = make_lambda_handler(app, container.settings)
