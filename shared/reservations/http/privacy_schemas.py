"""Request and response bodies of the privacy operations: data export and account erasure."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reservations.http.schemas import AppointmentOut, AuditEntryOut, HistoryEntryOut


class EraseRequest(BaseModel):
    """Deleting one's own account: the current password again."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024, description="the current password (re-authentication)")


class _Exported(BaseModel):
    # Every field the export holds is declared: one the model did not know would be refused
    # (a 500 the tests see), never silently left out of someone's copy of their data.
    model_config = ConfigDict(extra="forbid")


class ExportProfile(_Exported):
    """The account and, for providers, the profile and booking rules (null: the default)."""

    id: int
    name: str
    email: str
    email_verified: bool
    role: Literal["patient", "provider", "admin"]
    timezone: str
    created_at: dt.datetime
    specialty: str | None
    bio: str | None
    min_notice_hours: float | None
    horizon_days: int | None
    cancellation_notice_hours: float | None
    max_appointments_per_day: int | None


class ExportNotificationSettings(_Exported):
    notify_email: bool
    calendar_feed_enabled: bool


class ExportAppointment(AppointmentOut):
    model_config = ConfigDict(extra="forbid")

    role: Literal["patient", "provider"] = Field(description="the user's side of the appointment")
    history: list[HistoryEntryOut]


class ExportWindow(_Exported):
    start: str = Field(description="HH:MM, provider-local")
    end: str = Field(description="HH:MM, provider-local")


class ExportWeeklyWindow(ExportWindow):
    days: list[int] = Field(description="weekdays, 0 = Monday to 6 = Sunday")


class ExportPeriod(_Exported):
    id: int
    start_date: dt.date
    end_date: dt.date
    windows: list[ExportWeeklyWindow]


class ExportDay(_Exported):
    day: dt.date
    kind: Literal["exception", "manual"]
    windows: list[ExportWindow] = Field(description="empty for a day off")


class ExportAvailability(_Exported):
    periods: list[ExportPeriod]
    days: list[ExportDay]


class ExportVisitType(_Exported):
    id: int
    name: str
    duration_minutes: int
    buffer_before_minutes: int
    buffer_after_minutes: int
    description: str | None
    active: bool
    is_default: bool
    created_at: dt.datetime


class ExportWebhook(_Exported):
    """An endpoint, without its signing secret."""

    id: int
    url: str
    events: list[str]
    description: str | None
    active: bool
    failing_since: dt.datetime | None
    disabled_at: dt.datetime | None
    created_at: dt.datetime


class ExportAuditEntry(AuditEntryOut):
    model_config = ConfigDict(extra="forbid")

    subject_id: int | None = Field(description="the other party the entry is about, if any")


class ExportOut(_Exported):
    """Everything held about one user; of other people only their ids."""

    generated_at: dt.datetime
    profile: ExportProfile
    notification_settings: ExportNotificationSettings
    appointments: list[ExportAppointment] = Field(description="as patient or provider, each with its transitions")
    availability: ExportAvailability = Field(description="weekly periods and dated days (providers)")
    visit_types: list[ExportVisitType]
    webhooks: list[ExportWebhook]
    audit_entries: list[ExportAuditEntry] = Field(
        description="audit entries by or about the user; another actor's address is left out"
    )
