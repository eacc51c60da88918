"""Request and response models of the providers and appointments functions."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from ..availability import (
    MAX_RANGE_DAYS,
    Availability,
    AvailabilityError,
    WeeklyPeriod,
    WeeklyWindow,
    Window,
    parse_days,
    parse_window,
)
from ..scheduling import EARLIEST_DATE, LATEST_DATE, PostedAvailability

MAX_ID = 2**63 - 1
EntityId = Annotated[int, Field(ge=1, le=MAX_ID)]
MAX_WINDOWS = 48
MAX_DATED_ENTRIES = 400


class TimeRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(max_length=16, examples=["8am"])
    end: str = Field(max_length=16, examples=["4pm"])


class WeeklyTimes(TimeRange):
    days: str = Field(max_length=64, examples=["M-F"])


class GeneralSchedule(BaseModel):
    start_date: dt.date
    end_date: dt.date
    times: list[WeeklyTimes] = Field(max_length=MAX_WINDOWS)


class DatedTimes(BaseModel):
    date: dt.date
    times: list[TimeRange] = Field(max_length=MAX_WINDOWS)


class AvailabilityIn(BaseModel):
    """The original API's availability payload."""

    general_schedule: GeneralSchedule | None = None
    exceptions: list[DatedTimes] = Field(default_factory=list, max_length=MAX_DATED_ENTRIES)
    manual_appointment_slots: list[DatedTimes] = Field(default_factory=list, max_length=MAX_DATED_ENTRIES)
    timezone: str | None = Field(default=None, max_length=64)
    _domain: PostedAvailability = PrivateAttr()

    @model_validator(mode="after")
    def _check(self) -> AvailabilityIn:
        self._domain = self._parse()  # raises ValueError -> 422 with the message
        return self

    def to_domain(self) -> PostedAvailability:
        return self._domain

    def _parse(self) -> PostedAvailability:
        if self.timezone is not None:
            from ..accounts import validate_timezone
            from ..errors import Unprocessable

            try:
                validate_timezone(self.timezone)
            except Unprocessable as error:
                raise ValueError(error.message) from None
        if self.general_schedule is None and not self.exceptions and not self.manual_appointment_slots:
            raise ValueError("give general_schedule, exceptions or manual_appointment_slots")
        touched: set[dt.date] = set()
        periods: tuple[WeeklyPeriod, ...] = ()
        try:
            if self.general_schedule is not None:
                schedule = self.general_schedule
                if schedule.end_date < schedule.start_date:
                    raise ValueError("general_schedule.end_date is before start_date")
                span = (schedule.end_date - schedule.start_date).days + 1
                if span > MAX_RANGE_DAYS:
                    raise ValueError(f"general_schedule spans {span} days; at most {MAX_RANGE_DAYS} are allowed")
                weekly = tuple(
                    WeeklyWindow(parse_days(item.days), parse_window(item.start, item.end)) for item in schedule.times
                )
                periods = (WeeklyPeriod(schedule.start_date, schedule.end_date, weekly),)
                touched.update(schedule.start_date + dt.timedelta(days=offset) for offset in range(span))
            exceptions = _dated(self.exceptions)
            manual = _dated(self.manual_appointment_slots)
        except AvailabilityError as error:
            raise ValueError(str(error)) from None
        touched.update(exceptions)
        touched.update(manual)
        if touched and not (min(touched) >= EARLIEST_DATE and max(touched) <= LATEST_DATE):
            raise ValueError(f"dates must be between {EARLIEST_DATE} and {LATEST_DATE}")
        return PostedAvailability(Availability(periods, exceptions, manual), frozenset(touched), self.timezone)


def _dated(entries: list[DatedTimes]) -> dict[dt.date, tuple[Window, ...]]:
    result: dict[dt.date, tuple[Window, ...]] = {}
    for entry in entries:
        windows = tuple(parse_window(item.start, item.end) for item in entry.times)
        result[entry.date] = result.get(entry.date, ()) + windows
    return result


class AppointmentRef(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    provider_id: int
    start_time: dt.datetime
    end_time: dt.datetime


class AppointmentConflict(AppointmentRef):
    id: int
    slot_id: int
    patient_id: int
    status: str


class AvailabilityPosted(BaseModel):
    message: str
    slots: int
    conflicts: list[AppointmentConflict]


class StoredWeekly(BaseModel):
    start_date: dt.date
    end_date: dt.date
    times: list[dict[str, str]]


class StoredDay(BaseModel):
    date: dt.date
    times: list[dict[str, str]]


class AvailabilityOut(BaseModel):
    provider_id: int
    timezone: str
    general_schedules: list[StoredWeekly]
    exceptions: list[StoredDay]
    manual_appointment_slots: list[StoredDay]


class ProviderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str
    timezone: str


class SlotOut(BaseModel):
    provider_id: int
    start_time: dt.datetime
    end_time: dt.datetime
    status: Literal["available"] = "available"


class AppointmentOut(BaseModel):
    id: int
    slot_id: int
    provider_id: int
    patient_id: int
    start_time: dt.datetime
    end_time: dt.datetime
    status: Literal["reserved", "confirmed", "cancelled", "expired"]
    expires_at: dt.datetime | None


class BookedAppointmentOut(AppointmentOut):
    patient_name: str


class ReserveIn(BaseModel):
    provider_id: EntityId
    start_time: dt.datetime


class SlotRef(BaseModel):
    slot_id: EntityId


def appointment_out(appointment: Any, now: dt.datetime) -> AppointmentOut:
    from ..booking import effective_status

    return AppointmentOut(
        id=appointment.id,
        slot_id=appointment.id,
        provider_id=appointment.provider_id,
        patient_id=appointment.patient_id,
        start_time=appointment.start_time,
        end_time=appointment.end_time,
        status=effective_status(appointment, now),
        expires_at=appointment.expires_at,
    )
