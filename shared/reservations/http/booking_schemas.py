"""Request and response models of the providers and appointments functions."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from reservations.adapters.db import Appointment
from reservations.domain.booking import appointment_view
from reservations.domain.errors import Unprocessable
from reservations.domain.scheduling import DatedHours, PostedAvailability, WeeklyHours, parse_posted_availability
from reservations.http.schemas import (
    JSON_NUMBER,
    STRIPPED_NAME_PATTERN,
    DisplayText,
    IsoDate,
    StartTime,
    TextBlock,
    TimeZoneName,
)

# Re-exported: the booking functions import them from here (they live in http.schemas so
# that functions which only bound ids, or export appointments, do not load these models).
from reservations.http.schemas import MAX_ID as MAX_ID  # noqa: PLC0414
from reservations.http.schemas import AppointmentOut as AppointmentOut  # noqa: PLC0414
from reservations.http.schemas import AppointmentStatus as AppointmentStatus  # noqa: PLC0414
from reservations.http.schemas import HistoryEntryOut as HistoryEntryOut  # noqa: PLC0414

ProviderName = Annotated[DisplayText, StringConstraints(min_length=1, max_length=200, pattern=STRIPPED_NAME_PATTERN)]
VisitTypeName = Annotated[DisplayText, StringConstraints(min_length=1, max_length=80, pattern=STRIPPED_NAME_PATTERN)]
# Shown to other people: up to 500 characters, no control characters.
Note = Annotated[DisplayText, Field(max_length=500)]
EntityId = Annotated[int, Field(ge=1, le=MAX_ID), JSON_NUMBER]
MAX_WINDOWS = 48
MAX_DATED_ENTRIES = 400


class TimeRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(max_length=16, examples=["8am"])
    end: str = Field(max_length=16, examples=["4pm"])


class WeeklyTimes(TimeRange):
    days: str = Field(max_length=64, examples=["M-F"])


class GeneralSchedule(BaseModel):
    start_date: IsoDate
    end_date: IsoDate
    times: list[WeeklyTimes] = Field(max_length=MAX_WINDOWS)


class DatedTimes(BaseModel):
    date: IsoDate
    times: list[TimeRange] = Field(max_length=MAX_WINDOWS)


class AvailabilityIn(BaseModel):
    """The original API's availability payload."""

    general_schedule: GeneralSchedule | None = None
    exceptions: list[DatedTimes] = Field(default_factory=list, max_length=MAX_DATED_ENTRIES)
    manual_appointment_slots: list[DatedTimes] = Field(default_factory=list, max_length=MAX_DATED_ENTRIES)
    timezone: TimeZoneName | None = None
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
    visit_type_id: int
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
    visit_type_id: int
    start_time: dt.datetime
    end_time: dt.datetime
    status: Literal["available"] = "available"


class BookedAppointmentOut(AppointmentOut):
    patient_name: str


class ReserveIn(BaseModel):
    provider_id: EntityId
    start_time: StartTime
    visit_type_id: EntityId | None = Field(default=None, description="default: the provider's default visit type")
    note: Note | None = Field(default=None, description="reason for the visit, shown to the patient and the provider")


class SlotRef(BaseModel):
    slot_id: EntityId


class CancelIn(SlotRef):
    reason: Note | None = None


class RescheduleIn(BaseModel):
    slot_id: EntityId
    start_time: StartTime
    visit_type_id: EntityId | None = Field(default=None, description="default: the appointment's visit type")


class AttendanceIn(BaseModel):
    status: Literal["completed", "no_show"]


def appointment_out(appointment: Appointment, now: dt.datetime) -> AppointmentOut:
    return AppointmentOut.model_validate(appointment_view(appointment, now))


# --- provider profiles, rules, visit types, directory, search -----------------------------


Minutes15 = Annotated[int, Field(ge=15, le=480, multiple_of=15), JSON_NUMBER]
BufferMinutes = Annotated[int, Field(ge=0, le=240, multiple_of=5), JSON_NUMBER]


class RulesIn(BaseModel):
    """A merge: fields named replace the stored ones, null restores the default (for the
    cap: no cap), fields left out stay."""

    model_config = ConfigDict(extra="forbid")

    min_notice_hours: Annotated[float, Field(ge=0, le=720), JSON_NUMBER] | None = None
    horizon_days: Annotated[int, Field(ge=1, le=730), JSON_NUMBER] | None = None
    cancellation_notice_hours: Annotated[float, Field(ge=0, le=720), JSON_NUMBER] | None = None
    max_appointments_per_day: Annotated[int, Field(ge=1, le=200), JSON_NUMBER] | None = None


class RulesOut(BaseModel):
    min_notice_hours: float
    horizon_days: int
    cancellation_notice_hours: float
    max_appointments_per_day: int | None


class ProviderPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Not nullable in the document: null is refused for these (absent leaves them as they are).
    name: (
        Annotated[DisplayText, StringConstraints(min_length=1, max_length=200, pattern=STRIPPED_NAME_PATTERN)]
        | SkipJsonSchema[None]
    ) = None
    timezone: TimeZoneName | SkipJsonSchema[None] = None
    specialty: DisplayText | None = Field(default=None, max_length=80)
    bio: TextBlock | None = Field(default=None, max_length=2000)
    rules: RulesIn | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _required_stay_set(self) -> ProviderPatch:
        for field in ("name", "timezone", "rules"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self

    def changes(self) -> dict[str, object]:
        return self.model_dump(exclude_unset=True)


class VisitTypeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DisplayText = Field(min_length=1, max_length=80, pattern=STRIPPED_NAME_PATTERN)
    duration_minutes: Minutes15
    buffer_before_minutes: BufferMinutes = 0
    buffer_after_minutes: BufferMinutes = 0
    description: TextBlock | None = Field(default=None, max_length=500)


class VisitTypePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: (
        Annotated[DisplayText, StringConstraints(min_length=1, max_length=80, pattern=STRIPPED_NAME_PATTERN)]
        | SkipJsonSchema[None]
    ) = None
    duration_minutes: Minutes15 | SkipJsonSchema[None] = None
    buffer_before_minutes: BufferMinutes | SkipJsonSchema[None] = None
    buffer_after_minutes: BufferMinutes | SkipJsonSchema[None] = None
    description: TextBlock | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _required_stay_set(self) -> VisitTypePatch:
        for field in ("name", "duration_minutes", "buffer_before_minutes", "buffer_after_minutes"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self

    def changes(self) -> dict[str, object]:
        return self.model_dump(exclude_unset=True)


class VisitTypeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    provider_id: int
    name: str
    duration_minutes: int
    buffer_before_minutes: int
    buffer_after_minutes: int
    description: str | None
    active: bool


class ProviderProfileOut(BaseModel):
    id: int
    name: str
    email: str | None = Field(default=None, description="only for the provider itself and admins")
    timezone: str
    specialty: str | None
    bio: str | None
    visit_types: list[VisitTypeOut]
    rules: RulesOut


class VisitTypeSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    duration_minutes: int


class DirectoryEntry(BaseModel):
    id: int
    name: str
    specialty: str | None
    timezone: str
    visit_types: list[VisitTypeSummary]


class DirectoryPageOut(BaseModel):
    items: list[DirectoryEntry]
    next_cursor: str | None


class OfferedSlotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    provider_id: int
    visit_type_id: int
    start_time: dt.datetime
    end_time: dt.datetime


class ProviderStatsOut(BaseModel):
    provider_id: int
    start_date: dt.date
    end_date: dt.date
    timezone: str
    counts: dict[AppointmentStatus, int] = Field(description="appointments starting in the range, by status")
    booked_minutes: float = Field(description="duration of confirmed, completed and no-show appointments")
    offered_minutes: int = Field(description="15 minutes per offered start of the provider's availability")
    utilisation: float | None = Field(description="booked / offered minutes; null when nothing was offered")
    no_show_rate: float | None = Field(description="no_show / (completed + no_show)")
    cancellation_rate: float | None = Field(description="cancelled / (cancelled + confirmed + completed + no_show)")
    median_lead_time_hours: float | None = Field(description="creation to start, median over booked appointments")
    by_weekday: dict[int, int] = Field(description="booked appointments by ISO weekday of the local start (1 = Monday)")
    by_hour: dict[int, int] = Field(description="booked appointments by hour of the local start (0-23)")
