"""Request and response models of the providers and appointments functions."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from reservations.adapters.db import Appointment
from reservations.domain.booking import appointment_view
from reservations.domain.errors import Unprocessable
from reservations.domain.scheduling import DatedHours, PostedAvailability, WeeklyHours, parse_posted_availability

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
        weekly = None
        if self.general_schedule is not None:
            schedule = self.general_schedule
            times = [(item.days, item.start, item.end) for item in schedule.times]
            weekly = WeeklyHours(schedule.start_date, schedule.end_date, times)
        try:
            return parse_posted_availability(
                weekly, _dated(self.exceptions), _dated(self.manual_appointment_slots), self.timezone
            )
        except Unprocessable as error:
            raise ValueError(error.message) from None


def _dated(entries: list[DatedTimes]) -> DatedHours:
    return [(entry.date, [(item.start, item.end) for item in entry.times]) for entry in entries]


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


def appointment_out(appointment: Appointment, now: dt.datetime) -> AppointmentOut:
    return AppointmentOut.model_validate(appointment_view(appointment, now))
