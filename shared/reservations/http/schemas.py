"""Request and response models shared by the functions (the public API contract)."""

from __future__ import annotations

import datetime as dt
import enum
import re
import zoneinfo
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

from reservations.domain.accounts import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH

# The largest id a generator's float arithmetic cannot round past (2**63 - 1 is no double).
MAX_ID = 2**63 - 1024

# --- what the document promises, and the server holds to ---------------------------------
# Patterns are written for both engines that read them: ECMA-262 (JSON Schema validators,
# Swagger UI) and Python's `re` (generators such as Schemathesis); no `\s`, whose meaning
# differs between them.

CONTROL = r"\x00-\x1f\x7f"
# What pydantic's str_strip_whitespace strips (Rust's White_Space), less the control characters.
SPACE = r"\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NO_CONTROL_PATTERN = rf"^[^{CONTROL}]*$"
# Free text: line breaks and tabs allowed, other control characters not.
TEXT_BLOCK_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f]*$"
# A name that is stripped before it is stored: something must remain.
STRIPPED_NAME_PATTERN = rf"^[^{CONTROL}]*[^{CONTROL}{SPACE}][^{CONTROL}]*$"
YEAR = r"(19[7-9][0-9]|2[01][0-9][0-9])"  # 1970-2199, the calendar the API stores
# A start time: a real calendar day of 1970-2199, on the 15-minute grid, an offset (if
# any) on the quarter hour too, so the UTC start is on the grid as well. No `format:
# date-time` because a start without an offset is accepted (as UTC).
_LEAP_YEAR = r"(19(7[26]|8[048]|9[26])|20([02468][048]|[13579][26])|21(0[48]|[2468][048]|[13579][26]))"
_DAY = (
    rf"({YEAR}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    rf"|02-(0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"
)
# Only real calendar days (a generator drawing from the pattern needs no luck), 1970-2199.
DATE_PATTERN = rf"^{_DAY}$"
# A day, or a moment of one (RFC 3339; no offset means UTC), for range filters.
MOMENT_PATTERN = (
    rf"^{_DAY}(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{{1,6}})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)
_DATE_SYNTAX = re.compile(rf"{YEAR}-[0-9]{{2}}-[0-9]{{2}}")
START_TIME_PATTERN = (
    rf"^{_DAY}T([01][0-9]|2[0-3]):(00|15|30|45):00(\.0{{1,6}})?(Z|[+-](0[0-9]|1[0-3]):(00|15|30|45)|[+-]14:00)?$"
)
# What the server parses before the domain checks the grid (`422 off_grid`).
_START_TIME_SYNTAX = re.compile(
    rf"{YEAR}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}:[0-9]{{2}}(:[0-9]{{2}}(\.[0-9]{{1,6}})?)?(Z|[+-][0-9]{{2}}:[0-9]{{2}})?"
)
# email-validator refuses special-use domains (RFC 6761 and friends): the document says so.
_SPECIAL_USE = ("arpa", "invalid", "local", "localhost", "onion", "test")
EMAIL_PATTERN = (
    "^(?![\\s\\S]*[.@](" + "|".join("".join(f"[{c}{c.upper()}]" for c in name) for name in _SPECIAL_USE) + ")[.]?$)"
)


def _printable(value: Any) -> Any:
    # Before stripping, so a name cannot smuggle a tab in at its edges.
    if isinstance(value, str) and any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise ValueError("must not contain control characters")
    return value


# Names are shown to other users: no NUL (Postgres cannot store it) and no control characters.
# (Constraints before validators in these Annotated types, or pydantic drops them from the schema.)
DisplayText = Annotated[str, StringConstraints(pattern=NO_CONTROL_PATTERN), BeforeValidator(_printable)]
TextBlock = Annotated[str, StringConstraints(pattern=TEXT_BLOCK_PATTERN)]


def _json_number(value: Any) -> Any:
    # A JSON number, not a string or a boolean that happens to convert (`"5"`, `false`);
    # an integral float (`79.0`) is an integer to JSON Schema, and so here.
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be a JSON number")
    return value


# Put after a type's constraints: `Annotated[int, Field(ge=1), JSON_NUMBER]`.
JSON_NUMBER = BeforeValidator(_json_number)


def _iso_date(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _DATE_SYNTAX.fullmatch(value):
        raise ValueError("must be a date YYYY-MM-DD between 1970-01-01 and 2199-12-31")
    return value


# Dates in queries and bodies: ISO `YYYY-MM-DD` only (no timestamps, no other spellings).
IsoDate = Annotated[
    dt.date,
    BeforeValidator(_iso_date),
    WithJsonSchema({"type": "string", "format": "date", "pattern": DATE_PATTERN}),
]


def _start_time(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not _START_TIME_SYNTAX.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time between 1970 and 2199")
    return value


StartTime = Annotated[
    dt.datetime,
    BeforeValidator(_start_time),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": START_TIME_PATTERN,
            "description": "RFC 3339 date-time on the 15-minute grid; without an offset it is UTC",
            "examples": ["2027-01-06T09:00:00Z"],
        }
    ),
]


def _zone_names() -> list[str]:
    """The IANA zones of the pinned tzdata package (the same list on every machine and on
    Lambda); the system's own zoneinfo only where tzdata is not installed."""
    try:
        names = (resources.files("tzdata") / "zones").read_text(encoding="utf-8").split()
    except (ModuleNotFoundError, FileNotFoundError):
        names = list(zoneinfo.available_timezones())
    return sorted(set(names) | {"UTC"})


TimeZone = enum.Enum("TimeZone", [(name, name) for name in _zone_names()], type=str)  # type: ignore[misc]
TimeZone.__doc__ = "An IANA time zone name."
if TYPE_CHECKING:  # what code receives
    TimeZoneName = str
else:
    # Documented as one shared enum (components/schemas/TimeZone); handed on as a plain str.
    TimeZoneName = Annotated[
        TimeZone,
        AfterValidator(lambda zone: zone.value),
        PlainSerializer(str, return_type=str),
    ]


class ErrorBody(BaseModel):
    detail: str
    code: str


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class UnprocessableBody(BaseModel):
    """FastAPI's schema-error list, or our `{detail, code}` for rules beyond the schema."""

    detail: list[ValidationIssue] | str
    code: str | None = None


class RegisterRequest(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    name: Annotated[
        str, StringConstraints(min_length=1, max_length=200, pattern=STRIPPED_NAME_PATTERN), BeforeValidator(_printable)
    ]
    email: EmailStr = Field(max_length=320, json_schema_extra={"pattern": EMAIL_PATTERN})
    # Never stripped: what is registered is exactly what signs in (login does not strip).
    password: Annotated[
        str,
        StringConstraints(strip_whitespace=False, min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH),
    ]
    role: Literal["patient", "provider", "admin"]
    timezone: TimeZoneName = "UTC"


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str
    role: str
    timezone: str
    notify_email: bool = True
    email_verified: bool = False


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int
    refresh_token: str


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class ResetPasswordRequest(BaseModel):
    """Either the caller's own change (`current_password`) or an admin's (`email`)."""

    new_password: str = Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)
    current_password: str | None = Field(default=None, max_length=PASSWORD_MAX_LENGTH)
    email: EmailStr | None = Field(default=None, max_length=320, json_schema_extra={"pattern": EMAIL_PATTERN})


class PasswordResetRequest(BaseModel):
    email: EmailStr = Field(max_length=320, json_schema_extra={"pattern": EMAIL_PATTERN})


class PasswordResetConfirm(BaseModel):
    token: str = Field(min_length=1, max_length=512)
    new_password: str = Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)


class LogoutRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class VerificationConfirm(BaseModel):
    token: str = Field(min_length=1, max_length=512)


class MessageOut(BaseModel):
    message: str


class AuditEntryOut(BaseModel):
    id: int
    at: dt.datetime
    actor_id: int | None
    actor_role: str
    action: str
    target_type: Literal["user", "provider", "appointment", "visit_type", "availability", "webhook"]
    target_id: int | None
    request_id: str | None
    source_ip: str | None
    details: dict[str, Any]


class AuditPageOut(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


# --- appointments (shown by the booking functions and in the data export) -----------------

AppointmentStatus = Literal["reserved", "confirmed", "cancelled", "expired", "rescheduled", "completed", "no_show"]


class AppointmentOut(BaseModel):
    id: int
    slot_id: int
    provider_id: int
    patient_id: int
    visit_type_id: int
    start_time: dt.datetime
    end_time: dt.datetime
    status: AppointmentStatus
    expires_at: dt.datetime | None
    cancellation_reason: str | None = None
    cancelled_by: Literal["patient", "provider", "admin", "system"] | None = None
    rescheduled_from: int | None = None
    rescheduled_to: int | None = None
    note: str | None = None


class HistoryEntryOut(BaseModel):
    at: dt.datetime
    from_status: AppointmentStatus | None
    to_status: AppointmentStatus
    actor_id: int | None
    actor_role: Literal["patient", "provider", "admin", "system"]
    request_id: str | None
